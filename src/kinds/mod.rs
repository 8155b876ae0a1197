//! The kind registry: one module per token kind, one row per kind in [`KINDS`].
//!
//! A kind decides what its create parameters are, which extra fields its token object shows,
//! whether it has a file to download, and (for kinds that smuggle data through DNS labels) how
//! those labels decode. The API, the CLI and the listeners all read this table; adding a kind
//! means adding a module and a row.

pub mod dns;
pub mod http;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token};

/// Where the token's artefacts point: the zone and URL base this installation serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// Token DNS zone, e.g. `trapline.localhost`.
    pub domain: String,
    /// Zone answered with NXDOMAIN after recording.
    pub nx_domain: String,
    /// Base of token URLs, without a trailing slash.
    pub public_url: String,
}

impl Site {
    pub fn hostname(&self, token_id: &str) -> String {
        format!("{token_id}.{}", self.domain)
    }

    /// The token URL: a few innocuous path words, the id, an innocuous page. The words are
    /// derived from the id, so the URL is stable without being stored.
    pub fn url(&self, token_id: &str) -> String {
        const WORDS: &[&str] = &[
            "about", "static", "articles", "images", "tags", "feedback", "terms", "traffic", "stuff", "help", "entry",
            "history", "assets", "blog", "archive",
        ];
        const PAGES: &[&str] = &["index.html", "contact.php", "post.jsp", "submit.aspx", "view.html"];
        let h: u32 = token_id.bytes().fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
        let w1 = WORDS[(h % WORDS.len() as u32) as usize];
        let w2 = WORDS[((h / 17) % WORDS.len() as u32) as usize];
        let page = PAGES[((h / 289) % PAGES.len() as u32) as usize];
        format!("{}/{w1}/{w2}/{token_id}/{page}", self.public_url)
    }
}

/// Create parameters as they arrived (form fields), by name.
pub type Params = BTreeMap<String, String>;

/// A downloadable artefact.
#[derive(Debug, Clone)]
pub struct Artefact {
    pub filename: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// What a kind's DNS decoder made of the labels left of the token.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsData {
    /// The labels do not use this encoding.
    NoMatch,
    /// Decoded fields to add to the hit.
    Decoded(Map<String, Value>),
    /// The marker is there but the data does not decode.
    Undecodable,
}

/// One DNS label encoding, tried in `rank` order (the order of `spec/kinds.md`).
pub struct DnsEncoding {
    pub rank: u8,
    /// `labels` are the query labels left of the token label, lowercased, in query order.
    pub decode: fn(labels: &[String]) -> DnsData,
}

/// One row of the registry.
pub struct Kind {
    /// Console name, e.g. `http`.
    pub name: &'static str,
    /// Human name shown by `canarytokens/list`, e.g. `Web Bug`.
    pub human_name: &'static str,
    /// The channel through which this kind's artefact normally fires (sets the Console
    /// `logtype`); any token may still be hit over either listener.
    pub channel: Channel,
    /// Validates create parameters; returns the kind's stored settings.
    pub create: fn(&Params) -> CoreResult<Value>,
    /// Adds the kind's own fields to the token object.
    pub describe: fn(&Token, &Site, &mut Map<String, Value>),
    /// The file `canarytoken/download` hands out, for kinds that have one.
    pub artefact: Option<fn(&Token, &Site) -> Artefact>,
    /// The DNS label encoding this kind contributes, if any.
    pub dns_encoding: Option<DnsEncoding>,
}

/// Every kind Trapline serves.
pub static KINDS: &[&Kind] = &[&http::KIND, &dns::KIND];

pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// Tries each kind's DNS encoding in rank order; the first that recognises the labels wins.
pub fn decode_dns_labels(labels: &[String]) -> DnsData {
    if labels.is_empty() {
        return DnsData::NoMatch;
    }
    static ORDER: std::sync::OnceLock<Vec<&'static DnsEncoding>> = std::sync::OnceLock::new();
    let encodings = ORDER.get_or_init(|| {
        let mut v: Vec<&DnsEncoding> = KINDS.iter().filter_map(|k| k.dns_encoding.as_ref()).collect();
        v.sort_by_key(|e| e.rank);
        v
    });
    for e in encodings {
        match (e.decode)(labels) {
            DnsData::NoMatch => continue,
            other => return other,
        }
    }
    DnsData::NoMatch
}

/// Parses a boolean parameter the way form users write them.
pub fn parse_bool(name: &'static str, v: &str) -> CoreResult<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(CoreError::invalid(name, format!("must be true or false, not {v:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_findable() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        assert_eq!(find("http").unwrap().human_name, "Web Bug");
        assert_eq!(find("dns").unwrap().human_name, "DNS");
        assert!(find("nope").is_none());
    }

    #[test]
    fn token_url_is_stable_and_carries_the_id() {
        let site =
            Site { domain: "t.example".into(), nx_domain: "nx.t.example".into(), public_url: "http://h:1".into() };
        let id = "abcdefghijklmnopqrstuvwxy";
        let u = site.url(id);
        assert_eq!(u, site.url(id));
        assert!(u.starts_with("http://h:1/"));
        assert!(u.contains(&format!("/{id}/")));
        assert_eq!(site.hostname(id), format!("{id}.t.example"));
    }

    #[test]
    fn bools_parse_strictly() {
        assert!(parse_bool("x", "True").unwrap());
        assert!(!parse_bool("x", "0").unwrap());
        assert!(parse_bool("x", "maybe").is_err());
    }
}
