//! A small pool of low-priority threads for CPU-heavy work that callers of the API ask for
//! (decoding uploaded images today; documents and signing later), so that it never runs on
//! the async workers that serve hits.
//!
//! Bounded twice: a few threads (so at most that many jobs' memory at once) and a short
//! queue; when the queue is full a job is refused at once with [`CoreError::Busy`], which the
//! dialects answer with 503, instead of piling up. The threads run at nice 10, so on a busy
//! host the listeners win the CPU. Written by hand because it is forty lines and the crates
//! for it (rayon, threadpool) bring work stealing or unbounded queues we do not want.

use std::sync::mpsc;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::error::{CoreError, CoreResult};

type Job = Box<dyn FnOnce() + Send>;

pub struct WorkPool {
    queue: Mutex<mpsc::SyncSender<Job>>,
}

impl WorkPool {
    /// `threads` workers (at least 1) and room for `queued` waiting jobs.
    pub fn new(threads: usize, queued: usize) -> WorkPool {
        let (tx, rx) = mpsc::sync_channel::<Job>(queued);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("trapline-work-{i}"))
                .spawn(move || {
                    // setpriority(PRIO_PROCESS, 0) acts on the calling thread on Linux;
                    // failure only leaves the priority as it was.
                    let _ = rustix::process::setpriority_process(None, 10);
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool is gone
                        }
                    }
                })
                .expect("cannot start a worker thread");
        }
        WorkPool { queue: Mutex::new(tx) }
    }

    /// The pool for this host: one thread per two cores (at least one), four jobs queued.
    pub fn for_host() -> WorkPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkPool::new(cores / 2, 4)
    }

    /// Runs `f` on the pool and waits for its answer; Busy when the queue is full.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> CoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let sent = match self.queue.lock() {
            Ok(q) => q.try_send(job),
            Err(_) => return Err(CoreError::Busy),
        };
        sent.map_err(|_| CoreError::Busy)?;
        rx.await.map_err(|_| CoreError::Busy) // the job panicked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[tokio::test]
    async fn runs_jobs_off_the_caller_and_refuses_past_its_queue() {
        let pool = Arc::new(WorkPool::new(1, 1));
        let caller = std::thread::current().id();
        assert_ne!(pool.run(move || std::thread::current().id()).await.unwrap(), caller);
        // SAFETY: getpriority of this thread.
        let nice = pool.run(|| rustix::process::getpriority_process(None).unwrap()).await.unwrap();
        assert_eq!(nice, 10);
        // hold the one worker, fill the one queue slot: the next job is refused at once
        let gate = Arc::new(Barrier::new(2));
        let (started_tx, started) = std::sync::mpsc::channel();
        let g = gate.clone();
        let p = pool.clone();
        let held = tokio::spawn(async move {
            p.run(move || {
                started_tx.send(()).unwrap();
                g.wait();
            })
            .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
        // the worker is busy: one job fits in the queue, the next does not
        assert!(pool.queue.lock().unwrap().try_send(Box::new(|| {})).is_ok());
        assert!(matches!(pool.run(|| 1).await, Err(CoreError::Busy)));
        gate.wait();
        held.await.unwrap().unwrap();
        // and once the worker is free again, jobs run
        let mut again = pool.run(|| 2).await;
        for _ in 0..100 {
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            again = pool.run(|| 2).await;
        }
        assert_eq!(again.unwrap(), 2);
    }
}
