//! The core data model: flocks, tokens, hits, incidents, API keys and audit entries.
//!
//! These are plain data types shared by the store, the core service, the listeners and the
//! dialects. They carry no behaviour beyond small conversions; business rules live in
//! [`crate::core`], persistence in [`crate::store`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The flock every installation has and that cannot be deleted.
pub const DEFAULT_FLOCK: &str = "flock:default";
pub const DEFAULT_FLOCK_NAME: &str = "Default Flock";

/// Microseconds since the Unix epoch, UTC. Every timestamp in Trapline is one of these.
pub type Micros = i64;

pub fn now_us() -> Micros {
    chrono::Utc::now().timestamp_micros()
}

/// `2030-01-01T00:00:00Z` (seconds, UTC).
pub fn rfc3339(us: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flock {
    pub id: String,
    pub name: String,
    pub created_us: Micros,
}

/// Counts shown by `flock/summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlockSummary {
    pub token_count: i64,
    pub enabled_token_count: i64,
    /// Tokens with at least one incident.
    pub triggered_token_count: i64,
    pub incident_count: i64,
    pub unacknowledged_incident_count: i64,
    /// Kinds with the number of tokens of each, most tokens first (then by name); all of
    /// them, so `len()` is the number of different kinds.
    pub kinds: Vec<(String, i64)>,
}

/// A token as stored. `params` holds the kind-specific settings chosen at creation (for
/// example `browser_scanner_enabled` for `http`); the kind module owns its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub id: String,
    pub kind: String,
    pub memo: String,
    pub flock_id: String,
    pub enabled: bool,
    pub created_us: Micros,
    /// Bumped on every change of the token.
    pub updated_id: i64,
    pub params: Value,
    /// Key id (or factory id) of whoever created it.
    pub created_by: String,
    /// Number of hits recorded for it (derived, filled in by the store on reads).
    pub triggered_count: i64,
    /// Number of its unacknowledged incidents (derived, filled in by the store on reads).
    pub unacked_count: i64,
    /// Where this token's alerts also go, besides the global outputs.
    pub alert_webhook_url: Option<String>,
    /// Recipients (`a@x;b@y`) this token's alerts are also mailed to.
    pub alert_email: Option<String>,
    /// Seconds after an alert during which further incidents of this token stay silent
    /// (0: alert on every incident, -1: only the first ever). None: the server's default.
    pub alert_cooldown_secs: Option<i64>,
    /// Most alerts this token raises in any hour (0: no limit). None: the server's default.
    pub alert_max_per_hour: Option<i64>,
    /// Networks (`a.b.c.d/n` text) whose hits of this token are kept but never alert.
    pub ignore_sources: Vec<String>,
}

/// What may change on an existing token.
#[derive(Debug, Clone, Default)]
pub struct TokenChange {
    pub memo: Option<String>,
    pub enabled: Option<bool>,
    pub params: Option<Value>,
    /// `Some(None)` clears it.
    pub alert_webhook_url: Option<Option<String>>,
    /// `Some(None)` clears it.
    pub alert_email: Option<Option<String>>,
    /// `Some(None)` returns to the server's default.
    pub alert_cooldown_secs: Option<Option<i64>>,
    /// `Some(None)` returns to the server's default.
    pub alert_max_per_hour: Option<Option<i64>>,
    /// `Some(vec![])` clears the list.
    pub ignore_sources: Option<Vec<String>>,
}

/// Filter for token listings; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenFilter {
    pub kind: Option<String>,
    pub flock_id: Option<String>,
    /// Case-insensitive substring of the memo.
    pub memo_contains: Option<String>,
    /// Word prefixes, all of which must start a word of the memo or the token id (see
    /// [`search_words`]).
    pub words: Vec<String>,
    pub enabled: Option<bool>,
}

/// The words a text is searched by: runs of letters and digits, case-folded. Folding happens
/// in Rust, because the engines' own LOWER() disagree beyond ASCII.
pub fn search_words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// Where a page of a listing starts: after (or, going back, before) the row at `key`, in
/// the listing's order. Each listing says what its key is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageStart<K> {
    pub key: Option<K>,
    /// Rows before `key` (the previous page), still returned in the listing's order.
    pub backwards: bool,
}

