//! What every chat-style output shows of an alert: a title, a short line, and labelled facts
//! (memo, token, flock, time, source, User-Agent, the kind's data), taken from the alert
//! payload once so each format only lays them out.

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

/// Longest value a fact shows, in characters.
const MAX_FACT: usize = 900;

fn short(text: String) -> String {
    if text.chars().count() <= MAX_FACT {
        return text;
    }
    let cut: String = text.chars().take(MAX_FACT).collect();
    format!("{cut}…")
}

pub fn from_payload(p: &Value) -> Card {
    let test = p.get("test").and_then(Value::as_bool).unwrap_or(false);
    if test {
        return Card {
            title: "Trapline test alert".into(),
            text: s(p, "summary").to_string(),
            facts: [("Description", short(s(p, "description").to_string()))]
                .into_iter()
                .filter(|(_, d)| !d.is_empty())
                .chain([("Requested by", s(p, "requested_by").to_string()), ("Time", s(p, "time").to_string())])
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
    let mut facts = vec![
        ("Memo", s(p, "memo").to_string()),
        ("Token", format!("{} ({})", s(p, "token_id"), s(p, "kind"))),
        ("Flock", s(p, "flock_id").to_string()),
        ("Time", s(p, "time").to_string()),
        ("Source", format!("{source} via {}", s(p, "channel"))),
    ];
    if !s(p, "useragent").is_empty() {
        facts.push(("User-Agent", short(s(p, "useragent").to_string())));
    }
    let data = p.get("data").cloned().unwrap_or(Value::Null);
    let mut details = data.clone();
    if let Value::Object(m) = &mut details {
        m.remove("headers"); // long and mostly noise in a chat message; the webhook output has them
    }
    if details.as_object().is_some_and(|m| !m.is_empty()) {
        facts.push(("Details", short(details.to_string())));
    }
    Card {
        title: format!("Canarytoken triggered: {kind}"),
        text: format!("{kind} token \"{}\" was triggered from {source}", s(p, "memo")),
        facts,
        link: Some(s(p, "token_url").to_string()).filter(|l| !l.is_empty()),
        test,
    }
}
