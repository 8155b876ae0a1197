//! The kind contract and registry: one module per token kind, one row per kind in [`KINDS`].
//!
//! A kind is a value implementing [`Kind`]. It decides what its create parameters are, what its
//! token shows ([`KindView`]), whether it has a file to download, which of its settings may be
//! changed later, what happens when a token is deleted, and — its *judge*, run inside the
//! recording transaction — whether a request is an alert, a hit to keep but not alert on, or
//! nothing. Every method but the names and the channel has a default, so a kind states only
//! what is its own, and a hook added later (say for a new listener) touches no existing kind.
//!
//! Listener behaviour is one optional accessor per listener ([`Kind::http`], [`Kind::dns`]),
//! each returning a small trait of its own: a listener added later adds one defaulted accessor
//! and its trait, and the kinds that fire over it implement that trait. The listeners reach
//! kinds only through the free functions here ([`http_answer`], [`decode_dns_labels`],
//! [`judge`], [`find`]), so they do not change when a kind does.
//!
//! Settings are stored as JSON with the token; each kind reads them as one typed struct through
//! [`params`], and writes them through [`Created::with`], so the stored shape is the struct's.
//!
//! Differences from the shape sketched in `growth.md`, and why: [`Kind::update`] answers
//! [`Updated`] (the new settings *and* the audit text), because only the kind can word what
//! changed; [`KindContext`] holds shared handles (`Arc`s), so a kind may keep what it needs
//! past the call (a task that retries an outside service).

pub mod aws_access;
pub mod aws_id;
pub mod aws_s3;
pub mod cloned_css;
pub mod cloned_web;
pub mod dns;
pub mod doc_msexcel;
pub mod doc_msword;
pub mod http;
pub mod log4shell;
mod office;
pub mod pdf_acrobat_reader;
pub mod qr_code;
pub mod redirect;
pub mod sensitive_cmd;
pub mod signed_exe;
pub mod smtp;
pub mod sql;
mod support;
pub mod svn;
pub mod web_image;
pub mod windows_dir;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token, TokenFile, TriggerKey};
use crate::sealed::SecretBox;
use crate::workpool::WorkPool;

#[cfg(test)]
pub(crate) use support::testing;
pub use support::{needs_dns_field, parse_bool, required};

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

    /// The token's name under the NX zone: lookups of it and of names under it are recorded,
    /// then answered NXDOMAIN.
    pub fn nx_hostname(&self, token_id: &str) -> String {
        format!("{token_id}.{}", self.nx_domain)
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

/// What a caller sent to create a token, as far as its kind is concerned.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    pub params: &'a Params,
    pub uploads: &'a Uploads,
    /// The id the token will have, for kinds that write its names into what they make at
    /// creation (a signed executable's certificate URLs).
    pub token_id: &'a str,
}

/// What a kind may use to reach outside itself. Built by the core for each call.
#[derive(Clone)]
pub struct KindContext {
    pub site: Site,
    /// The pool for CPU-heavy work (decoding an upload, rendering a document): a kind must run
    /// such work here, never on the async threads that serve hits. It refuses with
    /// [`CoreError::Busy`] (503) when too much is queued.
    pub work: Arc<WorkPool>,
    /// Seals secrets that must be shown again (a honey credential's secret half).
    pub secrets: Arc<SecretBox>,
    /// AWS, when this server has AWS settings (the aws-id and aws-s3 kinds need it).
    pub aws: Option<Arc<aws_access::AwsAccess>>,
    /// The installation's code-signing CA (the signed-exe kind's issuer).
    pub code_signing: Arc<crate::artefacts::authenticode::CodeSigningCa>,
}

/// What a kind may read when it shows a token or hands out its file.
#[derive(Clone, Copy)]
pub struct ViewContext<'a> {
    pub site: &'a Site,
    /// Opens the secrets the kind sealed at creation (a honey AWS key's secret half), which
    /// it shows again; the store holds them only sealed.
    pub secrets: &'a SecretBox,
}