/// The key of a token in listings (newest first): its creation time and id.
pub type TokenKey = (Micros, String);

/// Where a hit came in: which listener took it.
///
/// What differs by channel is decided here, one method per fact (its stored name, the
/// Console's log type for kinds the Console has no code for), so a new channel adds a row to
/// each method and nothing elsewhere. Grouping asks the listener ([`NewHit::group`]), not the
/// channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Http,
    Dns,
    Smtp,
    /// An AWS event about a honey credential or bucket: a CloudTrail record, an S3 server
    /// access log line, or a key's last-used time (the hit's `via` says which).
    Aws,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Dns => "dns",
            Channel::Smtp => "smtp",
            Channel::Aws => "aws",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
    /// The Console's log type for a token of a kind the Console has no code of its own for
    /// (a kind Trapline adds): the generic HTTP or DNS token's code, by the channel the kind
    /// is fired through. The Console knows no mail tokens, so SMTP falls back as DNS does; an
    /// AWS event is a request to a web API, so it falls back as HTTP does.
    pub fn console_logtype_fallback(self) -> u32 {
        match self {
            Channel::Http | Channel::Aws => 17000,
            Channel::Dns | Channel::Smtp => 16000,
        }
    }
}

impl Channel {
    /// Every channel, in the order they were added.
    pub const ALL: [Channel; 4] = [Channel::Http, Channel::Dns, Channel::Smtp, Channel::Aws];
}

/// How a hit names its token: by id (a request that carries it: a URL, a DNS name, a mail
/// address), or by a credential the token's kind minted ([`TriggerKey`]: a WireGuard public
/// key, a client certificate) that the recording transaction looks up in the key index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRef {
    Id(String),
    Key(TriggerKey),
}

impl TokenRef {
    /// The token id, when the hit names one.
    pub fn id(&self) -> Option<&str> {
        match self {
            TokenRef::Id(id) => Some(id),
            TokenRef::Key(_) => None,
        }
    }
}

impl std::fmt::Display for TokenRef {
    /// The id, or `<scheme>:<value>` (for logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRef::Id(id) => f.write_str(id),
            TokenRef::Key(k) => write!(f, "{}:{}", k.scheme.as_str(), k.value),
        }
    }
}

/// The entry of a hit's [`NewHit::private`] data that guards later additions to the hit: only
/// who knows it may amend the hit ([`crate::store::Store::amend_hit`]).
pub const AMEND_GUARD: &str = "amend_guard";

/// Private hit data holding just an amendment guard (see [`AMEND_GUARD`]).
pub fn amend_guard(secret: &str) -> Value {
    serde_json::json!({ AMEND_GUARD: secret })
}

/// A trigger observed by a listener, not yet stored.
#[derive(Debug, Clone)]
pub struct NewHit {
    /// Which token the listener saw named; resolved inside the recording transaction.
    pub token: TokenRef,
    pub time_us: Micros,
    pub channel: Channel,
    pub src_ip: String,
    pub src_port: u16,
    /// The listener's address as the client reached it (its public address when the
    /// listener does not know a better one).
    pub dst_ip: String,
    pub dst_port: u16,
    /// Channel- and kind-specific details (headers, query name, decoded data...): shown to
    /// users and put into alerts.
    pub data: Value,
    /// What the listener keeps for itself: stored with the hit, never shown and never part of
    /// an alert or of [`Hit::data`]. Its [`AMEND_GUARD`] entry is the secret a later amendment
    /// of the hit must bring (the browser scanner's nonce).
    pub private: Option<Value>,
    /// What "the same trigger again" is, as the listener sees it: hits of one token from one
    /// source with the same group (or both none) join one open incident within the grouping
    /// window ([`crate::noise`]). None: the source alone decides (an HTTP page loaded twice);
    /// DNS names the data decoded from the name, so a resolver's A and AAAA lookups of one
    /// name group, two payloads through one resolver do not.
    pub group: Option<String>,
}

