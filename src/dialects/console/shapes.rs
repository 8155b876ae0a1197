//! How the Console dialect shows tokens, incidents and their events: field names, the types
//! its documentation gives (most scalars as strings), its time formats, and its log types.
//!
//! Where the documentation and canarytools 1.2.3 disagree, the client wins: event values stay
//! strings (or objects), because canarytools' `Event.__str__` measures every value with
//! `len()`; the documentation shows `dst_port` as a number there.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};

use crate::kinds::{self, Site};
use crate::model::*;

/// The incident summary of every token hit (canarytools picks its incident class by it).
pub const SUMMARY: &str = "Canarytoken triggered";

/// The Console's log type of a kind: 16xxx for kinds that fire over DNS, 17xxx over HTTP, with
/// the codes the Console gives the kinds it documents.
pub fn logtype(kind: &str) -> u32 {
    match kind {
        "http" => 17000,
        "web-image" => 17001,
        "cloned-web" => 17003,
        "doc-msword" => 17004,
        "aws-s3" => 17005,
        "signed-exe" => 17008,
        "qr-code" => 17009,
        "aws-id" => 17012,
        "fast-redirect" => 17016,
        "slow-redirect" => 17017,
        "slack-api" => 17020,
        "wireguard" => 17022,
        "doc-msexcel" => 17023,
        "azure-id" => 17024,
        "cloned-css" => 17025,
        "credit-card" => 17027,
        "pwa" => 17028,
        "mysql-dump" => 17029,
        "windows-dir" => 16006,
        "pdf-acrobat-reader" => 16008,
        "msword-macro" => 16009,
        "msexcel-macro" => 16010,
        "sensitive-cmd" => 16011,
        other => kinds::find(other).map_or(16000, |k| k.channel().console_logtype_fallback()),
    }
}

/// The kinds whose log type is one of `codes`.
pub fn kinds_with_logtypes(codes: &[u32]) -> Vec<String> {
    kinds::KINDS.iter().filter(|k| codes.contains(&logtype(k.name()))).map(|k| k.name().to_string()).collect()
}

/// How times are written in one answer: in the caller's `tz` (UTC when none is given).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub tz: Tz,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { tz: Tz::UTC }
    }
}

fn utc(us: Micros) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl Clock {
    /// `2020-04-07 08:53:43 UTC+0000` (the `_std` fields), in the answer's zone.
    pub fn std(&self, us: Micros) -> String {
        utc(us).with_timezone(&self.tz).format("%Y-%m-%d %H:%M:%S %Z%z").to_string()
    }
    /// `2020-04-07 08:53:43 (UTC)`.
    pub fn local(&self, us: Micros) -> String {
        utc(us).with_timezone(&self.tz).format("%Y-%m-%d %H:%M:%S (%Z)").to_string()
    }
}

/// `"1586161315.087693"`
pub fn epoch_text(us: Micros) -> String {
    format!("{}.{:06}", us.div_euclid(1_000_000), us.rem_euclid(1_000_000))
}

/// Whole seconds since the epoch.
pub fn secs(us: Micros) -> i64 {
    us.div_euclid(1_000_000)
}

