//! The hit recorder: group commit between the listeners and the store.
//!
//! Listeners hand a [`NewHit`] to [`Recorder::record`] and wait. One writer task takes
//! whatever hits are queued (up to [`MAX_BATCH`]) and commits them in one transaction, then
//! wakes every waiter. While a commit is in flight new hits queue up and form the next batch,
//! so under load one fsync serves many hits and with no load a hit is committed at once.
//! A listener answers only after `record` returns, so every answered hit is durable.
//!
//! Listeners see the recorder only as a [`HitSink`]: what they record, what they add to a
//! recorded hit later, the token files they serve and a poller's bookkeeping (its saved state,
//! the objects it has processed, the lease that lets one node poll at a time) all go through
//! it, so no listener holds the store, and a listener's unit tests use a fake sink instead
//! (`recorder::testing`, in test builds).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Notify};

use std::collections::HashSet;

use crate::model::{HitOutcome, KeyScheme, Micros, NewHit, Token, TokenFile};
use crate::store::{HitRules, Store};

/// Where listeners hand what they notice: the one way from a listener to the store.
#[async_trait]
pub trait HitSink: Send + Sync {
    /// Records one hit; returns once it is committed (or known to be ignored or dropped).
    /// The outcome carries the token, so the listener shapes its answer without a lookup.
    async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError>;
    /// Adds follow-up data to a recorded hit, once, if the amendment's guard is the one stored
    /// in the hit's private data: the browser scanner's report today; an SMTP message body
    /// that arrives after its envelope was recorded, or the rest of a MySQL handshake, next
    /// (see [`Store::amend_hit`]). False when nothing matched.
    async fn amend(&self, amendment: HitAmendment) -> Result<bool, RecordError>;
    /// A file stored with a token (a web image), for the listener's answer.
    async fn token_file(&self, token_id: &str, name: &str) -> Result<Option<TokenFile>, RecordError>;
    /// The token, if it exists and is enabled: for a listener that must say whether a token
    /// is there before the trigger is complete (an SMTP server accepts or refuses each
    /// recipient before the message comes). Nothing is recorded.
    async fn live_token(&self, token_id: &str) -> Result<Option<Token>, RecordError>;
    /// Every key of the scheme as (key value, token id), of enabled and disabled tokens alike:
    /// for a listener that prefilters what it reads (recording still checks the token). See
    /// [`Store::trigger_keys`].
    async fn trigger_keys(&self, scheme: KeyScheme) -> Result<Vec<(String, String)>, RecordError>;
    /// A poller's saved value under `name` ([`Store::get_poller_state`]).
    async fn poller_state_get(&self, name: &str) -> Result<Option<String>, RecordError>;
    /// Saves a poller's value under `name` ([`Store::put_poller_state`]).
    async fn poller_state_put(&self, name: &str, value: &str) -> Result<(), RecordError>;
    /// Which of `keys` are marked done for `source` ([`Store::objects_done`]).
    async fn objects_done(&self, source: &str, keys: &[String]) -> Result<HashSet<String>, RecordError>;
    /// Marks an object of `source` done ([`Store::mark_object_done`]).
    async fn mark_object_done(&self, source: &str, key: &str, now_us: Micros) -> Result<(), RecordError>;
    /// Forgets objects marked done before `older_than_us` ([`Store::prune_objects_done`]).
    async fn prune_objects_done(&self, older_than_us: Micros) -> Result<u64, RecordError>;
    /// Takes or renews the lease `name` for `holder` ([`Store::try_lease`]); false when
    /// another holder has it.
    async fn try_lease(&self, name: &str, holder: &str, now_us: Micros, ttl_us: Micros) -> Result<bool, RecordError>;
    /// Gives the lease up, if `holder` has it ([`Store::release_lease`]).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), RecordError>;
}

/// Follow-up data for a recorded hit: `value` goes under `key` in the hit's data.
#[derive(Debug, Clone, PartialEq)]
pub struct HitAmendment {
    pub hit_id: i64,
    pub token_id: String,
    /// The secret the listener stored with the hit when it recorded it (its private data's
    /// [`AMEND_GUARD`](crate::model::AMEND_GUARD)); only its holder may amend the hit.
    pub guard: String,
    pub key: String,
    pub value: serde_json::Value,
}

/// Most hits committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Hits that may wait for the writer; past this, listeners answer "try again" at once.
const QUEUE: usize = 16 * 1024;

