//! The hit recorder: group commit between the listeners and the store.
//!
//! Listeners hand a [`NewHit`] to [`Recorder::record`] and wait. One writer task takes
//! whatever hits are queued (up to [`MAX_BATCH`]) and commits them in one transaction, then
//! wakes every waiter. While a commit is in flight new hits queue up and form the next batch,
//! so under load one fsync serves many hits and with no load a hit is committed at once.
//! A listener answers only after `record` returns, so every answered hit is durable.
//!
//! Listeners see the recorder only as a [`HitSink`]: what they record, what they add to a
//! recorded hit later and the token files they serve all go through it, so no listener holds
//! the store, and a listener's unit tests use a fake sink instead (`recorder::testing`, in test builds).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::model::{HitOutcome, NewHit, Token, TokenFile};
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
        self.store
            .amend_hit(a.hit_id, &a.token_id, &a.guard, &a.key, a.value)
            .await
            .map_err(|e| RecordError::Storage(e.to_string()))
    }

    async fn token_file(&self, token_id: &str, name: &str) -> Result<Option<TokenFile>, RecordError> {
        self.store.get_token_file(token_id, name).await.map_err(|e| RecordError::Storage(e.to_string()))
    }

    async fn live_token(&self, token_id: &str) -> Result<Option<Token>, RecordError> {
        let token = self.store.get_token(token_id).await.map_err(|e| RecordError::Storage(e.to_string()))?;
        Ok(token.filter(|t| t.enabled))
    }
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
/// outcome it is told to.
#[cfg(test)]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::model::AlertStatus;

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
    }

    impl FakeSink {
        pub fn new(answer: Answer) -> FakeSink {
            FakeSink {
                answer: Mutex::new(answer),
                hits: Mutex::default(),
                amendments: Mutex::default(),
                amend_matches: true,
                files: HashMap::new(),
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
    }
}
