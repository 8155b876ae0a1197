//! Output `discord`: a Discord webhook message with one embed (title, description, inline
//! fields, timestamp; red for alerts, grey for tests).
//!
//! Nothing an attacker put in a hit may ping or link: the message says
//! `"allowed_mentions": {"parse": []}`, so no mention notifies anyone, and every value is
//! Markdown-escaped with backslashes (emphasis, code, spoilers, quotes, headings, lists,
//! `<@id>` and `<t:…>` forms, the brackets of masked links) and defanged (see [`card::inert`]) so raw links and
//! `@everyone` do not render. Only Trapline's own link (the embed URL) is a link. Sizes stay
//! within Discord's limits: content 2,000, title 256, description 4,096, field values 1,024,
//! 25 fields, 6,000 characters for the whole embed.

use serde_json::{json, Value};

use super::card::{self, At, Card};

const RED: u32 = 0xE74C3C;
const GREY: u32 = 0x95A5A6;
const CONTENT_MAX: usize = 2000;
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 1024;
const VALUE_MAX: usize = 1024;
const EMBED_MAX: usize = 6000;
const FIELDS_MAX: usize = 25;

/// Discord Markdown: a backslash before each character that could start formatting.
fn escape(c: char, at: At, out: &mut String) {
    card::escape_markdown(c, at, out, &['\\', '*', '~', '`', '|', '<', '>', '[', ']']);
}

pub fn body(c: &Card, time: &str) -> Value {
    let title = card::inert(&c.title, TITLE_MAX, escape);
    let description = card::inert(&c.text, DESCRIPTION_MAX, escape);
    let facts: Vec<_> = c.facts.iter().take(FIELDS_MAX).collect();
    let names: usize = facts.iter().map(|(k, _)| k.len()).sum();
    // What the embed has left for field values, shared evenly.
    let room = EMBED_MAX.saturating_sub(title.len() + description.len() + names);
    let per_value = VALUE_MAX.min(room / facts.len().max(1));
    let fields: Vec<Value> = facts
        .iter()
        .map(|(k, v)| {
            let value = if v.is_empty() { "-".to_string() } else { card::inert(v, per_value, escape) };
            json!({ "name": k, "inline": value.len() < 40, "value": value })
        })
        .collect();
    let mut embed = json!({
        "title": title,
        "description": description,
        "color": if c.test { GREY } else { RED },
        "fields": fields,
    });
    if !time.is_empty() {
        embed["timestamp"] = time.into();
    }
    if let Some(link) = &c.link {
        embed["url"] = link.clone().into();
    }
    json!({
        "username": "Trapline",
        "content": card::inert(&c.text, CONTENT_MAX, escape),
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::hostile_card;
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let c = hostile_card();
        let body = body(&c, "2026-11-22T23:03:43Z");
        assert_eq!(body["allowed_mentions"], json!({ "parse": [] }));
        let embed = &body["embeds"][0];
        assert_eq!(embed["url"], c.link.as_deref().unwrap());
        let mut total = embed["title"].as_str().unwrap().len() + embed["description"].as_str().unwrap().len();
        for f in embed["fields"].as_array().unwrap() {
            let v = f["value"].as_str().unwrap();
            total += v.len() + f["name"].as_str().unwrap().len();
            assert!(v.len() <= VALUE_MAX, "{}", v.len());
            for raw in ["https://", "](", "@everyone", "@here"] {
                assert!(!v.contains(raw), "{raw} in {v}");
            }
            for ch in ['<', '*', '|', '`', '['] {
                assert!(escaped(v, ch), "{ch} unescaped in {v}");
            }
        }
        assert!(total <= EMBED_MAX, "{total}");
        let ua = embed["fields"].as_array().unwrap().iter().find(|f| f["name"] == "User-Agent").unwrap();
        let ua = ua["value"].as_str().unwrap();
        assert!(ua.contains(r"\*\*bold\*\*") && ua.contains(r"\|\|spoiler\|\|") && ua.contains(r"\<@"), "{ua}");
        assert!(body["content"].as_str().unwrap().len() <= CONTENT_MAX);
    }

    /// Whether every `ch` in `v` has a backslash before it.
    fn escaped(v: &str, ch: char) -> bool {
        let chars: Vec<char> = v.chars().collect();
        chars.iter().enumerate().all(|(i, &c)| c != ch || (i > 0 && chars[i - 1] == '\\'))
    }

    #[test]
    fn plain_words_stay_as_they_are() {
        let mut out = String::new();
        for (i, c) in "backup_host-1 #2".chars().enumerate() {
            let chars: Vec<char> = "backup_host-1 #2".chars().collect();
            escape(c, At { prev: i.checked_sub(1).map(|p| chars[p]), next: chars.get(i + 1).copied() }, &mut out);
        }
        assert_eq!(out, "backup_host-1 #2");
        assert_eq!(card::inert("- _x_ #h", 100, escape), r"\- \_x\_ #h");
    }
}
