//! Output `gchat`: a Google Chat webhook message with a card (v2): header, the facts as
//! decorated text, and a button to the token.

use serde_json::{json, Value};

use super::card::Card;

pub fn body(c: &Card, key: &str) -> Value {
    let mut widgets: Vec<Value> = c
        .facts
        .iter()
        .map(|(k, v)| json!({ "decoratedText": { "topLabel": k, "text": v, "wrapText": true } }))
        .collect();
    if let Some(link) = &c.link {
        widgets.push(json!({ "buttonList": { "buttons": [ { "text": "Token in Trapline", "onClick": { "openLink": { "url": link } } } ] } }));
    }
    json!({
        "text": c.text,
        "cardsV2": [ {
            "cardId": format!("trapline-{key}"),
            "card": { "header": { "title": c.title, "subtitle": c.text }, "sections": [ { "widgets": widgets } ] },
        } ],
    })
}
