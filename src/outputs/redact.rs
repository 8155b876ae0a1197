//! Redaction of alert targets, for the log and for callers who may not manage outputs.
//!
//! The path of a Slack, Discord, Teams or Google Chat webhook URL is its bearer secret, and
//! per-token webhooks often carry one in their query or userinfo; a PagerDuty routing key is
//! one too. So every error text of a delivery (what the outbox keeps as `last_error` and what
//! the log shows) has its URLs cut to scheme, host and port by [`redact`], and the outbox shows
//! outputs through [`output`] to anyone without the "manage alert outputs" permission. The
//! host stays, so an operator can still tell which output fails.
//!
//! Written by hand: the URLs sit inside free text (reqwest and hyper errors, our own
//! messages), where a URL parser alone does not find them, and the rule is a few lines.

use serde_json::{json, Map, Value};

/// What stands for whatever was cut.
pub const CUT: &str = "…";

/// `text` with every URL in it (`scheme://…`) reduced to `scheme://host[:port]`, followed by
/// `/…` when it had a path, query, fragment or userinfo. Text that is not a URL is kept.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` before `://`, starting with a letter.
        let before = &rest[..at];
        let mut start = before.len() - before.bytes().rev().take_while(|b| is_scheme_byte(*b)).count();
        while start < at && !rest.as_bytes()[start].is_ascii_alphabetic() {
            start += 1;
        }
        if start == at {
            out.push_str(&rest[..at + 3]);
            rest = &rest[at + 3..];
            continue;
        }
        // The URL runs to the first space or quote; trailing punctuation is the sentence's.
        let end =
            rest[at + 3..].find(|c: char| c.is_whitespace() || "\"'<>`".contains(c)).map_or(rest.len(), |e| at + 3 + e);
        let url = rest[start..end].trim_end_matches(|c| ")]},.;:!?".contains(c));
        out.push_str(&rest[..start]);
        out.push_str(&redact_one(&url[..at - start + 3], &url[at - start + 3..]));
        out.push_str(&rest[start + url.len()..end]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// `scheme://` and what follows it, reduced to the host and port.
fn redact_one(scheme: &str, after: &str) -> String {
    let authority_end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(authority_end);
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (true, &authority[i + 1..]),
        None => (false, authority),
    };
    let cut = userinfo || !(tail.is_empty() || tail == "/");
    format!("{scheme}{host}{}", if cut { format!("/{CUT}") } else { tail.to_string() })
}

/// An output description as shown to a caller who may not manage outputs: its type, URLs
/// redacted, a routing key replaced by [`CUT`], e-mail recipients by their domains. Fields
/// not listed here are left out, so a new secret field stays hidden by default.
pub fn output(o: &Value) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), o.get("type").cloned().unwrap_or(Value::Null));
    if let Some(url) = o.get("url").and_then(Value::as_str) {
        m.insert("url".into(), redact(url).into());
    }
    if o.get("routing_key").is_some() {
        m.insert("routing_key".into(), CUT.into());
    }
    if let Some(to) = o.get("to").and_then(Value::as_array) {
        let domains: Vec<String> = to
            .iter()
            .filter_map(Value::as_str)
            .map(|a| format!("{CUT}@{}", a.rsplit_once('@').map_or("", |(_, d)| d)))
            .collect();
        m.insert("to".into(), json!(domains));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_text_keep_only_their_host() {
        for (text, want) in [
            ("https://hooks.slack.com/services/T000/B000/SECRET", "https://hooks.slack.com/…"),
            ("POST https://discord.com/api/webhooks/1/SECRET: HTTP 404", "POST https://discord.com/…: HTTP 404"),
            (
                "error sending request for url (http://u:SECRET@127.0.0.1:9/x?k=SECRET)",
                "error sending request for url (http://127.0.0.1:9/…)",
            ),
            ("\"https://h.example/p?q=SECRET\" is not", "\"https://h.example/…\" is not"),
            (
                "to http://a.example/SECRET, then http://b.example:8080/.",
                "to http://a.example/…, then http://b.example:8080/.",
            ),
            ("https://user@h.example", "https://h.example/…"),
            ("https://h.example#SECRET", "https://h.example/…"),
            ("https://[2001:db8::1]:8443/SECRET", "https://[2001:db8::1]:8443/…"),
            ("syslog udp://10.0.0.5:514: timed out", "syslog udp://10.0.0.5:514: timed out"),
            ("https://h.example/", "https://h.example/"),
            ("no url here: a://", "no url here: a://"),
            ("odd ://x and 1://y", "odd ://x and 1://y"),
            ("x (https://h.example/SECRET) y", "x (https://h.example/…) y"),
            // What runs on after a URL without a space is taken as part of it: cut too.
            ("(https://h.example/SECRET)y", "(https://h.example/…"),
            ("ünïcode https://h.example/ß/SECRET ✓", "ünïcode https://h.example/… ✓"),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn outputs_shown_redacted() {
        let slack = json!({"type": "slack", "url": "https://hooks.slack.com/services/T/B/SECRET"});
        assert_eq!(output(&slack), json!({"type": "slack", "url": "https://hooks.slack.com/…"}));
        let pd = json!({"type": "pagerduty", "routing_key": "R0UTINGKEYSECRET", "url": "https://events.pagerduty.com/v2/enqueue"});
        assert_eq!(
            output(&pd),
            json!({"type": "pagerduty", "routing_key": "…", "url": "https://events.pagerduty.com/…"})
        );
        let mail = json!({"type": "email", "to": ["soc@example.com", "x@corp.example"]});
        assert_eq!(output(&mail), json!({"type": "email", "to": ["…@example.com", "…@corp.example"]}));
        let odd = json!({"type": "webhook", "url": "https://h.example/x", "secret_header": "SECRET"});
        assert!(!output(&odd).to_string().contains("SECRET"));
    }
}