/// What a kind keeps of a create request.
#[derive(Debug, Clone, Default)]
pub struct Created {
    /// The settings stored with the token (see [`params`]).
    pub params: Value,
    /// Files stored with the token (an uploaded image).
    pub files: Vec<TokenFile>,
    /// Credentials minted for the token, by which a listener finds it: stored with the token in
    /// the key index, through which a hit naming [`TokenRef::Key`](crate::model::TokenRef)
    /// resolves inside the recording transaction. No kind mints any yet.
    pub keys: Vec<TriggerKey>,
}

impl Created {
    /// No settings (stored as `{}`), no files.
    pub fn empty() -> Created {
        Created { params: Value::Object(Map::new()), ..Created::default() }
    }

    /// `settings` as the token's stored settings.
    pub fn with(settings: &impl Serialize) -> CoreResult<Created> {
        let params = serde_json::to_value(settings).map_err(|e| CoreError::Storage(e.into()))?;
        Ok(Created { params, ..Created::default() })
    }
}

/// A token's stored settings as the kind's typed struct. Settings missing from the JSON take
/// the struct's serde defaults; settings that do not fit (never written by Trapline) give the
/// whole struct's `Default`.
pub fn params<T: DeserializeOwned + Default>(token: &Token) -> T {
    T::deserialize(&token.params).unwrap_or_default()
}

/// What a kind shows of a token, beside what every token shows. Neutral: each dialect (and a
/// future UI) shapes it its own way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindView {
    /// The kind's settings and derived values, by name, in the order to show them.
    pub fields: Vec<(&'static str, Value)>,
    /// Texts to paste somewhere (a script, a command line, a stylesheet), by name.
    pub renders: Vec<(&'static str, String)>,
}

impl KindView {
    pub fn field(mut self, name: &'static str, value: impl Into<Value>) -> KindView {
        self.fields.push((name, value.into()));
        self
    }

    pub fn render(mut self, name: &'static str, text: String) -> KindView {
        self.renders.push((name, text));
        self
    }
}

/// A downloadable artefact.
#[derive(Debug, Clone)]
pub struct Artefact {
    pub filename: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// A download kept as one of the token's stored files ([`Created::files`]): made once at
/// creation, from an upload, rather than on each download.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredArtefact {
    /// The stored file's name.
    pub file: &'static str,
    /// The name the download is given.
    pub filename: String,
    pub content_type: &'static str,
}

/// A change to a kind's own settings, asked for after creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindChange<'a> {
    /// Send visitors on to this URL (`browser_redirect_url`).
    SetRedirect(&'a str),
    /// Send visitors nowhere.
    RemoveRedirect,
    /// Set these of the kind's own settings, by name (SpaceSiren's `location`, `description`,
    /// `active`, `expire_time` of an aws-id token); the kind checks names and values.
    Settings(&'a Params),
}

impl KindChange<'_> {
    /// The refusal for a kind that has no such setting.
    pub fn unsupported(&self) -> CoreError {
        match self {
            KindChange::SetRedirect(_) => CoreError::invalid("canarytoken", "is not a token that redirects"),
            KindChange::RemoveRedirect => {
                CoreError::invalid("canarytoken", "is not a token whose redirect can be removed")
            }
            KindChange::Settings(_) => CoreError::invalid("canarytoken", "has no settings that can be changed"),
        }
    }
}

/// A kind's answer to a [`KindChange`]: the token's new settings, and what changed, for the
/// audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    pub params: Value,
    pub description: String,
}

