//! Output `slack`: a Slack incoming-webhook message in Block Kit (a header, the facts as
//! fields, a context line), with `text` as the notification fallback.
//!
//! Every value is written as mrkdwn-escaped text (`&`, `<`, `>`), so what an attacker put in a
//! hit cannot form `<!channel>`, `<@user>` or `<url|text>` links, and is defanged (see
//! [`card::inert`]) so no raw link or `@` mention forms either. Sizes stay within Block Kit's
//! limits: a header of 150 characters, section text of 3,000, fields of 2,000, 10 fields a
//! section.

use serde_json::{json, Value};

use super::card::{self, At, Card};

const HEADER_MAX: usize = 150;
const TEXT_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;

/// Slack's own escaping: the three characters its markup is made of.
fn escape(c: char, _: At, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

pub fn body(c: &Card) -> Value {
    let fields: Vec<Value> = c
        .facts
        .iter()
        .map(|(k, v)| {
            let label = format!("*{k}*\n");
            let text = format!("{label}{}", card::inert(v, FIELD_MAX - label.len(), escape));
            json!({ "type": "mrkdwn", "text": text })
        })
        .collect();
    let text = card::inert(&c.text, TEXT_MAX, escape);
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": card::inert(&c.title, HEADER_MAX, card::plain) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }),
    ];
    // Slack allows at most 10 fields in one section.
    for chunk in fields.chunks(10) {
        blocks.push(json!({ "type": "section", "fields": chunk }));
    }
    if let Some(link) = &c.link {
        // Trapline's own link, the one link in the message (its URL escaped as Slack asks).
        let url: String = link.chars().fold(String::new(), |mut s, ch| {
            escape(ch, At { prev: None, next: None }, &mut s);
            s
        });
        blocks.push(json!({ "type": "context", "elements": [ { "type": "mrkdwn", "text": format!("<{url}|Token in Trapline>") } ] }));
    }
    json!({ "text": text, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::super::tests::hostile_card;
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let c = hostile_card();
        let body = body(&c);
        let link = format!("<{}|Token in Trapline>", c.link.as_deref().unwrap());
        let mut texts = vec![body["text"].as_str().unwrap().to_string()];
        for b in body["blocks"].as_array().unwrap() {
            for f in b["fields"].as_array().into_iter().flatten() {
                texts.push(f["text"].as_str().unwrap().to_string());
            }
            if let Some(t) = b["text"]["text"].as_str() {
                texts.push(t.to_string());
            }
            for e in b["elements"].as_array().into_iter().flatten() {
                assert_eq!(e["text"], link.as_str(), "Trapline's link still works");
            }
        }
        for t in &texts {
            assert!(!t.contains('<') && !t.contains('>'), "{t}");
            assert!(!t.contains("https://") && !t.contains("@everyone") && !t.contains("@here"), "{t}");
            assert!(t.chars().count() <= FIELD_MAX, "{}", t.len());
        }
        let ua = texts.iter().find(|t| t.starts_with("*User-Agent*")).unwrap();
        assert!(ua.contains("&lt;!channel&gt;") && ua.contains("&amp;amp;"), "{ua}");
        assert!(ua.ends_with(card::CUT), "cut at the card's limit: {ua}");
    }
}
