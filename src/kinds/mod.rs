//! The kind registry: one module per token kind, one row per kind in [`KINDS`].
//!
//! A kind decides what its create parameters are, which extra fields its token object shows,
//! whether it has a file to download, how the HTTP listener answers for it, how labels left of
//! its hostname decode, and — its *judge*, run inside the recording transaction — whether a
//! request is an alert, a hit to keep but not alert on, or nothing. The API, the CLI and the
//! listeners all read this table; adding a kind means adding a module and a row.

pub mod cloned_css;
pub mod cloned_web;
pub mod dns;
pub mod http;
pub mod log4shell;
pub mod qr_code;
pub mod redirect;
pub mod sensitive_cmd;
pub mod sql;
pub mod svn;
pub mod web_image;
pub mod windows_dir;

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token, TokenFile};

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

/// A file sent with a create request (multipart), by field name.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

pub type Uploads = BTreeMap<String, Upload>;

/// What a kind keeps of a create request: its settings (stored with the token) and files.
#[derive(Debug, Clone, Default)]
pub struct Created {
    pub params: Value,
    pub files: Vec<TokenFile>,
}

impl Created {
    pub fn params(params: Value) -> Created {
        Created { params, files: Vec::new() }
    }
}

/// How the HTTP listener answers a request for a token of this kind.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpAnswer {
    /// The 1×1 GIF.
    Gif,
    /// 302 to this URL.
    Redirect(String),
    /// The browser-scanner page (to clients that accept HTML; others get the GIF), which
    /// reports browser details back to the hit and then, if set, moves on to this URL.
    Scanner { then: Option<String> },
    /// One of the token's stored files, by name.
    File(&'static str),
}

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

impl DnsData {
    /// Decoded data of one field.
    pub fn field(name: &str, value: impl Into<String>) -> DnsData {
        let mut m = Map::new();
        m.insert(name.to_string(), Value::String(value.into()));
        DnsData::Decoded(m)
    }
}

/// One DNS label encoding, tried in `rank` order (the order of `spec/kinds.md`).
pub struct DnsEncoding {
    pub rank: u8,
    /// `labels` are the query labels left of the token label, in query order and in the case
    /// they were sent (some encodings, such as base64, are case-sensitive).
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
    /// Validates create parameters (and uploads); returns what to store with the token.
    pub create: fn(&Params, &Uploads) -> CoreResult<Created>,
    /// Adds the kind's own fields to the token object.
    pub describe: fn(&Token, &Site, &mut Map<String, Value>),
    /// The file `canarytoken/download` hands out, for kinds that have one.
    pub artefact: Option<fn(&Token, &Site) -> Artefact>,
    /// The DNS label encoding this kind contributes, if any.
    pub dns_encoding: Option<DnsEncoding>,
    /// Alert, keep-but-ignore, or drop a would-be hit. Runs inside the recording
    /// transaction: must be pure and quick.
    pub judge: fn(&Token, &NewHit) -> Judgement,
    /// How the HTTP listener answers.
    pub http_answer: fn(&Token) -> HttpAnswer,
}

/// `create` of kinds that take no parameters.
pub fn no_params(_params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    Ok(Created::params(Value::Object(Map::new())))
}

/// `describe` of kinds with no fields of their own.
pub fn no_fields(_token: &Token, _site: &Site, _out: &mut Map<String, Value>) {}

/// The judge of most kinds: every use is an alert.
pub fn always_alert(_token: &Token, _hit: &NewHit) -> Judgement {
    Judgement::alert()
}

/// The HTTP answer of most kinds.
pub fn gif_answer(_token: &Token) -> HttpAnswer {
    HttpAnswer::Gif
}

/// The judge of kinds whose DNS use must carry their own decoded data (`field`): a lookup of
/// the bare hostname, or one whose labels decode as another encoding, is kept but ignored.
/// Uses over HTTP are alerts.
pub fn needs_dns_field(hit: &NewHit, field: &str) -> Judgement {
    if hit.channel == Channel::Dns && hit.data.get(field).is_none_or(|v| v.as_str().is_none_or(str::is_empty)) {
        return Judgement::Ignore { reason: format!("lookup without decodable {field}") };
    }
    Judgement::alert()
}

/// Judges a would-be hit by its token's kind (the recorder hands this to the store).
pub fn judge(token: &Token, hit: &NewHit) -> Judgement {
    match find(&token.kind) {
        Some(k) => (k.judge)(token, hit),
        None => Judgement::alert(),
    }
}

