//! The hit recorder: group commit between the listeners and the store.
//!
//! Listeners hand a [`NewHit`] to [`Recorder::record`] and wait. One writer task takes
//! whatever hits are queued (up to [`MAX_BATCH`]) and commits them in one transaction, then
//! wakes every waiter. While a commit is in flight new hits queue up and form the next batch,
//! so under load one fsync serves many hits and with no load a hit is committed at once.
//! A listener answers only after `record` returns, so every answered hit is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::model::{HitOutcome, NewHit};
use crate::store::{HitRules, Store};

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
        let handle = tokio::spawn(writer(store, rules, committed, rx));
        (Recorder { tx }, handle)
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
                            tracing::error!(error = %e, token = %hit.token_id, "could not commit hit");
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
