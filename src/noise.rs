//! Noise control: which stored hits raise an alert. Pure rules; the store looks up the facts
//! (the token's open incident, its recent alerts) inside the recording transaction and asks
//! here.
//!
//! In order, for a hit its kind judged worth an alert:
//! 1. **Ignore lists** (global `--ignore-sources`, and the token's own `ignore_sources`): the
//!    hit is kept, marked ignored, no incident (an event recorded once per id stays so). This
//!    is part of the judge ([`IgnoreLists`],
//!    [`judge_with_ignore_lists`]), since it needs nothing from storage.
//! 2. **Grouping**: a hit of the same token from the same source address, in the same group
//!    (what its listener says "the same trigger again" is, [`NewHit::group`]; [`group_key`]), within [`NoiseRules::group_window_secs`] of that source's
//!    last hit joins its open (not acknowledged) incident as a further event, with no new
//!    alert — a resolver asking A then AAAA, a browser loading a page twice. The window slides
//!    with each hit. Different data through one resolver (two hosts' log4shell lookups) stays
//!    two incidents.
//! 3. **Cooldown and rate limit**: a new incident is always stored, but stays silent
//!    (`throttled`) while the token's cooldown runs (SpaceSiren's `alert_cooldown`: 0 alerts
//!    on every incident, -1 only on the first ever, N waits N seconds after the last alert) or
//!    once the token has raised its most alerts in the last hour.

use crate::model::{Judgement, Micros, NewHit, Token};
use crate::net::NetList;

/// Default grouping window (seconds).
pub const DEFAULT_GROUP_WINDOW_SECS: i64 = 60;
/// Longest cooldown or grouping window accepted (30 days).
pub const MAX_SECS: i64 = 30 * 86_400;
/// Highest hourly alert limit accepted.
pub const MAX_PER_HOUR: i64 = 100_000;
/// Most entries in a token's ignore list.
pub const MAX_IGNORE_SOURCES: usize = 100;

/// The ignore lists a hit is checked against before its kind judges it: the server's
/// (`--ignore-sources`, parsed once) and the token's own `ignore_sources` (stored as text,
/// checked when it was set, read with the token).
#[derive(Debug, Clone, Default)]
pub struct IgnoreLists {
    server: NetList,
}

impl IgnoreLists {
    pub fn new(server: NetList) -> IgnoreLists {
        IgnoreLists { server }
    }

    /// Why a hit of `token` from `src_ip` is ignored, or None when neither list holds it.
    pub fn reason(&self, token: &Token, src_ip: &str) -> Option<&'static str> {
        if self.server.contains_text(src_ip) {
            return Some("source is on the ignore list");
        }
        if !token.ignore_sources.is_empty() && NetList::from_stored(&token.ignore_sources).contains_text(src_ip) {
            return Some("source is on the token's ignore list");
        }
        None
    }

    /// [`Judgement::Ignore`] for a hit on either list, else what `judge` says. An event the
    /// kind would record once ([`Judgement::Once`]) stays one, kept without an incident, so
    /// its repeats are still dropped.
    pub fn judge(&self, token: &Token, hit: &NewHit, judge: impl Fn(&Token, &NewHit) -> Judgement) -> Judgement {
        match self.reason(token, &hit.src_ip) {
            Some(reason) => match judge(token, hit) {
                Judgement::Once { event_id, extra, .. } => {
                    Judgement::Once { event_id, extra, ignore: Some(reason.into()) }
                }
                _ => Judgement::Ignore { reason: reason.into() },
            },
            None => judge(token, hit),
        }
    }
}

/// The judge of a server whose ignore list is `ignored` (networks as configuration checked
/// them): hits from those networks, or from the token's own ignore list, are kept, marked
/// ignored, and raise no alert; everything else goes to the kind's judge.
pub fn judge_with_ignore_lists(ignored: Vec<String>) -> impl Fn(&Token, &NewHit) -> Judgement + Send + Sync {
    let lists = IgnoreLists::new(NetList::from_stored(&ignored));
    move |token, hit| lists.judge(token, hit, crate::kinds::judge)
}

/// The server-wide rules; tokens may override cooldown and rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseRules {
    /// 0 turns grouping off.
    pub group_window_secs: i64,
    /// Default cooldown (see the module docs); 0 = none.
    pub cooldown_secs: i64,
    /// Default most alerts per token and hour; 0 = no limit.
    pub max_per_hour: i64,
}

impl Default for NoiseRules {
    fn default() -> Self {
        NoiseRules { group_window_secs: DEFAULT_GROUP_WINDOW_SECS, cooldown_secs: 0, max_per_hour: 0 }
    }
}