struct Pending {
    hit: NewHit,
    done: oneshot::Sender<Result<HitOutcome, RecordError>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("storage failed: {0}")]
    Storage(String),
    /// The queue is full: storage cannot keep up. Listeners answer "try again" at once rather
    /// than pile up waiting requests.
    #[error("recorder overloaded")]
    Overloaded,
    #[error("recorder is shut down")]
    Closed,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
    /// For amendments and token files, which need no batching.
    store: Arc<dyn Store>,
}

impl Recorder {
    /// Starts the writer task; `rules` decide per hit what is stored and which alerts go into
    /// the outbox with it (see [`HitRules`]), and `committed` is notified after each commit
    /// (it wakes the alert worker). The task ends once every `Recorder` clone is dropped and
    /// the queue is drained.
    pub fn start(
        store: Arc<dyn Store>,
        rules: Arc<HitRules>,
        committed: Arc<Notify>,
    ) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(writer(store.clone(), rules, committed, rx));
        (Recorder { tx, store }, handle)
    }

    /// Records one hit, its data bounded (see [`NewHit::bounded`]); returns once it is
    /// committed (or known to be ignored).
    pub async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError> {
        let (done, wait) = oneshot::channel();
        self.tx.try_send(Pending { hit: hit.bounded(), done }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RecordError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => RecordError::Closed,
        })?;
        wait.await.map_err(|_| RecordError::Closed)?
    }
}

#[async_trait]
impl HitSink for Recorder {
    async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError> {
        Recorder::record(self, hit).await
    }

    async fn amend(&self, a: HitAmendment) -> Result<bool, RecordError> {
        self.store.amend_hit(a.hit_id, &a.token_id, &a.guard, &a.key, a.value).await.map_err(storage)
    }

    async fn token_file(&self, token_id: &str, name: &str) -> Result<Option<TokenFile>, RecordError> {
        self.store.get_token_file(token_id, name).await.map_err(storage)
    }

    async fn live_token(&self, token_id: &str) -> Result<Option<Token>, RecordError> {
        let token = self.store.get_token(token_id).await.map_err(storage)?;
        Ok(token.filter(|t| t.enabled))
    }

    async fn trigger_keys(&self, scheme: KeyScheme) -> Result<Vec<(String, String)>, RecordError> {
        self.store.trigger_keys(scheme).await.map_err(storage)
    }

    async fn poller_state_get(&self, name: &str) -> Result<Option<String>, RecordError> {
        self.store.get_poller_state(name).await.map_err(storage)
    }

    async fn poller_state_put(&self, name: &str, value: &str) -> Result<(), RecordError> {
        self.store.put_poller_state(name, value).await.map_err(storage)
    }

    async fn objects_done(&self, source: &str, keys: &[String]) -> Result<HashSet<String>, RecordError> {
        self.store.objects_done(source, keys).await.map_err(storage)
    }

    async fn mark_object_done(&self, source: &str, key: &str, now_us: Micros) -> Result<(), RecordError> {
        self.store.mark_object_done(source, key, now_us).await.map_err(storage)
    }

    async fn prune_objects_done(&self, older_than_us: Micros) -> Result<u64, RecordError> {
        self.store.prune_objects_done(older_than_us).await.map_err(storage)
    }

    async fn try_lease(&self, name: &str, holder: &str, now_us: Micros, ttl_us: Micros) -> Result<bool, RecordError> {
        self.store.try_lease(name, holder, now_us, ttl_us).await.map_err(storage)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), RecordError> {
        self.store.release_lease(name, holder).await.map_err(storage)
    }
}

/// A store failure as the recorder reports it.
fn storage(e: crate::store::StoreError) -> RecordError {
    RecordError::Storage(e.to_string())
}

