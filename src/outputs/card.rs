//! What every chat-style output shows of an alert: a title, a short line, and labelled facts
//! (memo, token, flock, time, source, User-Agent, the kind's data), taken from the alert
//! payload once so each format only lays them out.
//!
//! Everything in a card is plain text, and much of it is chosen by whoever fires the token
//! (User-Agent, path, query, DNS names). Each value is cut to [`MAX_FACT`] characters here;
//! each output then writes it through [`inert`] with its own escaping, so no mention, link or
//! formatting of the attacker's renders (audit F1), and within its service's size limits. Only
//! Trapline's own link to the token stays a link. The escaping is written by hand: each chat
//! service has its own small markup (Slack mrkdwn, Discord's and Teams' Markdown dialects,
//! Google Chat's HTML subset) and no crate covers them, nor the size limits.

use serde_json::Value;

pub struct Card {
    pub title: String,
    /// One line for notifications and plain-text fallbacks.
    pub text: String,
    pub facts: Vec<(&'static str, String)>,
    /// Where to look the token up in Trapline (absent for test alerts).
    pub link: Option<String>,
    pub test: bool,
}

fn s<'a>(p: &'a Value, k: &str) -> &'a str {
    p.get(k).and_then(Value::as_str).unwrap_or("")
}

/// Longest value a fact shows, in characters, before escaping ("…" marks a cut).
pub const MAX_FACT: usize = 512;
/// What ends a value that was cut.
pub const CUT: &str = "…";
/// Zero-width space: breaks a link or a mention without changing what one reads.
const ZWSP: char = '\u{200B}';

fn short(text: &str) -> String {
    if text.chars().count() <= MAX_FACT {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX_FACT).collect();
    format!("{cut}{CUT}")
}

/// Where a character stands, for escapes that depend on it.
#[derive(Clone, Copy)]
pub struct At {
    pub prev: Option<char>,
    pub next: Option<char>,
}

impl At {
    /// First character of a line (where Markdown starts headings, lists and quotes).
    pub fn line_start(self) -> bool {
        self.prev.is_none_or(|p| p == '\n')
    }
    /// Between two letters or digits (where `_` emphasises nothing).
    pub fn in_word(self) -> bool {
        self.prev.is_some_and(char::is_alphanumeric) && self.next.is_some_and(char::is_alphanumeric)
    }
}

/// Markdown escaping (Discord, Teams): a backslash before each of `specials`, before `_`
/// unless inside a word, and before `#`, `-` and `+` where a line starts.
pub fn escape_markdown(c: char, at: At, out: &mut String, specials: &[char]) {
    let special = match c {
        '_' => !at.in_word(),
        '#' | '-' | '+' => at.line_start(),
        c => specials.contains(&c),
    };
    if special {
        out.push('\\');
    }
    out.push(c);
}

/// Breaks the plain-text forms chat services turn into links or mentions, by a zero-width
/// space in each: `://` (raw links), `](` (Markdown links), `@` (`@everyone`, `@here`,
/// `@channel`, user names). Control characters and bidirectional overrides (which can make
/// text read backwards) become spaces; line breaks and tabs stay.
fn defang(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') => out.push(' '),
            ':' if text_ahead(&chars, "//") => {
                out.push(':');
                out.push(ZWSP);
            }
            ']' if chars.peek() == Some(&'(') => {
                out.push(']');
                out.push(ZWSP);
            }
            '@' => {
                out.push('@');
                out.push(ZWSP);
            }
            c => out.push(c),
        }
    }
    out
}

fn text_ahead(chars: &std::iter::Peekable<std::str::Chars>, want: &str) -> bool {
    chars.clone().take(want.len()).eq(want.chars())
}

/// `text` made inert for one markup and cut to at most `max` bytes, [`CUT`] included (bytes
/// bound characters and UTF-16 units too, whichever a service counts). `escape` writes one
/// character in the markup's escaped form.
pub fn inert(text: &str, max: usize, escape: impl Fn(char, At, &mut String)) -> String {
    let text = defang(text);
    let chars: Vec<char> = text.chars().collect();
    let limit = max.saturating_sub(CUT.len());
    let mut out = String::with_capacity(text.len().min(max));
    let mut fits = 0; // length of `out` at the last character boundary within `limit`
    for (i, &c) in chars.iter().enumerate() {
        let at = At { prev: i.checked_sub(1).map(|p| chars[p]), next: chars.get(i + 1).copied() };
        escape(c, at, &mut out);
        if out.len() <= limit {
            fits = out.len();
        }
        if out.len() > max {
            out.truncate(fits);
            out.push_str(CUT);
            return out;
        }
    }
    out
}

/// For outputs whose field is not markup at all: only defanged and cut.
pub fn plain(c: char, _: At, out: &mut String) {
    out.push(c);
}

pub fn from_payload(p: &Value) -> Card {
    let test = p.get("test").and_then(Value::as_bool).unwrap_or(false);
    if test {
        return Card {
            title: "Trapline test alert".into(),
            text: short(s(p, "summary")),
            facts: [("Description", short(s(p, "description")))]
                .into_iter()
                .filter(|(_, d)| !d.is_empty())
                .chain([("Requested by", short(s(p, "requested_by"))), ("Time", short(s(p, "time")))])
                .collect(),
            link: None,
            test,
        };
    }
    let kind = if s(p, "kind_name").is_empty() { s(p, "kind") } else { s(p, "kind_name") };
    let source = match p.get("src_port").and_then(Value::as_u64) {
        Some(port) if port > 0 => format!("{}:{port}", s(p, "src_ip")),
        _ => s(p, "src_ip").to_string(),
    };
    let memo = short(s(p, "memo"));
    let mut facts = vec![
        ("Memo", memo.clone()),
        ("Token", short(&format!("{} ({})", s(p, "token_id"), s(p, "kind")))),
        ("Flock", short(s(p, "flock_id"))),
        ("Time", short(s(p, "time"))),
        ("Source", short(&format!("{source} via {}", s(p, "channel")))),
    ];
    if !s(p, "useragent").is_empty() {
        facts.push(("User-Agent", short(s(p, "useragent"))));
    }
    let mut details = p.get("data").cloned().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut details {
        m.remove("headers"); // long and mostly noise in a chat message; the webhook output has them
        m.remove("useragent"); // a fact of its own
    }
    if details.as_object().is_some_and(|m| !m.is_empty()) {
        facts.push(("Details", short(&details.to_string())));
    }
    Card {
        title: short(&format!("Canarytoken triggered: {kind}")),
        text: format!("{kind} token \"{memo}\" was triggered from {source}"),
        facts,
        link: Some(s(p, "token_url").to_string()).filter(|l| !l.is_empty()),
        test,
    }
}