/// Longest text of a hit's data that is stored, in bytes (cut at a character boundary).
pub const MAX_HIT_FIELD: usize = 2048;
/// Most text a hit's data keeps in all (keys and values), in bytes.
pub const MAX_HIT_TEXT: usize = 16 * 1024;
/// Most entries of one object or list in a hit's data, and how deep they nest.
const MAX_HIT_ENTRIES: usize = 64;
const MAX_HIT_DEPTH: usize = 6;

impl NewHit {
    /// The hit with its data bounded, whatever the listener or kind put there: every text cut
    /// to [`MAX_HIT_FIELD`], at most [`MAX_HIT_TEXT`] of text in all (later fields get less),
    /// at most 64 entries an object or list and 6 levels deep. The address fields come from
    /// the socket and are short already. Applied once, where every listener hands hits over,
    /// so no field of any listener (the HTTP method was one) is stored uncut.
    /// The private data is bounded the same way, with a budget of its own, and the group is
    /// cut to [`MAX_HIT_FIELD`] (it is stored only as a hash, but is held until then).
    pub fn bounded(mut self) -> NewHit {
        let mut budget = MAX_HIT_TEXT;
        bound_value(&mut self.data, 0, &mut budget);
        if let Some(private) = &mut self.private {
            let mut budget = MAX_HIT_TEXT;
            bound_value(private, 0, &mut budget);
        }
        if let Some(group) = &mut self.group {
            cut_text(group, MAX_HIT_FIELD);
        }
        self
    }
}

fn cut_text(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn bound_value(v: &mut Value, depth: usize, budget: &mut usize) {
    match v {
        Value::String(s) => {
            cut_text(s, MAX_HIT_FIELD.min(*budget));
            *budget -= s.len();
        }
        Value::Array(items) => {
            if depth >= MAX_HIT_DEPTH {
                items.clear();
            }
            items.truncate(MAX_HIT_ENTRIES);
            for item in items.iter_mut() {
                bound_value(item, depth + 1, budget);
            }
        }
        Value::Object(map) => {
            if depth >= MAX_HIT_DEPTH {
                map.clear();
            }
            // Plain values first, then nested ones, so a flood of headers cannot crowd out the
            // method or the path; an entry whose key no longer fits is dropped.
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().take(MAX_HIT_ENTRIES).collect();
            let (plain, nested): (Vec<_>, Vec<_>) =
                entries.into_iter().partition(|(_, v)| !matches!(v, Value::Array(_) | Value::Object(_)));
            for (key, mut value) in plain.into_iter().chain(nested) {
                if key.len() > MAX_HIT_FIELD || key.len() > *budget {
                    continue;
                }
                *budget -= key.len();
                bound_value(&mut value, depth + 1, budget);
                map.insert(key, value);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// What became of a stored hit's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// A new incident, and its alerts are in the outbox.
    Alerted,
    /// A new incident, but the token's cooldown or rate limit kept it silent.
    Throttled,
    /// A repeat from the same source within the grouping window: a further event of the open
    /// incident, no new alert.
    Grouped,
    /// Kept, but no incident and no alert (ignore lists, a kind's own verdict, a repeat of a
    /// trigger already alerted). The hit's data says why under `ignored`.
    Ignored,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Alerted => "alerted",
            AlertStatus::Throttled => "throttled",
            AlertStatus::Grouped => "grouped",
            AlertStatus::Ignored => "ignored",
        }
    }
    pub fn parse(s: &str) -> Option<AlertStatus> {
        match s {
            "alerted" => Some(AlertStatus::Alerted),
            "throttled" => Some(AlertStatus::Throttled),
            "grouped" => Some(AlertStatus::Grouped),
            "ignored" => Some(AlertStatus::Ignored),
            _ => None,
        }
    }
}

/// What recording a hit did.
#[derive(Debug, Clone, PartialEq)]
pub enum HitOutcome {
    /// Stored. `incident_id` is None when the hit was ignored (kept, no incident); `status`
    /// says whether it alerted. The token is returned so the listener can shape its answer;
    /// its `triggered_count` is not filled in (0) on this path.
    Recorded { hit_id: i64, incident_id: Option<i64>, status: AlertStatus, token: Token },
    /// The token exists and is enabled, but its kind judged the request no hit at all (for
    /// example a cloned-css token loaded by the expected site): nothing stored.
    Dropped { token: Token },
    /// No such token, or it is disabled: nothing stored.
    Unknown,
}

/// A kind's verdict on a would-be hit, made inside the recording transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// An alert: store the hit with `extra` merged into its data, as a new incident — unless
    /// a hit of the same token with the same `dedupe_key` exists, then it is stored ignored.
    Alert { extra: serde_json::Map<String, Value>, dedupe_key: Option<String> },
    /// Store the hit, but raise no incident (e.g. an encoding kind's lookup without data).
    Ignore { reason: String },
    /// An event its source may deliver more than once (a CloudTrail record, by its eventID):
    /// a repeat of an `event_id` already stored for the token stores nothing
    /// ([`HitOutcome::Dropped`]); otherwise it is recorded as an alert (like `Alert`, with
    /// `extra` merged into its data), or, with `ignore: Some(reason)`, kept without an
    /// incident (an inactive or expired honey key). Event ids live apart from `Alert`'s
    /// dedupe keys, so the two never match each other. An empty `event_id` names no event:
    /// such a hit is never taken for a repeat.
    Once { event_id: String, extra: serde_json::Map<String, Value>, ignore: Option<String> },
    /// Store nothing.
    Drop,
}

impl Judgement {
    pub fn alert() -> Judgement {
        Judgement::Alert { extra: serde_json::Map::new(), dedupe_key: None }
    }
}

/// A deleted token's outside resources (an IAM user, ...) still to be undone by its kind's
/// [`retire`](crate::kinds::Kind::retire): queued in the transaction that deleted the token,
/// retried with backoff until it succeeds, and listed for the operator meanwhile.
#[derive(Debug, Clone, PartialEq)]
pub struct Retirement {
    pub id: i64,
    pub token_id: String,
    pub kind: String,
    /// The token's settings (its `params`) when it was deleted.
    pub params: Value,
    /// When the token was deleted.
    pub created_us: Micros,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Why the latest attempt failed.
    pub last_error: Option<String>,
}

/// A file that belongs to a token (an uploaded image, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFile {
    pub name: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

/// One stored hit (an incident's event).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: i64,
    pub incident_id: i64,
    pub token_id: String,
    pub time_us: Micros,
    pub channel: Channel,
    pub src_ip: String,
    pub src_port: u16,
    pub dst_ip: String,
    pub dst_port: u16,
    pub data: Value,
    pub alert_status: AlertStatus,
}