/// `Tue, 07 Apr 2020 08:53:43 GMT` (RFC 1123).
pub fn http_date(us: Micros) -> String {
    utc(us).format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn true_false(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

pub fn incident_key(id: i64) -> String {
    format!("incident:canarytoken:{id}")
}

/// A hit's data fields, under the fields already set. `_`-prefixed fields are the listeners'
/// own bookkeeping (the scanner nonce) and stay out.
pub fn add_hit_data(m: &mut Map<String, Value>, data: &Value) {
    if let Value::Object(data) = data {
        for (k, v) in data.iter().filter(|(k, _)| !k.starts_with('_')) {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// A token object. `extra` adds the fields only some listings carry (`node_id` and
/// `unacked_alert_count` in searches).
pub fn token_json(cx: &kinds::ViewContext<'_>, t: &Token, with_unacked: bool) -> Value {
    let site = cx.site;
    let mut m = Map::new();
    m.insert("canarytoken".into(), json!(t.id));
    m.insert("node_id".into(), json!(t.id));
    m.insert("kind".into(), json!(t.kind));
    m.insert("memo".into(), json!(t.memo));
    m.insert("flock_id".into(), json!(t.flock_id));
    m.insert("enabled".into(), json!(t.enabled));
    m.insert("created".into(), json!(epoch_text(t.created_us)));
    m.insert("created_printable".into(), json!(utc(t.created_us).format("%Y-%m-%d %H:%M:%S (UTC)").to_string()));
    m.insert("triggered_count".into(), json!(t.triggered_count));
    m.insert("updated_id".into(), json!(t.updated_id));
    m.insert("url".into(), json!(site.url(&t.id)));
    m.insert("hostname".into(), json!(site.hostname(&t.id)));
    m.insert("key".into(), json!(format!("canarydrop:{}", t.id)));
    if with_unacked {
        m.insert("unacked_alert_count".into(), json!(t.unacked_count));
    }
    if let Some(u) = &t.alert_webhook_url {
        m.insert("alert_webhook_url".into(), json!(u));
    }
    if let Some(e) = &t.alert_email {
        m.insert("alert_email".into(), json!(e));
    }
    if let Some(c) = t.alert_cooldown_secs {
        m.insert("alert_cooldown".into(), json!(c));
    }
    if let Some(n) = t.alert_max_per_hour {
        m.insert("alert_max_per_hour".into(), json!(n));
    }
    if !t.ignore_sources.is_empty() {
        m.insert("ignore_sources".into(), json!(t.ignore_sources.join(",")));
    }
    if let Some(kind) = kinds::find(&t.kind) {
        m.insert("kind_description".into(), json!(kind.human_name()));
        let view = kind.view(t, cx);
        m.extend(view.fields.into_iter().map(|(name, value)| (name.to_string(), value)));
        if !view.renders.is_empty() {
            let renders = view.renders.into_iter().map(|(name, text)| (name.to_string(), Value::String(text)));
            m.insert("renders".into(), Value::Object(renders.collect()));
        }
    }
    Value::Object(m)
}

/// A stored hit as `canarytoken/hits` lists it, with what became of its alert.
pub fn hit_json(h: &Hit) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(h.id));
    m.insert("incident_id".into(), if h.incident_id > 0 { json!(incident_key(h.incident_id)) } else { Value::Null });
    m.insert("alert_status".into(), json!(h.alert_status.as_str()));
    m.insert("type".into(), json!(h.channel.as_str()));
    m.insert("src_host".into(), json!(h.src_ip));
    m.insert("src_port".into(), json!(h.src_port));
    m.insert("timestamp".into(), json!(epoch_text(h.time_us)));
    add_hit_data(&mut m, &h.data);
    Value::Object(m)
}

/// One event of an incident: what one hit saw. `type` is the token's kind and `channel` the
/// listener it came through; HTTP events name the `url` requested, DNS events the `hostname`.
fn event_json(i: &Incident, h: &Hit, site: &Site, clock: &Clock) -> Value {
    let mut m = Map::new();
    // canarytools keeps only a fixed set of incident attributes (no memo), but every event
    // attribute: the memo rides on each event so its users can see where the token was placed.
    m.insert("memo".into(), json!(i.memo));
    m.insert("kind".into(), json!(i.kind));
    m.insert("canarytoken".into(), json!(h.token_id));
    m.insert("type".into(), json!(i.kind));
    m.insert("channel".into(), json!(h.channel.as_str()));
    m.insert("src_host".into(), json!(h.src_ip));
    m.insert("src_port".into(), json!(h.src_port.to_string()));
    m.insert("dst_host".into(), json!(h.dst_ip));
    m.insert("dst_port".into(), json!(h.dst_port.to_string()));
    m.insert("timestamp".into(), json!(secs(h.time_us)));
    m.insert("timestamp_std".into(), json!(clock.std(h.time_us)));
    m.insert("alert_status".into(), json!(h.alert_status.as_str()));
    match h.channel {
        Channel::Http => {
            let path = h.data.get("path").and_then(Value::as_str).unwrap_or("/");
            let query = h.data.get("query").and_then(Value::as_str).unwrap_or("");
            let q = if query.is_empty() { String::new() } else { format!("?{query}") };
            m.insert("url".into(), json!(format!("{}{path}{q}", site.public_url)));
        }
        Channel::Dns => {
            if let Some(name) = h.data.get("query_name") {
                m.insert("hostname".into(), name.clone());
            }
        }
        // Their hit data (the mail envelope; the AWS event's name, key and agent) says it all.
        Channel::Smtp | Channel::Aws => {}
    }
    add_hit_data(&mut m, &h.data);
    Value::Object(m)
}

/// The details of an incident, as the feeds' `description` object holds them (and, flat, as
/// `incident/fetch` shows them).
fn details(i: &Incident, clock: &Clock) -> Map<String, Value> {
    let first = i.events.first();
    let mut d = Map::new();
    d.insert("id".into(), json!(incident_key(i.id)));
    d.insert("summary".into(), json!(SUMMARY));
    d.insert("description".into(), json!(SUMMARY));
    d.insert("acknowledged".into(), json!(true_false(i.acknowledged)));
    d.insert("created".into(), json!(secs(i.created_us).to_string()));
    d.insert("created_std".into(), json!(clock.std(i.created_us)));
    d.insert("local_time".into(), json!(clock.local(i.created_us)));
    d.insert("updated_std".into(), json!(clock.std(i.updated_us)));
    d.insert("src_host".into(), json!(i.src_ip));
    d.insert("src_port".into(), json!(first.map_or(i.src_port, |h| h.src_port).to_string()));
    d.insert("dst_host".into(), json!(i.dst_ip));
    d.insert("dst_port".into(), json!(i.dst_port.to_string()));
    d.insert("logtype".into(), json!(logtype(&i.kind).to_string()));
    d.insert("memo".into(), json!(i.memo));
    d.insert("name".into(), json!("N/A"));
    d.insert("canarytoken".into(), json!(i.token_id));
    d.insert("node_id".into(), json!(i.token_id));
    d.insert("kind".into(), json!(i.kind));
    d.insert("flock_id".into(), json!(i.flock_id));
    d.insert("events_count".into(), json!(i.events_count.to_string()));
    d.insert("alerted".into(), json!(true_false(i.alerted)));
    d.insert("notified".into(), json!(true_false(i.notified)));
    d
}

/// The fields every incident carries at its top level.
fn identity(i: &Incident, clock: &Clock, m: &mut Map<String, Value>) {
    m.insert("id".into(), json!(incident_key(i.id)));
    m.insert("hash_id".into(), json!(i.hash_id));
    m.insert("summary".into(), json!(SUMMARY));
    m.insert("updated".into(), json!(http_date(i.updated_us)));
    m.insert("updated_id".into(), json!(i.updated_id));
    m.insert("updated_std".into(), json!(clock.std(i.updated_us)));
    m.insert("updated_time".into(), json!(secs(i.updated_us).to_string()));
}

/// An incident in a feed: `description` is an object with the details and the events, as the
/// documentation shows; the details are also at the top level, where canarytools reads them,
/// and so are the events.
pub fn feed_incident(i: &Incident, site: &Site, clock: &Clock) -> Value {
    let events: Vec<Value> = i.events.iter().map(|h| event_json(i, h, site, clock)).collect();
    let mut d = details(i, clock);
    let mut top = d.clone();
    top.remove("description");
    d.insert("events".into(), Value::Array(events.clone()));
    identity(i, clock, &mut top);
    top.insert("description".into(), Value::Object(d));
    top.insert("events".into(), Value::Array(events));
    Value::Object(top)
}

/// An incident as `incident/fetch` answers it: flat, `description` the summary text.
pub fn fetched_incident(i: &Incident, site: &Site, clock: &Clock) -> Value {
    let mut d = details(i, clock);
    identity(i, clock, &mut d);
    let events: Vec<Value> = i.events.iter().map(|h| event_json(i, h, site, clock)).collect();
    d.insert("events".into(), Value::Array(events));
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_console_formats() {
        let us = 1_586_161_315_087_693;
        let utc = Clock::default();
        assert_eq!(epoch_text(us), "1586161315.087693");
        assert_eq!(utc.std(us), "2020-04-06 08:21:55 UTC+0000");
        assert_eq!(utc.local(us), "2020-04-06 08:21:55 (UTC)");
        assert_eq!(http_date(us), "Mon, 06 Apr 2020 08:21:55 GMT");
        let london = Clock { tz: "Europe/London".parse().unwrap() };
        assert_eq!(london.std(us), "2020-04-06 09:21:55 BST+0100");
        assert_eq!(london.std(1_577_880_000_000_000), "2020-01-01 12:00:00 GMT+0000");
    }

    #[test]
    fn logtypes_follow_the_kind() {
        assert_eq!(logtype("http"), 17000);
        assert_eq!(logtype("fast-redirect"), 17016);
        assert_eq!(logtype("windows-dir"), 16006);
        assert_eq!(logtype("svn"), 16000);
        assert_eq!(logtype("cloned-css"), 17025);
        assert_eq!(logtype("no-such-kind"), 16000);
        let mut k = kinds_with_logtypes(&[16000]);
        k.sort();
        assert_eq!(k, ["dns", "log4shell", "smtp", "sql", "svn"]);
        assert_eq!(kinds_with_logtypes(&[17016, 17017]).len(), 2);
        assert!(kinds_with_logtypes(&[1]).is_empty());
    }
}
