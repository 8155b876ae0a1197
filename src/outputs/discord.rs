//! Output `discord`: a Discord webhook message with one embed (title, description, inline
//! fields, timestamp; red for alerts, grey for tests).

use serde_json::{json, Value};

use super::card::Card;

const RED: u32 = 0xE74C3C;
const GREY: u32 = 0x95A5A6;

pub fn body(c: &Card, time: &str) -> Value {
    let fields: Vec<Value> = c
        .facts
        .iter()
        .take(25) // Discord's limit
        .map(|(k, v)| json!({ "name": k, "value": if v.is_empty() { "-".to_string() } else { v.clone() }, "inline": v.len() < 40 }))
        .collect();
    let mut embed = json!({
        "title": c.title,
        "description": c.text,
        "color": if c.test { GREY } else { RED },
        "fields": fields,
    });
    if !time.is_empty() {
        embed["timestamp"] = time.into();
    }
    if let Some(link) = &c.link {
        embed["url"] = link.clone().into();
    }
    json!({ "username": "Trapline", "content": c.text, "embeds": [embed] })
}
