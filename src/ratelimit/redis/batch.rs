//! Decisions of concurrent requests share one script call (one Redis, Sentinel).
//!
//! A request's decision is queued; one driver task sends whatever is queued as one
//! `EVALSHA` of [`super::scripts::CHECK`], with at most [`IN_FLIGHT`] calls out at a
//! time. An idle gateway therefore sends each decision at once (a batch of one), and a
//! busy one sends as many decisions per round trip as arrived during the last one: the
//! per-command cost of Redis and of the client (a write, a read, a reply to parse) is
//! shared by the whole batch. The script runs a batch's requests in order, each
//! all-or-nothing, seeing the charges of the ones before it: exactly as if they had
//! been sent one by one.

use super::conn::Connector;
use super::reply::parse_batch;
use crate::ratelimit::gcra::Outcome;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Script calls out at once: while they are, new decisions queue for the next batch.
pub const IN_FLIGHT: usize = 4;
/// Most requests in one call (bounds the script's run time, during which Redis serves
/// no one else).
pub const MAX_BATCH: usize = 64;

/// One request's decision: its buckets' keys and (period, horizon) in µs.
pub struct Job {
    pub keys: Vec<String>,
    pub rates: Vec<(u64, u64)>,
    pub reply: oneshot::Sender<Result<Vec<Outcome>, String>>,
}

/// The queue; the driver stops when the store (and so this) is dropped.
pub struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// Starts the driver (inside a Tokio runtime).
    pub fn start(connector: Arc<Connector>, script: redis::Script) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(rx, connector, script));
        Batcher { tx }
    }

    /// Queue a decision; `None` if the driver is gone.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.tx
            .send(job)
            .map_err(|_| "rate limit batch driver stopped".to_string())
    }
}

async fn drive(
    mut rx: mpsc::UnboundedReceiver<Job>,
    connector: Arc<Connector>,
    script: redis::Script,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut jobs = Vec::with_capacity(8);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (connector, script) = (connector.clone(), script.clone());
        tokio::spawn(async move {
            let result = send(&connector, &script, &jobs).await;
            drop(permit);
            match result {
                Ok(mut outcomes) => {
                    for (job, outcome) in jobs.into_iter().zip(outcomes.drain(..)) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for job in jobs {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

async fn send(
    connector: &Arc<Connector>,
    script: &redis::Script,
    jobs: &[Job],
) -> Result<Vec<Vec<Outcome>>, String> {
    let conn = connector.get()?;
    let mut inv = script.prepare_invoke();
    inv.arg(jobs.len());
    for job in jobs {
        inv.arg(job.keys.len());
    }
    for job in jobs {
        for (key, (period, horizon)) in job.keys.iter().zip(&job.rates) {
            inv.key(key).arg(*period).arg(*horizon);
        }
    }
    let raw: Vec<u8> = conn.invoke(&inv).await.map_err(|e| connector.failed(&e))?;
    let sizes: Vec<usize> = jobs.iter().map(|j| j.keys.len()).collect();
    parse_batch(&raw, &sizes)
}
