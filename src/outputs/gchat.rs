//! Output `gchat`: a Google Chat webhook message with a card (v2): header, the facts as
//! decorated text, and a button to the token.
//!
//! Decorated text is Google Chat's HTML subset (`<a href>`, `<b>`, `<font>` …), so every value
//! is HTML-escaped there; the message's own `text` has Chat's markup (`<url|text>`, `<users/all>`),
//! where a zero-width space after each `<` keeps those forms from opening. Everything is
//! defanged too (see [`card::inert`]), so raw links and `@` mentions do not render. Only
//! Trapline's own link (the button) is a link. Values stay within 1,024 bytes, the message
//! text within Chat's 4,096 characters, and the message far under its 32,000 bytes.

use serde_json::{json, Value};

use super::card::{self, At, Card};

const HEADER_MAX: usize = 256;
const TEXT_MAX: usize = 1024;
const VALUE_MAX: usize = 1024;

/// HTML escaping, for decorated text.
fn escape_html(c: char, _: At, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// Message text: `<` followed by a zero-width space opens no link or mention.
fn escape_text(c: char, _: At, out: &mut String) {
    out.push(c);
    if c == '<' {
        out.push('\u{200B}');
    }
}

pub fn body(c: &Card, key: &str) -> Value {
    let mut widgets: Vec<Value> = c
        .facts
        .iter()
        .map(|(k, v)| json!({ "decoratedText": { "topLabel": k, "text": card::inert(v, VALUE_MAX, escape_html), "wrapText": true } }))
        .collect();
    if let Some(link) = &c.link {
        widgets.push(json!({ "buttonList": { "buttons": [ { "text": "Token in Trapline", "onClick": { "openLink": { "url": link } } } ] } }));
    }
    // Card headers are plain text: only defanged and cut.
    let header = json!({
        "title": card::inert(&c.title, HEADER_MAX, card::plain),
        "subtitle": card::inert(&c.text, HEADER_MAX, card::plain),
    });
    json!({
        "text": card::inert(&c.text, TEXT_MAX, escape_text),
        "cardsV2": [ {
            "cardId": format!("trapline-{key}"),
            "card": { "header": header, "sections": [ { "widgets": widgets } ] },
        } ],
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::hostile_card;
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let c = hostile_card();
        let body = body(&c, "k");
        let widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"].as_array().unwrap();
        let button = widgets.last().unwrap();
        assert_eq!(button["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"], c.link.as_deref().unwrap());
        for w in &widgets[..widgets.len() - 1] {
            let v = w["decoratedText"]["text"].as_str().unwrap();
            assert!(v.len() <= VALUE_MAX);
            assert!(!v.contains('<') && !v.contains('>') && !v.contains("https://") && !v.contains("@everyone"), "{v}");
        }
        let ua = widgets.iter().find(|w| w["decoratedText"]["topLabel"] == "User-Agent").unwrap();
        assert!(ua["decoratedText"]["text"].as_str().unwrap().contains("&lt;a href=&quot;"), "{ua}");
        let text = body["text"].as_str().unwrap();
        assert!(text.matches('<').count() == text.matches("<\u{200B}").count(), "{text}");
        assert!(body.to_string().len() < 32_000);
    }
}