impl NoiseRules {
    /// Every hit its own incident, every incident an alert.
    pub fn none() -> NoiseRules {
        NoiseRules { group_window_secs: 0, cooldown_secs: 0, max_per_hour: 0 }
    }
    pub fn cooldown(&self, t: &Token) -> i64 {
        t.alert_cooldown_secs.unwrap_or(self.cooldown_secs)
    }
    pub fn max_per_hour(&self, t: &Token) -> i64 {
        t.alert_max_per_hour.unwrap_or(self.max_per_hour)
    }
}

/// What, besides its source, tells one trigger of a token from another: the hash of the group
/// its listener named ([`NewHit::group`]; for DNS the data decoded from the name, so a
/// resolver's A and AAAA lookups of one name share it; none for HTTP). Empty (no group, or an
/// empty one), or 32 hex characters, as stored with the incident.
pub fn group_key(hit: &NewHit) -> String {
    use sha2::Digest;
    match hit.group.as_deref() {
        None | Some("") => String::new(),
        Some(group) => hex::encode(&sha2::Sha256::digest(group.as_bytes())[..16]),
    }
}

/// What the store found about a token's earlier alerts (only what the rules asked for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertHistory {
    /// When the token's latest alerting incident began.
    pub last_alert_us: Option<Micros>,
    /// Alerting incidents begun in the hour before the hit.
    pub alerts_last_hour: i64,
}

pub const HOUR_US: Micros = 3_600 * 1_000_000;

/// Why a new incident at `now` stays silent, or None when it alerts.
pub fn throttled(cooldown: i64, max_per_hour: i64, history: AlertHistory, now: Micros) -> Option<String> {
    match (cooldown, history.last_alert_us) {
        (-1, Some(_)) => return Some("cooldown: this token alerts only once".into()),
        (c, Some(last)) if c > 0 && now - last < c * 1_000_000 => {
            return Some(format!("cooldown: one alert per {c} s"));
        }
        _ => {}
    }
    if max_per_hour > 0 && history.alerts_last_hour >= max_per_hour {
        return Some(format!("rate limit: {max_per_hour} alerts per hour"));
    }
    None
}

/// A cooldown as given by a user: -1, 0, or up to [`MAX_SECS`].
pub fn check_cooldown(v: i64) -> Result<i64, String> {
    if (-1..=MAX_SECS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be -1 (alert once), 0 (every incident) or up to {MAX_SECS} seconds"))
    }
}

/// An hourly limit as given by a user: 0 (none) up to [`MAX_PER_HOUR`].
pub fn check_max_per_hour(v: i64) -> Result<i64, String> {
    if (0..=MAX_PER_HOUR).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be 0 (no limit) up to {MAX_PER_HOUR}"))
    }
}