/// An incident groups the hits of one trigger. Kind and memo are the token's at the time of
/// the first hit, so an incident still reads right after its token is changed or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: i64,
    pub token_id: String,
    pub flock_id: String,
    pub kind: String,
    pub memo: String,
    pub channel: Channel,
    pub src_ip: String,
    /// The first hit's source port and destination.
    pub src_port: u16,
    pub dst_ip: String,
    pub dst_port: u16,
    pub created_us: Micros,
    pub updated_us: Micros,
    /// Its place in the installation-wide change sequence: it gets a new, higher value when
    /// it is created, when a repeat joins it, and when it is acknowledged or unacknowledged.
    pub updated_id: i64,
    /// Another stable name of the incident (see [`incident_hash`]).
    pub hash_id: String,
    pub acknowledged: bool,
    /// False when the token's cooldown or rate limit kept the incident silent.
    pub alerted: bool,
    /// Whether one of its alerts has been delivered.
    pub notified: bool,
    /// Its stored hits, oldest first: all of them, or the first `event_limit`.
    pub events: Vec<Hit>,
    /// How many hits it has stored in all (more than `events` holds when they were limited).
    pub events_count: i64,
}

/// An incident's hash id: 32 hex characters that name it as stably as its id does. Derived
/// from the id (a check, then the id), so it needs no column, index or random draw of its own;
/// [`incident_by_hash`] reads it back. It grants nothing the id does not.
pub fn incident_hash(id: i64) -> String {
    use sha2::Digest;
    let check = sha2::Sha256::digest(format!("trapline incident {id}").as_bytes());
    format!("{}{:016x}", hex::encode(&check[..8]), id)
}

