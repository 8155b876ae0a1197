//! What a hit becomes: the recording pipeline, one policy for every store.
//!
//! For each hit of a batch, inside the batch's one write transaction: **resolve** its token
//! (by id, or by a trigger key through the key index; unknown or disabled: nothing stored) → **judge** it ([`HitRules::judge`]: drop, ignore,
//! alert, or alert once per event id) → **dedupe** (a kind's "same trigger again" key already
//! stored: kept, ignored; an event id already stored: nothing stored) →
//! **group or throttle** by the noise rules ([`crate::noise`]: join the source's open incident,
//! or open a new one that alerts unless the cooldown or rate limit holds it back) → store the
//! **hit** → put its **alerts** into the outbox ([`HitRules::alerter`]), in the same transaction,
//! so nothing durable can lose its alert.
//!
//! The statements are the store's: it implements the narrow [`HitTx`] over its transaction
//! and only executes them. The tests below run the policy over an in-memory [`HitTx`].

use serde_json::Value;

use crate::model::*;
use crate::noise::{self, AlertHistory, NoiseRules};

/// What starts the stored dedupe key of a [`Judgement::Once`] event: `event:` and its id.
/// A kind's [`Judgement::Alert`] dedupe key that happens to start so is stored with
/// `alert:` before it, so the two kinds of key never match each other (and the
/// store may hold event keys unique).
pub const EVENT_KEY_PREFIX: &str = "event:";

/// Put before an `Alert` dedupe key that starts with [`EVENT_KEY_PREFIX`].
const ALERT_KEY_ESCAPE: &str = "alert:";

/// The stored dedupe key of an event id.
pub fn event_key(event_id: &str) -> String {
    format!("{EVENT_KEY_PREFIX}{event_id}")
}

/// The stored form of a kind's `Alert` dedupe key (itself, unless it looks like an event key).
fn alert_key(key: String) -> String {
    if key.starts_with(EVENT_KEY_PREFIX) {
        format!("{ALERT_KEY_ESCAPE}{key}")
    } else {
        key
    }
}

/// Decides, for a token and a would-be hit, what to store. Pure: no I/O.
pub type Judge = dyn Fn(&Token, &NewHit) -> Judgement + Send + Sync;

/// The alerts an alerting hit raises (one per output), given the outputs configured through
/// the management API. Pure: no I/O.
pub type Alerter = dyn Fn(&Token, &NewHit, &[AlertOutput]) -> Vec<NewAlert> + Send + Sync;

/// Everything [`record`] needs to decide what a hit becomes.
pub struct HitRules {
    pub judge: Box<Judge>,
    pub alerter: Box<Alerter>,
    pub noise: NoiseRules,
    /// Starts every idempotency key (the installation id), so that receivers shared by several
    /// installations never see two alerts with one key.
    pub key_prefix: String,
}

impl HitRules {
    /// The given judge and alerter with the default noise rules and no key prefix.
    pub fn new(
        judge: impl Fn(&Token, &NewHit) -> Judgement + Send + Sync + 'static,
        alerter: impl Fn(&Token, &NewHit, &[AlertOutput]) -> Vec<NewAlert> + Send + Sync + 'static,
    ) -> HitRules {
        HitRules {
            judge: Box::new(judge),
            alerter: Box::new(alerter),
            noise: NoiseRules::default(),
            key_prefix: String::new(),
        }
    }

    pub fn with_noise(mut self, noise: NoiseRules) -> HitRules {
        self.noise = noise;
        self
    }

    pub fn with_key_prefix(mut self, prefix: &str) -> HitRules {
        self.key_prefix = prefix.to_string();
        self
    }
}

/// A hit as it is to be stored (its private data, [`NewHit::private`], apart from `data`).
#[derive(Debug)]
pub struct HitRow<'a> {
    pub hit: &'a NewHit,
    /// The token the hit resolved to (the hit may have named it by a key).
    pub token_id: &'a str,
    /// None: no incident (ignored).
    pub incident_id: Option<i64>,
    /// The hit's data with what the pipeline added (the kind's extra fields, why it was
    /// ignored or throttled).
    pub data: &'a Value,
    pub dedupe_key: Option<&'a str>,
    pub status: AlertStatus,
}

