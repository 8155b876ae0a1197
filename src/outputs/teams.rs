//! Output `teams`: a Microsoft Teams message carrying an Adaptive Card (title, text, a FactSet,
//! and a link to the token).

use serde_json::{json, Value};

use super::card::Card;

pub fn body(c: &Card) -> Value {
    let facts: Vec<Value> = c.facts.iter().map(|(k, v)| json!({ "title": k, "value": v })).collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            { "type": "TextBlock", "size": "Large", "weight": "Bolder", "text": c.title, "wrap": true },
            { "type": "TextBlock", "text": c.text, "wrap": true },
            { "type": "FactSet", "facts": facts },
        ],
    });
    if let Some(link) = &c.link {
        card["actions"] = json!([ { "type": "Action.OpenUrl", "title": "Token in Trapline", "url": link } ]);
    }
    json!({
        "type": "message",
        "attachments": [ { "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card } ],
    })
}
