//! Turning AWS events into hits: which token an event names (by the key index), the hit it
//! becomes, and recording a stream of them with bounded memory and bounded concurrency.
//!
//! A log object is parsed on a blocking thread (it is CPU work), which sends the events that
//! name a honey key or bucket through a small channel; this side records them, at most
//! [`IN_FLIGHT`] at a time, so a 10,000-record file never sits in memory as a whole.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

use super::event::{AwsEvent, Via};
use crate::listeners::ListenerContext;
use crate::model::{Channel, HitOutcome, KeyScheme, NewHit, TokenRef, TriggerKey};
use crate::recorder::RecordError;

/// Hits waiting to be recorded at once.
pub const IN_FLIGHT: usize = 64;
/// Events waiting between the parser and the recorder.
pub const CHANNEL: usize = 256;

/// The honey keys and buckets there are, for a cheap check of every record.
#[derive(Debug, Default, Clone)]
pub struct Watched {
    pub keys: HashSet<String>,
    pub buckets: HashSet<String>,
}

impl Watched {
    pub async fn load(cx: &ListenerContext) -> Result<Watched, RecordError> {
        let keys = cx.hits.trigger_keys(KeyScheme::AwsAccessKeyId).await?.into_iter().map(|(k, _)| k).collect();
        let buckets = cx.hits.trigger_keys(KeyScheme::S3Bucket).await?.into_iter().map(|(k, _)| k).collect();
        Ok(Watched { keys, buckets })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.buckets.is_empty()
    }

    /// The trigger keys an event names: its access key, if a honey one, and its bucket, if a
    /// honey one (an S3 data event by a honey key on a honey bucket is a hit of both).
    pub fn named_by(&self, ev: &AwsEvent) -> Vec<TriggerKey> {
        let mut out = Vec::new();
        if let Some(k) = ev.access_key_id.as_deref().filter(|k| self.keys.contains(*k)) {
            out.push(TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: k.to_string() });
        }
        if let Some(b) = ev.bucket.as_deref().filter(|b| self.buckets.contains(*b)) {
            out.push(TriggerKey { scheme: KeyScheme::S3Bucket, value: b.to_string() });
        }
        out
    }
}

/// The hit an event is for one token.
pub fn hit_of(ev: &AwsEvent, key: TriggerKey) -> NewHit {
    NewHit {
        token: TokenRef::Key(key),
        time_us: ev.event_time_us,
        channel: Channel::Aws,
        src_ip: ev.src_ip(),
        src_port: 0,
        dst_ip: ev.event_source.clone(),
        dst_port: 443,
        data: ev.data(),
        private: None,
        group: None,
    }
}

/// Records one hit, waiting out an overloaded recorder; a storage failure is returned (the
/// object is then read again next round, its hits deduplicated).
pub async fn record_one(cx: &ListenerContext, hit: NewHit) -> Result<bool, RecordError> {
    let mut wait = Duration::from_millis(50);
    loop {
        match cx.hits.record(hit.clone()).await {
            Ok(HitOutcome::Recorded { .. }) => return Ok(true),
            Ok(_) => return Ok(false),
            Err(RecordError::Overloaded) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Records every event that arrives on `rx` for the tokens it names; returns how many hits were
/// stored (repeats are not). Stops at the first storage failure. Afterwards each honey key's
/// newest event time seen in CloudTrail is kept (`cloudtrail-seen:<key>`), for the safety net.
pub async fn record_events(
    cx: &ListenerContext,
    watched: &Watched,
    mut rx: mpsc::Receiver<AwsEvent>,
) -> Result<u64, RecordError> {
    let mut pending = FuturesUnordered::new();
    let mut stored = 0u64;
    let mut open = true;
    let mut newest: HashMap<String, i64> = HashMap::new();
    while open || !pending.is_empty() {
        tokio::select! {
            ev = rx.recv(), if open && pending.len() < IN_FLIGHT => match ev {
                Some(ev) => {
                    if let (Some(k), Via::CloudTrail) = (&ev.access_key_id, ev.via) {
                        let t = newest.entry(k.clone()).or_insert(i64::MIN);
                        *t = (*t).max(ev.event_time_us);
                    }
                    for key in watched.named_by(&ev) {
                        pending.push(record_one(cx, hit_of(&ev, key)));
                    }
                }
                None => open = false,
            },
            Some(r) = pending.next(), if !pending.is_empty() => {
                if r? {
                    stored += 1;
                }
            }
        }
    }
    for (key, t) in newest {
        let name = seen_state(&key);
        let before = cx.hits.poller_state_get(&name).await?.and_then(|v| v.parse::<i64>().ok());
        if before.is_none_or(|b| b < t) {
            cx.hits.poller_state_put(&name, &t.to_string()).await?;
        }
    }
    Ok(stored)
}

/// The poller-state name under which a key's newest CloudTrail event time is kept.
pub fn seen_state(access_key_id: &str) -> String {
    format!("cloudtrail-seen:{access_key_id}")
}

/// A channel whose sending half a blocking parser uses.
pub fn channel() -> (mpsc::Sender<AwsEvent>, mpsc::Receiver<AwsEvent>) {
    mpsc::channel(CHANNEL)
}
