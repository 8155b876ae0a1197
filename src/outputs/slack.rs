//! Output `slack`: a Slack incoming-webhook message in Block Kit (a header, the facts as
//! fields, a context line), with `text` as the notification fallback.

use serde_json::{json, Value};

use super::card::Card;

pub fn body(c: &Card) -> Value {
    let fields: Vec<Value> =
        c.facts.iter().map(|(k, v)| json!({ "type": "mrkdwn", "text": format!("*{k}*\n{v}") })).collect();
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": c.title } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": c.text } }),
    ];
    // Slack allows at most 10 fields in one section.
    for chunk in fields.chunks(10) {
        blocks.push(json!({ "type": "section", "fields": chunk }));
    }
    if let Some(link) = &c.link {
        blocks.push(json!({ "type": "context", "elements": [ { "type": "mrkdwn", "text": format!("<{link}|Token in Trapline>") } ] }));
    }
    json!({ "text": c.text, "blocks": blocks })
}
