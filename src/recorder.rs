//! The hit recorder: group commit between the listeners and the store.
//!
//! Listeners hand a [`NewHit`] to [`Recorder::record`] and wait. One writer task takes
//! whatever hits are queued (up to [`MAX_BATCH`]) and commits them in one transaction, then
//! wakes every waiter. While a commit is in flight new hits queue up and form the next batch,
//! so under load one fsync serves many hits and with no load a hit is committed at once.
//! A listener answers only after `record` returns, so every answered hit is durable.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::model::{HitOutcome, NewHit};
use crate::store::Store;

/// Most hits committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Hits that may wait for the writer before listeners feel back-pressure.
const QUEUE: usize = 16 * 1024;

struct Pending {
    hit: NewHit,
    done: oneshot::Sender<Result<HitOutcome, RecordError>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("recorder is shut down")]
    Closed,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the writer task. It ends once every `Recorder` clone is dropped and the queue
    /// is drained.
    pub fn start(store: Arc<dyn Store>) -> (Recorder, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::spawn(writer(store, rx));
        (Recorder { tx }, handle)
    }

    /// Records one hit; returns once it is committed (or known to be ignored).
    pub async fn record(&self, hit: NewHit) -> Result<HitOutcome, RecordError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Pending { hit, done }).await.map_err(|_| RecordError::Closed)?;
        wait.await.map_err(|_| RecordError::Closed)?
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (hits, waiters): (Vec<NewHit>, Vec<_>) = batch.drain(..).map(|p| (p.hit, p.done)).unzip();
        match store.record_hits(&hits).await {
            Ok(outcomes) => {
                for (done, o) in waiters.into_iter().zip(outcomes) {
                    let _ = done.send(Ok(o));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, hits = hits.len(), "could not commit hits");
                let msg = e.to_string();
                for done in waiters {
                    let _ = done.send(Err(RecordError::Storage(msg.clone())));
                }
            }
        }
    }
}