/// The statements the pipeline runs, all inside one write transaction that the store commits
/// after [`record`] returns.
#[allow(async_fn_in_trait, reason = "called only through `record` on a concrete store type, where Send is checked")]
pub trait HitTx {
    type Error;
    /// The token, read so that a concurrent delete waits for this transaction (no hit count).
    async fn token_for_update(&mut self, token_id: &str) -> Result<Option<Token>, Self::Error>;
    /// The id of the token a trigger key names in the key index, if any.
    async fn token_of_key(&mut self, key: &TriggerKey) -> Result<Option<String>, Self::Error>;
    /// Whether a hit of the token with this dedupe key is stored already.
    async fn dedupe_seen(&mut self, token_id: &str, dedupe_key: &str) -> Result<bool, Self::Error>;
    /// The newest unacknowledged incident of the token from `src_ip` with `group_key` whose
    /// last hit is at or after `since_us`.
    async fn open_incident(
        &mut self,
        token_id: &str,
        src_ip: &str,
        group_key: &str,
        since_us: Micros,
    ) -> Result<Option<i64>, Self::Error>;
    /// Adds a hit at `time_us` to an open incident (its last-hit and updated times move on).
    async fn join_incident(&mut self, incident_id: i64, time_us: Micros) -> Result<(), Self::Error>;
    /// When the token's latest alerting incident began.
    async fn last_alert_us(&mut self, token_id: &str) -> Result<Option<Micros>, Self::Error>;
    /// How many alerting incidents of the token began after `since_us`.
    async fn alerts_since(&mut self, token_id: &str, since_us: Micros) -> Result<i64, Self::Error>;
    /// Opens an incident for the token, begun by `hit`; returns its id.
    async fn insert_incident(
        &mut self,
        token: &Token,
        hit: &NewHit,
        group_key: &str,
        alerted: bool,
    ) -> Result<i64, Self::Error>;
    /// Stores a hit; returns its id.
    async fn insert_hit(&mut self, row: &HitRow<'_>) -> Result<i64, Self::Error>;
    /// The outputs configured through the management API.
    async fn alert_outputs(&mut self) -> Result<Vec<AlertOutput>, Self::Error>;
    /// Puts one alert of a hit into the outbox, under its idempotency key, due at `time_us`.
    async fn insert_alert(
        &mut self,
        incident_id: i64,
        hit_id: i64,
        token_id: &str,
        key: &str,
        alert: &NewAlert,
        time_us: Micros,
    ) -> Result<(), Self::Error>;
}

/// Records a batch of hits through `tx`: one outcome per hit, in order.
pub async fn record<T: HitTx>(tx: &mut T, hits: &[NewHit], rules: &HitRules) -> Result<Vec<HitOutcome>, T::Error> {
    let mut out = Vec::with_capacity(hits.len());
    // The API-configured outputs, read once per batch and only if some hit alerts.
    let mut outputs: Option<Vec<AlertOutput>> = None;
    for h in hits {
        out.push(record_one(tx, h, rules, &mut outputs).await?);
    }
    Ok(out)
}

async fn record_one<T: HitTx>(
    tx: &mut T,
    h: &NewHit,
    rules: &HitRules,
    outputs: &mut Option<Vec<AlertOutput>>,
) -> Result<HitOutcome, T::Error> {
    // Read inside the write transaction, so a token disabled or deleted a moment ago is seen
    // as such (its keys go with it).
    let by_key;
    let token_id = match &h.token {
        TokenRef::Id(id) => id.as_str(),
        TokenRef::Key(key) => match tx.token_of_key(key).await? {
            Some(id) => {
                by_key = id;
                by_key.as_str()
            }
            None => return Ok(HitOutcome::Unknown),
        },
    };
    let token = match tx.token_for_update(token_id).await? {
        Some(t) if t.enabled => t,
        _ => return Ok(HitOutcome::Unknown),
    };
    let mut data = h.data.clone();
    let (status, incident_id, dedupe_key) = match (rules.judge)(&token, h) {
        Judgement::Drop => return Ok(HitOutcome::Dropped { token }),
        Judgement::Ignore { reason } => {
            data["ignored"] = reason.into();
            (AlertStatus::Ignored, None, None)
        }
        Judgement::Alert { extra, dedupe_key } => {
            if let Value::Object(m) = &mut data {
                m.extend(extra);
            }
            let dedupe_key = dedupe_key.map(alert_key);
            let seen = match &dedupe_key {
                Some(k) => tx.dedupe_seen(&token.id, k).await?,
                None => false,
            };
            if seen {
                data["ignored"] = "repeat of a trigger already alerted".into();
                (AlertStatus::Ignored, None, dedupe_key)
            } else {
                let (status, id) = place_in_incident(tx, &rules.noise, &token, h, &mut data).await?;
                (status, Some(id), dedupe_key)
            }
        }
        Judgement::Once { event_id, extra, ignore } => {
            // The key is looked up inside this transaction, so an earlier hit of the same
            // batch counts as much as one committed long ago.
            let key = (!event_id.is_empty()).then(|| event_key(&event_id));
            if let Some(k) = &key {
                if tx.dedupe_seen(&token.id, k).await? {
                    return Ok(HitOutcome::Dropped { token });
                }
            }
            if let Value::Object(m) = &mut data {
                m.extend(extra);
            }
            match ignore {
                Some(reason) => {
                    data["ignored"] = reason.into();
                    (AlertStatus::Ignored, None, key)
                }
                None => {
                    let (status, id) = place_in_incident(tx, &rules.noise, &token, h, &mut data).await?;
                    (status, Some(id), key)
                }
            }
        }
    };
    let row =
        HitRow { hit: h, token_id: &token.id, incident_id, data: &data, dedupe_key: dedupe_key.as_deref(), status };
    let hit_id = tx.insert_hit(&row).await?;
    if let (AlertStatus::Alerted, Some(incident_id)) = (status, incident_id) {
        if outputs.is_none() {
            *outputs = Some(tx.alert_outputs().await?);
        }
        let configured = outputs.as_deref().unwrap_or_default();
        for (i, a) in (rules.alerter)(&token, h, configured).into_iter().enumerate() {
            let key = format!("{}hit-{hit_id}-{i}", rules.key_prefix);
            tx.insert_alert(incident_id, hit_id, &token.id, &key, &a, h.time_us).await?;
        }
    }
    Ok(HitOutcome::Recorded { hit_id, incident_id, status, token })
}

/// Puts an alert-worthy hit into an incident, by the noise rules: its source's open incident
/// when one is within the grouping window, else a new incident that alerts unless the token's
/// cooldown or rate limit holds it back (the reason goes into `data`). Returns the hit's status
/// and its incident.
async fn place_in_incident<T: HitTx>(
    tx: &mut T,
    rules: &NoiseRules,
    token: &Token,
    h: &NewHit,
    data: &mut Value,
) -> Result<(AlertStatus, i64), T::Error> {
    let group = noise::group_key(h);
    if rules.group_window_secs > 0 {
        let since = h.time_us - rules.group_window_secs * 1_000_000;
        if let Some(id) = tx.open_incident(&token.id, &h.src_ip, &group, since).await? {
            tx.join_incident(id, h.time_us).await?;
            return Ok((AlertStatus::Grouped, id));
        }
    }
    let (cooldown, max_per_hour) = (rules.cooldown(token), rules.max_per_hour(token));
    let mut history = AlertHistory::default();
    if cooldown != 0 {
        history.last_alert_us = tx.last_alert_us(&token.id).await?;
    }
    if max_per_hour > 0 {
        history.alerts_last_hour = tx.alerts_since(&token.id, h.time_us - noise::HOUR_US).await?;
    }
    let why = noise::throttled(cooldown, max_per_hour, history, h.time_us);
    let alerted = why.is_none();
    if let Some(why) = why {
        data["throttled"] = why.into();
    }
    let id = tx.insert_incident(token, h, &group, alerted).await?;
    Ok((if alerted { AlertStatus::Alerted } else { AlertStatus::Throttled }, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::convert::Infallible;

    struct Incident {
        id: i64,
        token_id: String,
        src_ip: String,
        group_key: String,
        created_us: Micros,
        last_hit_us: Micros,
        alerted: bool,
        acknowledged: bool,
    }

    struct StoredHit {
        id: i64,
        token_id: String,
        incident_id: Option<i64>,
        data: Value,
        private: Option<Value>,
        dedupe_key: Option<String>,
        status: AlertStatus,
    }

    struct StoredAlert {
        incident_id: i64,
        hit_id: i64,
        key: String,
        output: Value,
    }

    /// The statements of [`HitTx`] over vectors, with the SQL store's meaning.
    #[derive(Default)]
    struct Fake {
        tokens: Vec<Token>,
        /// The key index: (scheme, value) → token id.
        keys: Vec<(TriggerKey, String)>,
        incidents: Vec<Incident>,
        hits: Vec<StoredHit>,
        alerts: Vec<StoredAlert>,
        outputs: Vec<AlertOutput>,
        output_reads: usize,
    }

    impl HitTx for Fake {
        type Error = Infallible;
        async fn token_for_update(&mut self, id: &str) -> Result<Option<Token>, Infallible> {
            Ok(self.tokens.iter().find(|t| t.id == id).cloned())
        }
        async fn token_of_key(&mut self, key: &TriggerKey) -> Result<Option<String>, Infallible> {
            Ok(self.keys.iter().find(|(k, _)| k == key).map(|(_, id)| id.clone()))
        }
        async fn dedupe_seen(&mut self, token_id: &str, key: &str) -> Result<bool, Infallible> {
            Ok(self.hits.iter().any(|h| h.token_id == token_id && h.dedupe_key.as_deref() == Some(key)))
        }
        async fn open_incident(
            &mut self,
            token_id: &str,
            src_ip: &str,
            group_key: &str,
            since_us: Micros,
        ) -> Result<Option<i64>, Infallible> {
            Ok(self
                .incidents
                .iter()
                .filter(|i| i.token_id == token_id && i.src_ip == src_ip && i.group_key == group_key)
                .filter(|i| !i.acknowledged && i.last_hit_us >= since_us)
                .map(|i| i.id)
                .max())
        }
        async fn join_incident(&mut self, id: i64, time_us: Micros) -> Result<(), Infallible> {
            let i = self.incidents.iter_mut().find(|i| i.id == id).unwrap();
            i.last_hit_us = i.last_hit_us.max(time_us);
            Ok(())
        }
        async fn last_alert_us(&mut self, token_id: &str) -> Result<Option<Micros>, Infallible> {
            Ok(self.incidents.iter().filter(|i| i.token_id == token_id && i.alerted).map(|i| i.created_us).max())
        }
        async fn alerts_since(&mut self, token_id: &str, since_us: Micros) -> Result<i64, Infallible> {
            Ok(self.incidents.iter().filter(|i| i.token_id == token_id && i.alerted && i.created_us > since_us).count()
                as i64)
        }
        async fn insert_incident(
            &mut self,
            token: &Token,
            hit: &NewHit,
            group_key: &str,
            alerted: bool,
        ) -> Result<i64, Infallible> {
            let id = self.incidents.len() as i64 + 1;
            self.incidents.push(Incident {
                id,
                token_id: token.id.clone(),
                src_ip: hit.src_ip.clone(),
                group_key: group_key.into(),
                created_us: hit.time_us,
                last_hit_us: hit.time_us,
                alerted,
                acknowledged: false,
            });
            Ok(id)
        }
        async fn insert_hit(&mut self, row: &HitRow<'_>) -> Result<i64, Infallible> {
            let id = self.hits.len() as i64 + 1;
            self.hits.push(StoredHit {
                id,
                token_id: row.token_id.to_string(),
                incident_id: row.incident_id,
                data: row.data.clone(),
                private: row.hit.private.clone(),
                dedupe_key: row.dedupe_key.map(str::to_string),
                status: row.status,
            });
            Ok(id)
        }
        async fn alert_outputs(&mut self) -> Result<Vec<AlertOutput>, Infallible> {
            self.output_reads += 1;
            Ok(self.outputs.clone())
        }
        async fn insert_alert(
            &mut self,
            incident_id: i64,
            hit_id: i64,
            _token_id: &str,
            key: &str,
            alert: &NewAlert,
            _time_us: Micros,
        ) -> Result<(), Infallible> {
            self.alerts.push(StoredAlert { incident_id, hit_id, key: key.into(), output: alert.output.clone() });
            Ok(())
        }
    }

    const SEC: Micros = 1_000_000;

    fn fake(tokens: &[&str]) -> Fake {
        let token = |id: &&str| Token { id: id.to_string(), ..crate::kinds::testing::token("http", json!({})) };
        Fake { tokens: tokens.iter().map(token).collect(), ..Default::default() }
    }

    fn hit(token: &str, ip: &str, t: Micros) -> NewHit {
        NewHit {
            token: TokenRef::Id(token.into()),
            time_us: t,
            channel: Channel::Http,
            src_ip: ip.into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data: json!({"path": "/"}),
            private: None,
            group: None,
        }
    }

    /// One alert per configured output, plus one for the global webhook.
    fn per_output(_: &Token, _: &NewHit, outputs: &[AlertOutput]) -> Vec<NewAlert> {
        std::iter::once(json!({"type": "global"}))
            .chain(outputs.iter().map(|o| o.output.clone()))
            .map(|output| NewAlert { output, payload: json!({}) })
            .collect()
    }

    fn alert_all(noise: NoiseRules) -> HitRules {
        HitRules::new(|_: &Token, _: &NewHit| Judgement::alert(), per_output).with_noise(noise)
    }

    fn run(tx: &mut Fake, hits: &[NewHit], rules: &HitRules) -> Vec<HitOutcome> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        match rt.block_on(record(tx, hits, rules)) {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }

    fn statuses(out: &[HitOutcome]) -> Vec<(AlertStatus, Option<i64>)> {
        out.iter()
            .map(|o| match o {
                HitOutcome::Recorded { status, incident_id, .. } => (*status, *incident_id),
                other => panic!("not recorded: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn unknown_and_disabled_tokens_store_nothing() {
        let mut tx = fake(&["on", "off"]);
        tx.tokens[1].enabled = false;
        let out = run(&mut tx, &[hit("nosuch", "a", 1), hit("off", "a", 2)], &alert_all(NoiseRules::none()));
        assert!(matches!(out.as_slice(), [HitOutcome::Unknown, HitOutcome::Unknown]));
        assert!(tx.hits.is_empty() && tx.incidents.is_empty() && tx.alerts.is_empty());
    }

    fn key(value: &str) -> TriggerKey {
        TriggerKey { scheme: KeyScheme::WireGuardPublicKey, value: value.into() }
    }

    #[test]
    fn a_hit_may_name_its_token_by_a_trigger_key() {
        let mut tx = fake(&["t", "off"]);
        tx.tokens[1].enabled = false;
        tx.keys = vec![(key("k-t"), "t".into()), (key("k-off"), "off".into()), (key("k-gone"), "deleted".into())];
        let by_key = |v: &str, ip: &str| NewHit { token: TokenRef::Key(key(v)), ..hit("", ip, 1) };
        let other_scheme = NewHit {
            token: TokenRef::Key(TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: "k-t".into() }),
            ..hit("", "e", 1)
        };
        let hits =
            [by_key("k-t", "a"), by_key("nosuch", "b"), by_key("k-off", "c"), by_key("k-gone", "d"), other_scheme];
        let out = run(&mut tx, &hits, &alert_all(NoiseRules::none()));
        assert!(matches!(&out[0], HitOutcome::Recorded { token, .. } if token.id == "t"), "{:?}", out[0]);
        for o in &out[1..] {
            assert_eq!(o, &HitOutcome::Unknown, "unknown key, disabled or deleted token, other scheme");
        }
        assert_eq!(tx.hits.len(), 1);
        assert_eq!(tx.hits[0].token_id, "t", "stored under the token the key named");
        assert_eq!(tx.incidents[0].token_id, "t");
    }

    #[test]
    fn private_data_is_stored_apart_from_the_data() {
        let mut tx = fake(&["t"]);
        let h = NewHit { private: Some(amend_guard("n0nce")), ..hit("t", "a", 1) };
        run(&mut tx, &[h], &alert_all(NoiseRules::none()));
        assert_eq!(tx.hits[0].private, Some(json!({AMEND_GUARD: "n0nce"})));
        assert_eq!(tx.hits[0].data, json!({"path": "/"}), "the data has no trace of it");
    }

    #[test]
    fn the_listeners_group_decides_what_joins_an_incident() {
        let mut tx = fake(&["t"]);
        let rules = alert_all(NoiseRules { group_window_secs: 60, ..NoiseRules::none() });
        let g = |group: Option<&str>, t: Micros| NewHit { group: group.map(str::to_string), ..hit("t", "a", t) };
        let hits =
            [g(Some("alpha"), 0), g(Some("alpha"), SEC), g(Some("beta"), 2 * SEC), g(None, 3 * SEC), g(None, 4 * SEC)];
        let out = run(&mut tx, &hits, &rules);
        assert_eq!(
            statuses(&out),
            [
                (AlertStatus::Alerted, Some(1)),
                (AlertStatus::Grouped, Some(1)),
                (AlertStatus::Alerted, Some(2)),
                (AlertStatus::Alerted, Some(3)),
                (AlertStatus::Grouped, Some(3)),
            ]
        );
        assert_eq!(tx.incidents[0].group_key, noise::group_key(&hits[0]));
        assert_eq!(tx.incidents[2].group_key, "", "no group: the source alone");
    }

    #[test]
    fn judge_outcomes_drop_ignore_and_alert() {
        let mut tx = fake(&["t"]);
        let rules = HitRules::new(
            |_: &Token, h: &NewHit| match h.src_ip.as_str() {
                "drop" => Judgement::Drop,
                "ignore" => Judgement::Ignore { reason: "listed source".into() },
                _ => {
                    let mut extra = serde_json::Map::new();
                    extra.insert("decoded".into(), json!("x"));
                    Judgement::Alert { extra, dedupe_key: None }
                }
            },
            per_output,
        )
        .with_noise(NoiseRules::none());
        let out = run(&mut tx, &[hit("t", "drop", 1), hit("t", "ignore", 2), hit("t", "alert", 3)], &rules);
        assert!(matches!(&out[0], HitOutcome::Dropped { token } if token.id == "t"));
        assert_eq!(statuses(&out[1..]), [(AlertStatus::Ignored, None), (AlertStatus::Alerted, Some(1))]);
        let stored: Vec<_> = tx.hits.iter().map(|h| (h.id, h.incident_id, h.status)).collect();
        assert_eq!(
            stored,
            [(1, None, AlertStatus::Ignored), (2, Some(1), AlertStatus::Alerted)],
            "a dropped hit is not stored"
        );
        assert_eq!(tx.hits[0].data["ignored"], "listed source");
        assert_eq!(tx.hits[1].data["decoded"], "x", "the kind's extra fields join the data");
        assert_eq!(tx.alerts.len(), 1, "only the alerting hit raises alerts");
    }

    #[test]
    fn a_repeated_dedupe_key_is_kept_but_ignored() {
        let mut tx = fake(&["t"]);
        let rules = HitRules::new(
            |_: &Token, _: &NewHit| Judgement::Alert { extra: Default::default(), dedupe_key: Some("k1".into()) },
            per_output,
        )
        .with_noise(NoiseRules::none());
        let out = run(&mut tx, &[hit("t", "a", 1), hit("t", "b", 2)], &rules);
        assert_eq!(statuses(&out), [(AlertStatus::Alerted, Some(1)), (AlertStatus::Ignored, None)]);
        assert_eq!(tx.hits[1].data["ignored"], "repeat of a trigger already alerted");
        assert_eq!(tx.hits[1].dedupe_key.as_deref(), Some("k1"), "the repeat keeps its key");
        assert_eq!(tx.incidents.len(), 1);
        assert_eq!(tx.alerts.len(), 1);
    }

    /// A judge of events by their `event_id` (data), kept without incident when `inactive`.
    fn once(_: &Token, h: &NewHit) -> Judgement {
        let mut extra = serde_json::Map::new();
        extra.insert("via".into(), json!("cloudtrail"));
        Judgement::Once {
            event_id: h.data["event_id"].as_str().unwrap_or_default().to_string(),
            extra,
            ignore: h.data["inactive"].as_bool().unwrap_or(false).then(|| "the key is inactive".to_string()),
        }
    }

    fn event(id: &str, inactive: bool, t: Micros) -> NewHit {
        NewHit { channel: Channel::Aws, data: json!({"event_id": id, "inactive": inactive}), ..hit("t", "a", t) }
    }

    fn dropped(o: &HitOutcome) -> bool {
        matches!(o, HitOutcome::Dropped { token } if token.id == "t")
    }

    #[test]
    fn an_event_delivered_again_stores_nothing() {
        let mut tx = fake(&["t"]);
        let rules = HitRules::new(once, per_output).with_noise(NoiseRules::none());
        // First delivery alerts; a repeat inside the same batch stores nothing.
        let out = run(&mut tx, &[event("e1", false, 1), event("e1", false, 2), event("e2", false, 3)], &rules);
        assert_eq!(statuses(&out[..1]), [(AlertStatus::Alerted, Some(1))]);
        assert!(dropped(&out[1]), "{:?}", out[1]);
        assert_eq!(statuses(&out[2..]), [(AlertStatus::Alerted, Some(2))]);
        assert_eq!(tx.hits.len(), 2);
        assert_eq!(tx.hits[0].dedupe_key.as_deref(), Some("event:e1"));
        assert_eq!(tx.hits[0].data["via"], "cloudtrail", "the extra fields join the data");
        // A repeat in a later batch stores nothing either.
        let out = run(&mut tx, &[event("e2", false, 4), event("e1", false, 5)], &rules);
        assert!(out.iter().all(dropped), "{out:?}");
        assert_eq!((tx.hits.len(), tx.incidents.len(), tx.alerts.len()), (2, 2, 2));
    }

    #[test]
    fn an_ignored_event_is_kept_once_without_an_incident() {
        let mut tx = fake(&["t"]);
        let rules = HitRules::new(once, per_output).with_noise(NoiseRules::none());
        let out = run(&mut tx, &[event("e9", true, 1), event("e9", true, 2)], &rules);
        assert_eq!(statuses(&out[..1]), [(AlertStatus::Ignored, None)]);
        assert!(dropped(&out[1]), "{:?}", out[1]);
        let out = run(&mut tx, &[event("e9", false, 3)], &rules);
        assert!(dropped(&out[0]), "its repeat is dropped too, whatever the verdict now: {:?}", out[0]);
        assert_eq!(tx.hits.len(), 1);
        assert_eq!(tx.hits[0].data["ignored"], "the key is inactive");
        assert_eq!(tx.hits[0].dedupe_key.as_deref(), Some("event:e9"));
        assert!(tx.incidents.is_empty() && tx.alerts.is_empty());
    }

    #[test]
    fn an_event_without_an_id_is_never_a_repeat() {
        let mut tx = fake(&["t"]);
        let rules = HitRules::new(once, per_output).with_noise(NoiseRules::none());
        let out = run(&mut tx, &[event("", false, 1), event("", false, 2)], &rules);
        assert_eq!(statuses(&out), [(AlertStatus::Alerted, Some(1)), (AlertStatus::Alerted, Some(2))]);
        assert!(tx.hits.iter().all(|h| h.dedupe_key.is_none()));
    }

    #[test]
    fn event_ids_and_alert_dedupe_keys_never_match() {
        let mut tx = fake(&["t"]);
        // A kind's Alert key spelled like an event key, then the event of that id.
        let judge = |t: &Token, h: &NewHit| match h.data["event_id"].as_str() {
            Some(_) => once(t, h),
            None => Judgement::Alert { extra: Default::default(), dedupe_key: Some("event:x".into()) },
        };
        let rules = HitRules::new(judge, per_output).with_noise(NoiseRules::none());
        let out = run(&mut tx, &[hit("t", "a", 1), event("x", false, 2), hit("t", "a", 3)], &rules);
        assert_eq!(
            statuses(&out),
            [(AlertStatus::Alerted, Some(1)), (AlertStatus::Alerted, Some(2)), (AlertStatus::Ignored, None)],
            "the event is no repeat of the Alert key, the Alert repeat is one of its own"
        );
        let keys: Vec<_> = tx.hits.iter().map(|h| h.dedupe_key.as_deref()).collect();
        assert_eq!(keys, [Some("alert:event:x"), Some("event:x"), Some("alert:event:x")]);
    }

    #[test]
    fn hits_group_into_their_sources_open_incident_within_the_window() {
        let mut tx = fake(&["t"]);
        let rules = alert_all(NoiseRules { group_window_secs: 60, ..NoiseRules::none() });
        let hits = [
            hit("t", "a", 0),
            hit("t", "a", 50 * SEC),  // within 60 s of the last hit
            hit("t", "b", 60 * SEC),  // another source
            hit("t", "a", 109 * SEC), // within 60 s of the last hit (50 s), not of the first
            hit("t", "a", 200 * SEC), // the window closed
        ];
        let out = run(&mut tx, &hits, &rules);
        assert_eq!(
            statuses(&out),
            [
                (AlertStatus::Alerted, Some(1)),
                (AlertStatus::Grouped, Some(1)),
                (AlertStatus::Alerted, Some(2)),
                (AlertStatus::Grouped, Some(1)),
                (AlertStatus::Alerted, Some(3)),
            ]
        );
        assert_eq!(tx.incidents[0].last_hit_us, 109 * SEC);
        assert_eq!(tx.alerts.len(), 3, "grouped hits raise no alert");

        // An acknowledged incident takes no more hits.
        tx.incidents[2].acknowledged = true;
        let out = run(&mut tx, &[hit("t", "a", 210 * SEC)], &rules);
        assert_eq!(statuses(&out), [(AlertStatus::Alerted, Some(4))]);
    }

    #[test]
    fn cooldown_and_hourly_limit_throttle_new_incidents() {
        let mut tx = fake(&["t", "u"]);
        let rules = alert_all(NoiseRules { cooldown_secs: 300, ..NoiseRules::none() });
        let out = run(&mut tx, &[hit("t", "a", 0), hit("t", "b", 100 * SEC), hit("t", "c", 301 * SEC)], &rules);
        assert_eq!(
            statuses(&out),
            [(AlertStatus::Alerted, Some(1)), (AlertStatus::Throttled, Some(2)), (AlertStatus::Alerted, Some(3))]
        );
        assert!(tx.hits[1].data["throttled"].as_str().unwrap().starts_with("cooldown"), "{}", tx.hits[1].data);
        assert!(!tx.incidents[1].alerted);
        assert_eq!(tx.alerts.iter().map(|a| a.hit_id).collect::<Vec<_>>(), [1, 3]);

        // The token's own limit overrides the default: two an hour.
        tx.tokens[1].alert_max_per_hour = Some(2);
        let hits: Vec<_> = (0..3).map(|i| hit("u", &format!("s{i}"), i * SEC)).collect();
        let out = run(&mut tx, &hits, &alert_all(NoiseRules::none()));
        let got: Vec<_> = statuses(&out).into_iter().map(|(s, _)| s).collect();
        assert_eq!(got, [AlertStatus::Alerted, AlertStatus::Alerted, AlertStatus::Throttled]);
        assert!(tx.hits.last().unwrap().data["throttled"].is_string());
    }

    #[test]
    fn alerts_enter_the_outbox_with_their_hit_keyed_by_it() {
        let mut tx = fake(&["t"]);
        tx.outputs.push(AlertOutput {
            id: "o1".into(),
            flock_id: None,
            output: json!({"type": "slack"}),
            created_us: 0,
            created_by: "t".into(),
        });
        let rules = alert_all(NoiseRules::none()).with_key_prefix("inst-");
        let out = run(&mut tx, &[hit("t", "a", 1), hit("t", "b", 2)], &rules);
        assert_eq!(statuses(&out), [(AlertStatus::Alerted, Some(1)), (AlertStatus::Alerted, Some(2))]);
        let got: Vec<_> =
            tx.alerts.iter().map(|a| (a.key.as_str(), a.incident_id, a.hit_id, a.output["type"].clone())).collect();
        assert_eq!(
            got,
            [
                ("inst-hit-1-0", 1, 1, json!("global")),
                ("inst-hit-1-1", 1, 1, json!("slack")),
                ("inst-hit-2-0", 2, 2, json!("global")),
                ("inst-hit-2-1", 2, 2, json!("slack")),
            ]
        );
        assert_eq!(tx.output_reads, 1, "the configured outputs are read once per batch");

        // A batch with no alerting hit never reads them.
        let mut tx = fake(&["t"]);
        let quiet = HitRules::new(|_: &Token, _: &NewHit| Judgement::Ignore { reason: "r".into() }, per_output);
        run(&mut tx, &[hit("t", "a", 1)], &quiet);
        assert_eq!(tx.output_reads, 0);
    }
}