/// The incident a hash id names, if it is one.
pub fn incident_by_hash(hash: &str) -> Option<i64> {
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 32 || !hash.is_ascii() {
        return None;
    }
    let id = i64::from_str_radix(&hash[16..], 16).ok()?;
    (id > 0 && incident_hash(id) == hash).then_some(id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn hit(data: Value) -> NewHit {
        NewHit {
            token: TokenRef::Id("t".into()),
            time_us: 1,
            channel: Channel::Http,
            src_ip: "127.0.0.1".into(),
            src_port: 1,
            dst_ip: "127.0.0.1".into(),
            dst_port: 2,
            data,
            private: None,
            group: None,
        }
    }

    #[test]
    fn a_hit_keeps_bounded_data() {
        // the audit's 300 KB method, a multi-byte text cut inside a character, many headers
        let many: serde_json::Map<String, Value> =
            (0..500).map(|i| (format!("h{i}"), Value::String("v".repeat(1000)))).collect();
        let data = json!({ "method": "A".repeat(300_000), "ua": "é".repeat(5000), "headers": many });
        let got = hit(data).bounded().data;
        assert_eq!(got["method"].as_str().unwrap().len(), MAX_HIT_FIELD);
        let ua = got["ua"].as_str().unwrap();
        assert!(ua.len() <= MAX_HIT_FIELD && ua.len() >= MAX_HIT_FIELD - 1 && ua.chars().all(|c| c == 'é'));
        assert!(got["headers"].as_object().unwrap().len() <= 64);
        let text = serde_json::to_string(&got).unwrap();
        assert!(text.len() < MAX_HIT_TEXT + 64 * 8, "{}", text.len());
        // small data is untouched, numbers and nesting too
        let small = json!({ "path": "/x", "n": 5, "ok": true, "list": [1, "a", { "b": null }] });
        assert_eq!(hit(small.clone()).bounded().data, small);
        // deep nesting stops
        let mut deep = json!("leaf");
        for _ in 0..50 {
            deep = json!([deep]);
        }
        let text = serde_json::to_string(&hit(deep).bounded().data).unwrap();
        assert!(text.len() < 20, "{text}");
    }

    #[test]
    fn private_data_and_group_are_bounded_too() {
        let big = json!({ AMEND_GUARD: "n".repeat(300_000), "more": "x".repeat(100) });
        let h = NewHit { private: Some(big), group: Some("g".repeat(300_000)), ..hit(json!({})) }.bounded();
        assert_eq!(h.private.as_ref().unwrap()[AMEND_GUARD].as_str().unwrap().len(), MAX_HIT_FIELD);
        assert_eq!(h.private.as_ref().unwrap()["more"].as_str().unwrap().len(), 100);
        assert_eq!(h.group.unwrap().len(), MAX_HIT_FIELD);
        assert_eq!(hit(json!({})).bounded().private, None, "no private data stays none");
    }

    #[test]
    fn channels_name_themselves_and_parse_back() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()), "serde agrees with as_str");
        }
        assert_eq!(Channel::parse("HTTP"), None);
        assert_eq!(Channel::Http.console_logtype_fallback(), 17000);
        assert_eq!(Channel::Dns.console_logtype_fallback(), 16000);
        assert_eq!(Channel::Aws.console_logtype_fallback(), 17000);
        assert_eq!(Channel::parse("aws"), Some(Channel::Aws));
    }

    #[test]
    fn token_refs_print_for_logs() {
        assert_eq!(TokenRef::Id("abc".into()).to_string(), "abc");
        let key = TokenRef::Key(TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: "AKIA1".into() });
        assert_eq!(key.to_string(), "aws-access-key-id:AKIA1");
        assert_eq!(key.id(), None);
        assert_eq!(TokenRef::Id("abc".into()).id(), Some("abc"));
    }

    use super::*;

    #[test]
    fn incident_hashes_name_their_incident_only() {
        let h = incident_hash(42);
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(incident_by_hash(&h), Some(42));
        assert_eq!(incident_by_hash(&h.to_uppercase()), Some(42));
        assert_ne!(incident_hash(43), h);
        let forged = format!("{}{:016x}", &h[..16], 43);
        assert_eq!(incident_by_hash(&forged), None, "the check must fit the id");
        for junk in ["", "x", &h[..31], "ééééééééééééééééé", &format!("{h}0")] {
            assert_eq!(incident_by_hash(junk), None, "{junk}");
        }
    }

    #[test]
    fn search_words_split_and_fold() {
        assert_eq!(search_words("Payroll share (HR-2024) ÉCOLE"), ["payroll", "share", "hr", "2024", "école"]);
        assert!(search_words(" ,.; ").is_empty());
    }
}