/// A grouping window as given by an operator: 0 (off) up to [`MAX_SECS`].
pub fn check_window(v: i64) -> Result<i64, String> {
    if (0..=MAX_SECS).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be 0 (off) up to {MAX_SECS} seconds"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Micros = 1_000_000;

    fn hist(last: Option<Micros>, n: i64) -> AlertHistory {
        AlertHistory { last_alert_us: last, alerts_last_hour: n }
    }

    #[test]
    fn zero_cooldown_alerts_every_time() {
        assert_eq!(throttled(0, 0, hist(Some(100 * S), 50), 100 * S), None);
        assert_eq!(throttled(0, 0, hist(None, 0), 0), None);
    }

    #[test]
    fn minus_one_alerts_only_once() {
        assert_eq!(throttled(-1, 0, hist(None, 0), 5 * S), None);
        assert!(throttled(-1, 0, hist(Some(S), 0), 1_000_000 * S).unwrap().contains("only once"));
    }

    #[test]
    fn cooldown_waits_its_seconds() {
        assert!(throttled(300, 0, hist(Some(1000 * S), 1), 1299 * S).is_some());
        assert_eq!(throttled(300, 0, hist(Some(1000 * S), 1), 1300 * S), None);
        assert_eq!(throttled(300, 0, hist(None, 0), 1000 * S), None);
    }

    #[test]
    fn hourly_limit_counts_alerts() {
        assert_eq!(throttled(0, 3, hist(Some(S), 2), 2 * S), None);
        assert!(throttled(0, 3, hist(Some(S), 3), 2 * S).unwrap().contains("3 alerts per hour"));
        assert_eq!(throttled(0, 0, hist(Some(S), 1_000), 2 * S), None, "0 is no limit");
    }

    #[test]
    fn token_settings_override_the_defaults() {
        let rules = NoiseRules { group_window_secs: 60, cooldown_secs: 30, max_per_hour: 10 };
        let mut t = crate::kinds::testing::token("dns", serde_json::json!({}));
        assert_eq!((rules.cooldown(&t), rules.max_per_hour(&t)), (30, 10));
        t.alert_cooldown_secs = Some(0);
        t.alert_max_per_hour = Some(0);
        assert_eq!((rules.cooldown(&t), rules.max_per_hour(&t)), (0, 0));
    }

    #[test]
    fn group_keys_hash_the_listeners_group() {
        let hit = |group: Option<&str>| NewHit {
            group: group.map(str::to_string),
            ..crate::kinds::testing::hit(crate::model::Channel::Dns, serde_json::json!({"query_name": "x"}))
        };
        // What the DNS listener names for a log4shell lookup of "alpha" (see its tests): the
        // key incidents stored before listeners named their groups.
        let alpha = hit(Some(r#"[["log4shell_hostname","alpha"]]"#));
        assert_eq!(group_key(&alpha), "ed8b9c0ca6a4f613dc473be4f4be398a");
        assert_ne!(group_key(&alpha), group_key(&hit(Some(r#"[["log4shell_hostname","beta"]]"#))));
        assert_eq!(group_key(&hit(None)), "", "no group: the source alone");
        assert_eq!(group_key(&hit(Some(""))), "");
    }

    #[test]
    fn ignore_list_keeps_hits_but_silences_them() {
        let judge = judge_with_ignore_lists(vec!["10.0.0.0/8".into()]);
        let token = crate::kinds::testing::token("dns", serde_json::json!({}));
        let hit = |ip: &str| NewHit {
            token: crate::model::TokenRef::Id(token.id.clone()),
            time_us: 0,
            channel: crate::model::Channel::Dns,
            src_ip: ip.into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data: serde_json::json!({}),
            private: None,
            group: None,
        };
        assert!(matches!(judge(&token, &hit("10.1.2.3")), Judgement::Ignore { .. }));
        assert!(matches!(judge(&token, &hit("::ffff:10.1.2.3")), Judgement::Ignore { .. }), "mapped IPv4");
        assert_eq!(judge(&token, &hit("192.0.2.1")), Judgement::alert());
        assert_eq!(
            judge_with_ignore_lists(Vec::new())(&token, &hit("10.1.2.3")),
            Judgement::alert(),
            "empty list ignores nothing"
        );
        let mut own = token.clone();
        own.ignore_sources = vec!["192.0.2.0/24".into()];
        let Judgement::Ignore { reason } = judge_with_ignore_lists(Vec::new())(&own, &hit("192.0.2.1")) else {
            panic!("the token's own list is honoured")
        };
        assert!(reason.contains("token's ignore list"));
        assert_eq!(judge(&own, &hit("198.51.100.1")), Judgement::alert());
        let lists = IgnoreLists::new("10.0.0.0/8".parse().unwrap());
        assert_eq!(lists.reason(&own, "10.0.0.1"), Some("source is on the ignore list"), "the server's list first");
        assert_eq!(lists.reason(&own, "not an address"), None);

        // An event recorded once stays one, ignored, whatever the kind's own verdict was.
        fn once(ignore: Option<&'static str>) -> impl Fn(&Token, &NewHit) -> Judgement {
            move |_, _| Judgement::Once {
                event_id: "e1".into(),
                extra: serde_json::Map::new(),
                ignore: ignore.map(str::to_string),
            }
        }
        let listed = Judgement::Once {
            event_id: "e1".into(),
            extra: serde_json::Map::new(),
            ignore: Some("source is on the ignore list".into()),
        };
        assert_eq!(lists.judge(&own, &hit("10.1.2.3"), once(None)), listed);
        assert_eq!(lists.judge(&own, &hit("10.1.2.3"), once(Some("inactive key"))), listed);
        assert_eq!(lists.judge(&own, &hit("203.0.113.1"), once(None)), once(None)(&own, &hit("x")));
        assert!(matches!(lists.judge(&own, &hit("10.1.2.3"), |_, _| Judgement::Drop), Judgement::Ignore { .. }));
    }

    #[test]
    fn user_values_are_bounded() {
        assert!(check_cooldown(-1).is_ok() && check_cooldown(0).is_ok() && check_cooldown(MAX_SECS).is_ok());
        assert!(check_cooldown(-2).is_err() && check_cooldown(MAX_SECS + 1).is_err());
        assert!(check_max_per_hour(0).is_ok() && check_max_per_hour(-1).is_err());
        assert!(check_window(0).is_ok() && check_window(-5).is_err());
    }
}