async fn writer(store: Arc<dyn Store>, rules: Arc<HitRules>, committed: Arc<Notify>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (hits, waiters): (Vec<NewHit>, Vec<_>) = batch.drain(..).map(|p| (p.hit, p.done)).unzip();
        match store.record_hits(&hits, &rules).await {
            Ok(outcomes) => {
                committed.notify_one(); // new alerts may be in the outbox
                for (done, o) in waiters.into_iter().zip(outcomes) {
                    let _ = done.send(Ok(o));
                }
            }
            Err(e) if hits.len() > 1 => {
                // One bad hit must not sink the others: commit them one by one.
                tracing::warn!(error = %e, hits = hits.len(), "batch failed; recording its hits one at a time");
                for (hit, done) in hits.into_iter().zip(waiters) {
                    let result = store.record_hits(std::slice::from_ref(&hit), &rules).await;
                    let _ = done.send(match result {
                        Ok(mut o) if o.len() == 1 => Ok(o.remove(0)),
                        Ok(_) => Err(RecordError::Storage("store returned no outcome".into())),
                        Err(e) => {
                            tracing::error!(error = %e, token = %hit.token, "could not commit hit");
                            Err(RecordError::Storage(e.to_string()))
                        }
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not commit hit");
                for done in waiters {
                    let _ = done.send(Err(RecordError::Storage(e.to_string())));
                }
            }
        }
    }
}

/// A [`HitSink`] for listener unit tests: it keeps what it is given and answers with the
/// outcome it is told to. A poller's bookkeeping (state, processed objects, leases) is kept in
/// memory with the store's meaning, so a poller's tests can restart it on the same sink.
#[cfg(test)]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::model::{AlertStatus, TriggerKey};

    /// What [`FakeSink::record`] answers.
    #[derive(Debug, Clone)]
    pub enum Answer {
        /// `Recorded` with this token; hit ids count the hits handed in, from 1.
        Record(Token),
        /// `Dropped` with this token.
        Drop(Token),
        Unknown,
        Fail(RecordError),
    }

    pub struct FakeSink {
        pub answer: Mutex<Answer>,
        pub hits: Mutex<Vec<NewHit>>,
        pub amendments: Mutex<Vec<HitAmendment>>,
        /// Whether amendments match (the store checks the guard; the fake only says yes or no).
        pub amend_matches: bool,
        pub files: HashMap<(String, String), TokenFile>,
        /// The key index [`HitSink::trigger_keys`] reads: key → token id.
        pub keys: Vec<(TriggerKey, String)>,
        /// Poller state by name.
        pub state: Mutex<HashMap<String, String>>,
        /// Objects marked done: (source, key) → when.
        pub done: Mutex<HashMap<(String, String), Micros>>,
        /// Leases: name → (holder, expires_us).
        pub leases: Mutex<HashMap<String, (String, Micros)>>,
        /// When set, the bookkeeping calls fail with it (a poller's error paths).
        pub bookkeeping_fails: Mutex<Option<RecordError>>,
    }

    impl FakeSink {
        pub fn new(answer: Answer) -> FakeSink {
            FakeSink {
                answer: Mutex::new(answer),
                hits: Mutex::default(),
                amendments: Mutex::default(),
                amend_matches: true,
                files: HashMap::new(),
                keys: Vec::new(),
                state: Mutex::default(),
                done: Mutex::default(),
                leases: Mutex::default(),
                bookkeeping_fails: Mutex::default(),
            }
        }

        fn check(&self) -> Result<(), RecordError> {
            match &*self.bookkeeping_fails.lock().unwrap() {
                Some(e) => Err(e.clone()),
                None => Ok(()),
            }
        }

        pub fn hits(&self) -> Vec<NewHit> {
            self.hits.lock().unwrap().clone()
        }

        pub fn set_answer(&self, answer: Answer) {
            *self.answer.lock().unwrap() = answer;
        }
    }

    #[async_trait]
    impl HitSink for FakeSink {
        async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError> {
            let answer = self.answer.lock().unwrap().clone();
            let mut hits = self.hits.lock().unwrap();
            hits.push(hit);
            match answer {
                Answer::Record(token) => Ok(HitOutcome::Recorded {
                    hit_id: hits.len() as i64,
                    incident_id: Some(1),
                    status: AlertStatus::Alerted,
                    token,
                }),
                Answer::Drop(token) => Ok(HitOutcome::Dropped { token }),
                Answer::Unknown => Ok(HitOutcome::Unknown),
                Answer::Fail(e) => Err(e),
            }
        }

        async fn amend(&self, a: HitAmendment) -> Result<bool, RecordError> {
            self.amendments.lock().unwrap().push(a);
            Ok(self.amend_matches)
        }

        async fn token_file(&self, token_id: &str, name: &str) -> Result<Option<TokenFile>, RecordError> {
            Ok(self.files.get(&(token_id.to_string(), name.to_string())).cloned())
        }

        /// The token the sink is told to record for, when its id matches.
        async fn live_token(&self, token_id: &str) -> Result<Option<Token>, RecordError> {
            Ok(match &*self.answer.lock().unwrap() {
                Answer::Record(t) | Answer::Drop(t) if t.id == token_id => Some(t.clone()),
                Answer::Fail(e) => return Err(e.clone()),
                _ => None,
            })
        }

        async fn trigger_keys(&self, scheme: KeyScheme) -> Result<Vec<(String, String)>, RecordError> {
            self.check()?;
            let mut keys: Vec<_> = self
                .keys
                .iter()
                .filter(|(k, _)| k.scheme == scheme)
                .map(|(k, t)| (k.value.clone(), t.clone()))
                .collect();
            keys.sort();
            Ok(keys)
        }

        async fn poller_state_get(&self, name: &str) -> Result<Option<String>, RecordError> {
            self.check()?;
            Ok(self.state.lock().unwrap().get(name).cloned())
        }

        async fn poller_state_put(&self, name: &str, value: &str) -> Result<(), RecordError> {
            self.check()?;
            self.state.lock().unwrap().insert(name.into(), value.into());
            Ok(())
        }

        async fn objects_done(&self, source: &str, keys: &[String]) -> Result<HashSet<String>, RecordError> {
            self.check()?;
            let done = self.done.lock().unwrap();
            Ok(keys.iter().filter(|k| done.contains_key(&(source.to_string(), k.to_string()))).cloned().collect())
        }

        async fn mark_object_done(&self, source: &str, key: &str, now_us: Micros) -> Result<(), RecordError> {
            self.check()?;
            self.done.lock().unwrap().insert((source.into(), key.into()), now_us);
            Ok(())
        }

        async fn prune_objects_done(&self, older_than_us: Micros) -> Result<u64, RecordError> {
            self.check()?;
            let mut done = self.done.lock().unwrap();
            let before = done.len();
            done.retain(|_, when| *when >= older_than_us);
            Ok((before - done.len()) as u64)
        }

        async fn try_lease(
            &self,
            name: &str,
            holder: &str,
            now_us: Micros,
            ttl_us: Micros,
        ) -> Result<bool, RecordError> {
            self.check()?;
            let mut leases = self.leases.lock().unwrap();
            let free = match leases.get(name) {
                Some((h, expires_us)) => h == holder || *expires_us <= now_us,
                None => true,
            };
            if free {
                leases.insert(name.into(), (holder.into(), now_us.saturating_add(ttl_us)));
            }
            Ok(free)
        }

        async fn release_lease(&self, name: &str, holder: &str) -> Result<(), RecordError> {
            self.check()?;
            let mut leases = self.leases.lock().unwrap();
            if leases.get(name).is_some_and(|(h, _)| h == holder) {
                leases.remove(name);
            }
            Ok(())
        }
    }

    /// The fake's bookkeeping means what the store's does (the conformance suite checks the
    /// store's).
    #[tokio::test]
    async fn the_fakes_bookkeeping_follows_the_store() {
        let sink = FakeSink::new(Answer::Unknown);
        assert!(sink.try_lease("ct", "a", 0, 10).await.unwrap());
        assert!(!sink.try_lease("ct", "b", 5, 10).await.unwrap(), "held");
        assert!(sink.try_lease("ct", "a", 9, 10).await.unwrap(), "renewed by its holder, to 19");
        assert!(!sink.try_lease("ct", "b", 18, 10).await.unwrap());
        assert!(sink.try_lease("ct", "b", 19, 10).await.unwrap(), "expired");
        sink.release_lease("ct", "a").await.unwrap();
        assert!(!sink.try_lease("ct", "a", 20, 10).await.unwrap(), "only its holder releases it");
        sink.release_lease("ct", "b").await.unwrap();
        assert!(sink.try_lease("ct", "a", 20, 10).await.unwrap());

        sink.mark_object_done("s", "k1", 100).await.unwrap();
        sink.mark_object_done("s", "k2", 200).await.unwrap();
        sink.mark_object_done("other", "k3", 100).await.unwrap();
        let keys = ["k1", "k2", "k3"].map(String::from);
        assert_eq!(sink.objects_done("s", &keys).await.unwrap(), HashSet::from(["k1".into(), "k2".into()]));
        assert_eq!(sink.prune_objects_done(150).await.unwrap(), 2);
        assert_eq!(sink.objects_done("s", &keys).await.unwrap(), HashSet::from(["k2".into()]));

        assert_eq!(sink.poller_state_get("x").await.unwrap(), None);
        sink.poller_state_put("x", "1").await.unwrap();
        sink.poller_state_put("x", "2").await.unwrap();
        assert_eq!(sink.poller_state_get("x").await.unwrap().as_deref(), Some("2"));
        *sink.bookkeeping_fails.lock().unwrap() = Some(RecordError::Closed);
        assert!(matches!(sink.poller_state_get("x").await, Err(RecordError::Closed)));
    }
}