/// The order of an incident listing, and so what its page key is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IncidentOrder {
    /// Newest first; the key is (created_us, id).
    #[default]
    Newest,
    /// Oldest change first; the key is (updated_id, id). Incremental pollers read this way.
    Updated,
}

/// Which incidents an incident query or bulk action touches.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub id: Option<i64>,
    pub hash_id: Option<String>,
    pub token_id: Option<String>,
    pub src_ip: Option<String>,
    /// Restrict to one flock (keys scoped to a flock always set this).
    pub flock_id: Option<String>,
    pub acknowledged: Option<bool>,
    pub created_before_us: Option<Micros>,
    pub created_after_us: Option<Micros>,
    /// Only these kinds (an empty list matches nothing).
    pub kinds: Option<Vec<String>>,
    /// Case-insensitive text that the incident's memo, source, token id or kind must contain
    /// — or its kind must be one of `text_kinds` (the kinds whose human name contains it).
    pub text: Option<String>,
    pub text_kinds: Vec<String>,
    /// Only incidents whose `updated_id` is greater.
    pub updated_after: Option<i64>,
    /// Listing only: order, where the page starts, most incidents returned.
    pub order: IncidentOrder,
    pub start: PageStart<(i64, i64)>,
    pub limit: Option<i64>,
    /// Most events returned per incident, earliest first (listing only; not a filter).
    pub event_limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Analyst,
    ReadOnly,
    /// Create and download tokens in one flock, nothing else (enrolled hosts).
    Deploy,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::ReadOnly => "read-only",
            Role::Deploy => "deploy",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "analyst" => Some(Role::Analyst),
            "read-only" => Some(Role::ReadOnly),
            "deploy" => Some(Role::Deploy),
            _ => None,
        }
    }
}

/// An API key as stored: the secret itself is never kept, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub key_id: String,
    pub secret_hash: String,
    pub role: Role,
    pub flock_id: Option<String>,
    pub active: bool,
    /// Micros; 0 = never expires.
    pub expire_us: Micros,
    pub description: String,
    pub created_us: Micros,
    pub last_used_us: Option<Micros>,
    /// Who made it: a key id, `cli`, `bootstrap` or `provision`.
    pub created_by: String,
    /// Name/value pairs its creator attached (Conjur host annotations).
    pub annotations: Vec<(String, String)>,
}

/// What may change on an API key.
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub expire_us: Option<Micros>,
    pub description: Option<String>,
}

/// A factory token: one concept behind Canary factory auth strings, Falcon installation
/// tokens and Conjur host-factory tokens. Its value is shown once and stored hashed. It may
/// create and download tokens in its flock (or enrol a host there), nothing else.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoryToken {
    /// 32 lowercase hex characters.
    pub id: String,
    pub value_hash: String,
    pub label: String,
    pub flock_id: String,
    pub created_us: Micros,
    pub expires_us: Option<Micros>,
    pub revoked_us: Option<Micros>,
    pub last_used_us: Option<Micros>,
    /// Networks the token may be used from (empty: anywhere), as `a.b.c.d/n` text.
    pub cidrs: Vec<String>,
    pub use_count: i64,
    /// Key id (or `cli`) of whoever made it.
    pub created_by: String,
    /// The value, encrypted (see [`crate::sealed`]); None for tokens made before values were
    /// kept.
    pub value_sealed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactoryStatus {
    Valid,
    Expired,
    Revoked,
}

