//! Output `teams`: a Microsoft Teams message carrying an Adaptive Card (title, text, a FactSet,
//! and a link to the token).
//!
//! Adaptive Card text is Markdown (emphasis, lists, links), and FactSet values too. Every
//! value is written with the Markdown characters backslash-escaped (emphasis, code, links,
//! autolinks in `<…>`, and headings, lists and quotes at a line's start) and defanged (see
//! [`card::inert`]) so raw links and mentions do not render; cards render no HTML, and `<` is
//! escaped anyway. Only Trapline's own link (the card's action) is a link. Values stay within
//! 1,024 bytes and the card far under the 28 KB a Teams webhook message may have.

use serde_json::{json, Value};

use super::card::{self, At, Card};

const TITLE_MAX: usize = 256;
const TEXT_MAX: usize = 1024;
const VALUE_MAX: usize = 1024;

/// Adaptive Card Markdown (CommonMark's escapes): a backslash before what could format.
fn escape(c: char, at: At, out: &mut String) {
    card::escape_markdown(c, at, out, &['\\', '*', '`', '~', '<', '>', '[', ']']);
}

pub fn body(c: &Card) -> Value {
    let facts: Vec<Value> =
        c.facts.iter().map(|(k, v)| json!({ "title": k, "value": card::inert(v, VALUE_MAX, escape) })).collect();
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            { "type": "TextBlock", "size": "Large", "weight": "Bolder", "text": card::inert(&c.title, TITLE_MAX, escape), "wrap": true },
            { "type": "TextBlock", "text": card::inert(&c.text, TEXT_MAX, escape), "wrap": true },
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

#[cfg(test)]
mod tests {
    use super::super::tests::hostile_card;
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let c = hostile_card();
        let body = body(&c);
        let card = &body["attachments"][0]["content"];
        assert_eq!(card["actions"][0]["url"], c.link.as_deref().unwrap());
        assert!(body.to_string().len() < 28_000);
        for f in card["body"][2]["facts"].as_array().unwrap() {
            let v = f["value"].as_str().unwrap();
            assert!(v.len() <= VALUE_MAX);
            for raw in ["https://", "](", "@everyone", "**bold**", "[click]"] {
                assert!(!v.contains(raw), "{raw} in {v}");
            }
            assert!(!v.replace(r"\<", "").contains('<'), "every < escaped: {v}");
        }
        let ua = card["body"][2]["facts"].as_array().unwrap().iter().find(|f| f["title"] == "User-Agent").unwrap();
        assert!(ua["value"].as_str().unwrap().contains(r"\[click\]"), "{ua}");
    }
}