/// The judge of a server with an ignore list: hits from those networks, or from the token's
/// own ignore list, are kept, marked ignored, and raise no alert; everything else goes to the
/// kind's judge.
pub fn judge_ignoring(ignored: Vec<String>) -> impl Fn(&Token, &NewHit) -> Judgement + Send + Sync {
    move |token, hit| {
        if !ignored.is_empty() && crate::core::ip_allowed(&ignored, &hit.src_ip) {
            return Judgement::Ignore { reason: "source is on the ignore list".into() };
        }
        if !token.ignore_sources.is_empty() && crate::core::ip_allowed(&token.ignore_sources, &hit.src_ip) {
            return Judgement::Ignore { reason: "source is on the token's ignore list".into() };
        }
        judge(token, hit)
    }
}

/// How the HTTP listener answers for `token`.
pub fn http_answer(token: &Token) -> HttpAnswer {
    find(&token.kind).map_or(HttpAnswer::Gif, |k| (k.http_answer)(token))
}

/// A kind's `renders` field: one text artefact under the kind's name.
pub fn renders(out: &mut Map<String, Value>, kind: &str, text: String) {
    let mut r = Map::new();
    r.insert(kind.to_string(), Value::String(text));
    out.insert("renders".into(), Value::Object(r));
}

/// A required, non-empty parameter.
pub fn required<'a>(params: &'a Params, name: &'static str) -> CoreResult<&'a str> {
    params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()).ok_or_else(|| CoreError::invalid(name, "is required"))
}

/// Every kind Trapline serves.
pub static KINDS: &[&Kind] = &[
    &http::KIND,
    &dns::KIND,
    &cloned_web::KIND,
    &cloned_css::KIND,
    &web_image::KIND,
    &redirect::FAST,
    &redirect::SLOW,
    &qr_code::KIND,
    &svn::KIND,
    &log4shell::KIND,
    &windows_dir::KIND,
    &sensitive_cmd::KIND,
    &sql::KIND,
];

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

/// Fixtures for the kinds' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Site;
    use crate::model::Token;

    /// Query labels as sent, split at dots.
    pub fn labels(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    pub fn site() -> Site {
        Site { domain: "t.test".into(), nx_domain: "nx.t.test".into(), public_url: "http://h".into() }
    }

    /// An enabled token of `kind` with id `abcdefghijklmnopqrstuvwxy` and these settings.
    pub fn token(kind: &str, params: serde_json::Value) -> Token {
        Token {
            id: "abcdefghijklmnopqrstuvwxy".into(),
            kind: kind.into(),
            memo: "m".into(),
            flock_id: crate::model::DEFAULT_FLOCK.into(),
            enabled: true,
            created_us: 0,
            updated_id: 1,
            params,
            created_by: "t".into(),
            triggered_count: 0,
            unacked_count: 0,
            alert_webhook_url: None,
            alert_email: None,
            alert_cooldown_secs: None,
            alert_max_per_hour: None,
            ignore_sources: Vec::new(),
        }
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
    fn ignore_list_keeps_hits_but_silences_them() {
        let judge = judge_ignoring(vec!["10.0.0.0/8".into()]);
        let token = testing::token("dns", serde_json::json!({}));
        let hit = |ip: &str| NewHit {
            token_id: token.id.clone(),
            time_us: 0,
            channel: Channel::Dns,
            src_ip: ip.into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data: serde_json::json!({}),
        };
        assert!(matches!(judge(&token, &hit("10.1.2.3")), Judgement::Ignore { .. }));
        assert_eq!(judge(&token, &hit("192.0.2.1")), Judgement::alert());
        assert_eq!(
            judge_ignoring(Vec::new())(&token, &hit("10.1.2.3")),
            Judgement::alert(),
            "empty list ignores nothing"
        );
        let mut own = token.clone();
        own.ignore_sources = vec!["192.0.2.0/24".into()];
        let Judgement::Ignore { reason } = judge_ignoring(Vec::new())(&own, &hit("192.0.2.1")) else {
            panic!("the token's own list is honoured")
        };
        assert!(reason.contains("token's ignore list"));
        assert_eq!(judge(&own, &hit("198.51.100.1")), Judgement::alert());
    }

    #[test]
    fn bools_parse_strictly() {
        assert!(parse_bool("x", "True").unwrap());
        assert!(!parse_bool("x", "0").unwrap());
        assert!(parse_bool("x", "maybe").is_err());
    }
}