/// A token kind. `name`, `human_name` and `channel` are its own; everything else defaults to
/// "nothing special".
#[async_trait]
pub trait Kind: Send + Sync + 'static {
    /// Console name, e.g. `http`.
    fn name(&self) -> &'static str;

    /// Human name shown by `canarytokens/list`, e.g. `Web Bug`.
    fn human_name(&self) -> &'static str;

    /// The channel through which this kind's artefact normally fires (sets the Console
    /// `logtype`); any token may still be hit over any listener.
    fn channel(&self) -> Channel;

    /// Validates create parameters (and uploads); returns what to store with the token.
    /// CPU-heavy work goes to `cx.work`. The default takes no parameters.
    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let _ = (req, cx);
        Ok(Created::empty())
    }

    /// The kind's own fields and renders of `token`.
    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let _ = (token, cx);
        KindView::default()
    }

    /// The file `canarytoken/download` hands out, for kinds that have one.
    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let _ = (token, cx);
        None
    }

    /// The stored file `canarytoken/download` hands out when [`Kind::artefact`] makes none.
    fn stored_artefact(&self, token: &Token) -> Option<StoredArtefact> {
        let _ = token;
        None
    }

    /// Alert, keep-but-ignore, or drop a would-be hit. Runs inside the recording transaction:
    /// must be pure and quick. The default alerts on every use.
    fn judge(&self, token: &Token, hit: &NewHit) -> Judgement {
        let _ = (token, hit);
        Judgement::alert()
    }

    /// Applies a change to the kind's own settings; the default has none to change.
    fn update(&self, token: &Token, change: &KindChange<'_>) -> CoreResult<Updated> {
        let _ = token;
        Err(change.unsupported())
    }

    /// Whether undoing what `create` did outside Trapline may fail and must then be retried.
    /// A kind returning true gets a row in the store's retirement queue, written in the
    /// transaction that deletes its token ([`crate::store::Store::delete_token`]), and its
    /// `retire` is called from that queue, retried with backoff until it succeeds (the token
    /// handed to it is rebuilt from the queued id, kind and settings). A kind returning false
    /// (the default) has `retire` called once, right after the delete.
    fn retires(&self) -> bool {
        false
    }

    /// Why tokens of this kind cannot be made on this server (aws-id without AWS settings), or
    /// None. Such a kind is left out of the kind listings, and create refuses with this error.
    fn unavailable(&self, cx: &KindContext) -> Option<CoreError> {
        let _ = cx;
        None
    }

    /// Whether its tokens need [`Kind::maintain`] called now and then (by the upkeep task).
    fn maintains(&self) -> bool {
        false
    }

    /// Keeps what the token set up outside Trapline in step with its settings (aws-id
    /// deactivates an expired key). Returns the new settings and what changed, when anything
    /// did; a failure is retried next time.
    async fn maintain(&self, token: &Token, cx: &KindContext) -> anyhow::Result<Option<Updated>> {
        let _ = (token, cx);
        Ok(None)
    }

    /// Runs after `token` has been deleted from the store (undo what `create` did outside
    /// Trapline, such as an IAM user). The token is gone by then, so a failure is not
    /// answered: it is logged, and for a kind whose [`retires`](Kind::retires) is true the
    /// queued retirement is tried again later (so `retire` must treat "already undone" as
    /// done).
    async fn retire(&self, token: &Token, cx: &KindContext) -> anyhow::Result<()> {
        let _ = (token, cx);
        Ok(())
    }

    /// How the HTTP listener answers for this kind; None: the 1×1 GIF.
    fn http(&self) -> Option<&dyn HttpBehaviour> {
        None
    }

    /// The DNS label encoding this kind contributes, if any.
    fn dns(&self) -> Option<&dyn DnsDecoding> {
        None
    }

    /// Whether its tokens are mailboxes (`<token id>@<zone>`) of the SMTP listener; None:
    /// mail for them is refused like mail for no token.
    fn smtp(&self) -> Option<&dyn SmtpBehaviour> {
        None
    }
}