impl FactoryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FactoryStatus::Valid => "valid",
            FactoryStatus::Expired => "expired",
            FactoryStatus::Revoked => "revoked",
        }
    }
}

impl FactoryToken {
    pub fn status(&self, now: Micros) -> FactoryStatus {
        if self.revoked_us.is_some() {
            FactoryStatus::Revoked
        } else if self.expires_us.is_some_and(|e| e <= now) {
            FactoryStatus::Expired
        } else {
            FactoryStatus::Valid
        }
    }
}

/// What may change on a factory token (`Some(None)` clears an expiry or a revocation).
#[derive(Debug, Clone, Default)]
pub struct FactoryChange {
    pub label: Option<String>,
    pub expires_us: Option<Option<Micros>>,
    pub revoked_us: Option<Option<Micros>>,
}

/// An alert to send: where (an output description) and what. The store adds the ids and
/// the idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub output: Value,
    pub payload: Value,
}

/// An alert output configured through the management API: for every token (`flock_id`
/// None) or for the tokens of one flock.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOutput {
    /// `out_` and 16 hex characters.
    pub id: String,
    pub flock_id: Option<String>,
    /// The output description (see [`crate::outputs`]).
    pub output: Value,
    pub created_us: Micros,
    pub created_by: String,
}

/// One alert delivery in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub incident_id: i64,
    pub hit_id: i64,
    pub token_id: String,
    pub output: Value,
    pub idempotency_key: String,
    pub payload: Value,
    pub created_us: Micros,
    pub next_attempt_us: Micros,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub delivered_us: Option<Micros>,
    pub gave_up_us: Option<Micros>,
}

/// How one delivery attempt of an outbox alert ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOutcome {
    Delivered {
        when: Micros,
    },
    /// Retried at `next_attempt_us`, unless `gave_up_us` is set.
    Failed {
        error: String,
        next_attempt_us: Micros,
        gave_up_us: Option<Micros>,
    },
}

/// A finished delivery attempt, for the outbox's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertResult {
    pub id: i64,
    /// Attempts so far, this one included.
    pub attempts: i64,
    pub outcome: AlertOutcome,
}

/// A filtered, sorted, paged query (Falcon's FQL queries).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Option<crate::fql::Expr>,
    /// `field.asc`, `field.desc` or `field|asc`; None: newest first.
    pub sort: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

/// An audit-log entry with its id, as an audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub entry: AuditEntry,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub time_us: Micros,
    /// Key id, `provision`, `cli`, or `anonymous`.
    pub actor: String,
    /// e.g. `token_create`, `flock_delete`, `auth_failed`.
    pub action: String,
    pub target: String,
    pub description: String,
    pub src_ip: String,
    /// Which API the action came through (`console`, `cli`, ...).
    pub dialect: String,
}

/// How a trigger key names its token: what kind of credential a listener saw.
///
/// Some kinds are not fired by a request that carries the token's id but by a credential the
/// kind minted (a WireGuard peer's public key, a client certificate, an AWS access key id);
/// their listeners find the token by that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// A WireGuard peer's public key (base64), seen in a handshake.
    WireGuardPublicKey,
    /// The SHA-256 of a client certificate (hex), seen in a TLS handshake.
    CertificateSha256,
    /// An AWS access key id (`AKIA…`), seen in CloudTrail.
    AwsAccessKeyId,
    /// An S3 bucket's name, seen in its server access logs (and in CloudTrail data events).
    S3Bucket,
}

impl KeyScheme {
    /// The scheme's stable name, as the key index (`token_keys`) stores it beside the key.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScheme::WireGuardPublicKey => "wireguard-public-key",
            KeyScheme::CertificateSha256 => "certificate-sha256",
            KeyScheme::AwsAccessKeyId => "aws-access-key-id",
            KeyScheme::S3Bucket => "aws-s3-bucket",
        }
    }
}

/// A credential minted for one token, by which a listener will recognise it
/// ([`crate::kinds::Created::keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerKey {
    pub scheme: KeyScheme,
    pub value: String,
}