/// A kind's SMTP behaviour ([`Kind::smtp`]).
pub trait SmtpBehaviour: Send + Sync {
    /// Whether the message is read into the hit (subject, links, attachment names and
    /// types), or only the envelope is kept.
    fn reads_message(&self) -> bool {
        true
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

/// A kind's HTTP behaviour ([`Kind::http`]).
pub trait HttpBehaviour: Send + Sync {
    fn answer(&self, token: &Token) -> HttpAnswer;
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

/// A kind's DNS label encoding ([`Kind::dns`]).
pub trait DnsDecoding: Send + Sync {
    /// Encodings are tried in rank order (the order of `spec/kinds.md`); ranks are unique.
    fn rank(&self) -> u8;

    /// `labels` are the query labels left of the token label, in query order and in the case
    /// they were sent (some encodings, such as base64, are case-sensitive).
    fn decode(&self, labels: &[String]) -> DnsData;
}

/// Every kind Trapline serves.
pub static KINDS: &[&dyn Kind] = &[
    &http::Http,
    &dns::Dns,
    &cloned_web::ClonedWeb,
    &cloned_css::ClonedCss,
    &web_image::WebImage,
    &redirect::FAST,
    &redirect::SLOW,
    &qr_code::QrCode,
    &svn::Svn,
    &log4shell::Log4Shell,
    &windows_dir::WindowsDir,
    &sensitive_cmd::SensitiveCmd,
    &signed_exe::SignedExe,
    &sql::Sql,
    &smtp::Smtp,
    &aws_id::AwsId,
    &aws_s3::AwsS3,
    &pdf_acrobat_reader::PdfAcrobatReader,
    &doc_msword::DOC_MSWORD,
    &doc_msexcel::DOC_MSEXCEL,
];

pub fn find(name: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().copied().find(|k| k.name() == name)
}

/// Judges a would-be hit by its token's kind (the recorder hands this to the store).
pub fn judge(token: &Token, hit: &NewHit) -> Judgement {
    find(&token.kind).map_or_else(Judgement::alert, |k| k.judge(token, hit))
}

/// How the HTTP listener answers for `token`.
pub fn http_answer(token: &Token) -> HttpAnswer {
    find(&token.kind).and_then(|k| k.http()).map_or(HttpAnswer::Gif, |h| h.answer(token))
}

/// Applies `change` to `token`'s settings through its kind.
pub fn update(token: &Token, change: &KindChange<'_>) -> CoreResult<Updated> {
    find(&token.kind).ok_or_else(|| change.unsupported())?.update(token, change)
}

/// Tries each kind's DNS encoding in rank order; the first that recognises the labels wins.
pub fn decode_dns_labels(labels: &[String]) -> DnsData {
    if labels.is_empty() {
        return DnsData::NoMatch;
    }
    static ORDER: std::sync::OnceLock<Vec<&'static dyn DnsDecoding>> = std::sync::OnceLock::new();
    let encodings = ORDER.get_or_init(|| {
        let mut v: Vec<&dyn DnsDecoding> = KINDS.iter().filter_map(|k| k.dns()).collect();
        v.sort_by_key(|e| e.rank());
        v
    });
    for e in encodings {
        match e.decode(labels) {
            DnsData::NoMatch => continue,
            other => return other,
        }
    }
    DnsData::NoMatch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyScheme;

    #[test]
    fn registry_names_are_unique_and_findable() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        let mut human: Vec<_> = KINDS.iter().map(|k| k.human_name()).collect();
        human.sort();
        human.dedup();
        assert_eq!(human.len(), KINDS.len(), "human names tell kinds apart in listings");
        assert_eq!(find("http").unwrap().human_name(), "Web Bug");
        assert_eq!(find("dns").unwrap().human_name(), "DNS");
        assert!(find("nope").is_none());
    }

    /// Every kind works on a token with no settings at all (its defaults), and its defaults
    /// fit together: an artefact is named and typed, renders are named after the kind, DNS
    /// ranks are unique, and use over HTTP is never merely ignored.
    #[test]
    fn every_kind_has_sensible_defaults() {
        let site = testing::site();
        let mut ranks = Vec::new();
        for k in KINDS {
            let t = testing::token(k.name(), serde_json::json!({}));
            assert!(!k.name().is_empty() && !k.human_name().is_empty());
            if let Some(a) = k.artefact(&t, &crate::kinds::testing::vcx(&site)) {
                assert!(!a.filename.is_empty() && a.filename.contains('.'), "{}: {}", k.name(), a.filename);
                assert!(a.content_type.contains('/'), "{}: {}", k.name(), a.content_type);
                assert!(!a.bytes.is_empty(), "{}", k.name());
            }
            if let Some(s) = k.stored_artefact(&t) {
                assert!(s.filename.contains('.') && s.content_type.contains('/'), "{}: {s:?}", k.name());
            }
            let view = k.view(&t, &crate::kinds::testing::vcx(&site));
            for (name, text) in &view.renders {
                assert_eq!(*name, k.name(), "renders are named after their kind");
                assert!(!text.is_empty());
            }
            let mut fields: Vec<_> = view.fields.iter().map(|(n, _)| *n).collect();
            fields.sort();
            fields.dedup();
            assert_eq!(fields.len(), view.fields.len(), "{}: a field shown twice", k.name());
            if let Some(d) = k.dns() {
                ranks.push(d.rank());
                assert_eq!(d.decode(&[]), DnsData::NoMatch, "{}: no labels, no match", k.name());
            }
            let hit = testing::hit(Channel::Http, serde_json::json!({}));
            assert!(!matches!(k.judge(&t, &hit), Judgement::Ignore { .. }), "{}: HTTP use is never ignored", k.name());
        }
        let n = ranks.len();
        ranks.sort();
        ranks.dedup();
        assert_eq!(ranks.len(), n, "DNS ranks are unique");
        assert!(n >= 5, "dns, windows-dir, log4shell, sensitive-cmd and sql decode labels");
    }

    #[test]
    fn only_redirecting_kinds_take_redirect_changes() {
        let set = KindChange::SetRedirect("https://example.com/");
        for k in KINDS {
            let t = testing::token(k.name(), serde_json::json!({}));
            let takes = matches!(k.name(), "fast-redirect" | "slow-redirect" | "qr-code");
            assert_eq!(k.update(&t, &set).is_ok(), takes, "{}", k.name());
            let removes = k.name() == "qr-code";
            match k.update(&t, &KindChange::RemoveRedirect) {
                Ok(_) => assert!(removes, "{}", k.name()),
                Err(CoreError::InvalidParam { name, reason }) => {
                    assert!(!removes, "{}", k.name());
                    assert_eq!(
                        (name, reason.as_str()),
                        ("canarytoken", "is not a token whose redirect can be removed")
                    );
                }
                Err(e) => panic!("{}: {e}", k.name()),
            }
        }
        let unknown = testing::token("nope", serde_json::json!({}));
        assert!(
            matches!(update(&unknown, &set), Err(CoreError::InvalidParam { reason, .. }) if reason == "is not a token that redirects")
        );
    }

    #[test]
    fn key_scheme_names_are_distinct() {
        let names = [
            KeyScheme::WireGuardPublicKey,
            KeyScheme::CertificateSha256,
            KeyScheme::AwsAccessKeyId,
            KeyScheme::S3Bucket,
        ]
        .map(KeyScheme::as_str);
        assert!(names.iter().enumerate().all(|(i, n)| !names[..i].contains(n)), "{names:?}");
    }

    #[test]
    fn typed_params_read_missing_settings_as_defaults() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct P {
            a: String,
            n: u32,
        }
        let t = |v| testing::token("dns", v);
        assert_eq!(params::<P>(&t(serde_json::json!({"a": "x", "n": 3, "z": 1}))), P { a: "x".into(), n: 3 });
        assert_eq!(params::<P>(&t(serde_json::json!({"n": 3}))), P { a: String::new(), n: 3 });
        assert_eq!(params::<P>(&t(serde_json::json!({"a": 5}))), P::default(), "a misfit gives the default");
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
}
