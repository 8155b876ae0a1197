//! The AWS listener: a listener without a socket that polls AWS for uses of honey AWS keys
//! and buckets, and hands them to the hit sink like any listener.
//!
//! Three jobs, each a file: [`trail`] reads the CloudTrail trail's log files (by listing the
//! bucket under a stored cursor, or from SQS notifications), [`s3_logs`] reads the server access
//! logs of `aws-s3` buckets, and [`last_used`] is the safety net for APIs CloudTrail does not log
//! (a key's last-used time that moved with no CloudTrail record to show for it).
//!
//! Only one node at a time polls (the `aws-poller` lease in the store), so several nodes on one
//! PostgreSQL database neither double the AWS calls nor race over the cursors. Every record
//! becomes a hit with its event id (CloudTrail's eventID, S3's request id), and the kinds judge
//! a repeat of a stored event id as nothing ([`crate::model::Judgement::Once`]): an object read
//! twice — CloudTrail delivering twice, or a crash between recording a file's hits and marking
//! the file done — gives each hit once. A malformed or unreadable object is logged, counted and
//! marked done (it would fail the same way again), so it never stalls the cursor.
//!
//! [`trail`]: super::trail
//! [`s3_logs`]: super::s3_logs
//! [`last_used`]: super::last_used

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aws::Aws;
use crate::listeners::{stopped, Bound, Common, Listener, ListenerContext};
use crate::model::now_us;

/// Default pause between rounds.
pub const DEFAULT_INTERVAL: u64 = 30;
/// Name of the polling lease.
const LEASE: &str = "aws-poller";

/// CloudTrail ingestion's settings: flags `--cloudtrail-*`, `TRAPLINE_CLOUDTRAIL_*`, TOML
/// `[listeners.cloudtrail]`. AWS access itself is `[aws]` (`--aws-*`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTrailSettings {
    /// The CloudTrail trail's S3 bucket (its log files are read from here).
    #[arg(
        id = "cloudtrail_bucket",
        long = "cloudtrail-bucket",
        value_name = "BUCKET",
        env = "TRAPLINE_CLOUDTRAIL_BUCKET"
    )]
    pub bucket: Option<String>,
    /// The trail's S3 key prefix, before `AWSLogs/` (default none).
    #[arg(
        id = "cloudtrail_prefix",
        long = "cloudtrail-prefix",
        value_name = "PREFIX",
        env = "TRAPLINE_CLOUDTRAIL_PREFIX"
    )]
    pub prefix: Option<String>,
    /// An SQS queue receiving the trail's SNS notifications (or S3 event notifications) of new
    /// log files: read it (long polling) instead of listing the bucket.
    #[arg(
        id = "cloudtrail_sqs_url",
        long = "cloudtrail-sqs-url",
        value_name = "URL",
        env = "TRAPLINE_CLOUDTRAIL_SQS_URL"
    )]
    pub sqs_url: Option<String>,
    /// Seconds between polls of the trail (listing) or after an empty SQS long poll (default 30).
    #[arg(
        id = "cloudtrail_interval",
        long = "cloudtrail-interval",
        value_name = "SECS",
        env = "TRAPLINE_CLOUDTRAIL_INTERVAL"
    )]
    pub interval: Option<u64>,
}

/// Counts of what the poller skipped or failed at, logged as they grow.
#[derive(Debug, Default)]
pub struct Stats {
    pub files: AtomicU64,
    pub records: AtomicU64,
    pub hits: AtomicU64,
    pub bad_objects: AtomicU64,
    pub bad_records: AtomicU64,
    pub bad_messages: AtomicU64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} files, {} records, {} hits; skipped {} bad objects, {} bad records, {} bad messages",
            g(&self.files),
            g(&self.records),
            g(&self.hits),
            g(&self.bad_objects),
            g(&self.bad_records),
            g(&self.bad_messages)
        )
    }
}

/// What the jobs share.
pub struct Poller {
    pub aws: Aws,
    pub trail: Option<super::trail::Trail>,
    pub last_used_every: Duration,
    pub last_used_grace: Duration,
    pub interval: Duration,
    pub stats: Stats,
}

pub struct AwsListener {
    poller: Arc<Poller>,
}

impl AwsListener {
    /// On whenever AWS is set up: the safety net and access logs need no trail; the trail
    /// needs a bucket or a queue.
    pub fn build(s: &CloudTrailSettings, common: &Common) -> anyhow::Result<Option<Box<dyn Listener>>> {
        let Some(aws) = common.aws.clone() else {
            anyhow::ensure!(
                s.bucket.is_none() && s.sqs_url.is_none(),
                "cloudtrail_bucket and cloudtrail_sqs_url need AWS settings: set --aws-region too"
            );
            return Ok(None);
        };
        let interval = s.interval.unwrap_or(DEFAULT_INTERVAL);
        anyhow::ensure!((1..=86_400).contains(&interval), "cloudtrail_interval must be 1 to 86400 seconds");
        let trail = super::trail::Trail::from_settings(s)?;
        let poller = Poller {
            aws,
            trail,
            last_used_every: Duration::from_secs(common.aws_last_used.0.max(1)),
            last_used_grace: Duration::from_secs(common.aws_last_used.1),
            interval: Duration::from_secs(interval),
            stats: Stats::default(),
        };
        Ok(Some(Box::new(AwsListener { poller: Arc::new(poller) })))
    }
}

#[async_trait]
impl Listener for AwsListener {
    fn name(&self) -> &'static str {
        "cloudtrail"
    }

    async fn bind(self: Box<Self>) -> anyhow::Result<Box<dyn Bound>> {
        Ok(Box::new(BoundPoller { poller: self.poller }))
    }
}

struct BoundPoller {
    poller: Arc<Poller>,
}

#[async_trait]
impl Bound for BoundPoller {
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }

    fn describe(&self) -> Vec<String> {
        let p = &self.poller;
        let every = p.interval.as_secs();
        let trail = match &p.trail {
            Some(t) => format!("ingest CloudTrail:  {} (every {every} s)", t.describe()),
            None => "ingest CloudTrail:  off (no --cloudtrail-bucket or --cloudtrail-sqs-url)".to_string(),
        };
        vec![
            format!(
                "AWS:              region {}{}",
                p.aws.region(),
                p.aws.endpoint().map(|e| format!(", endpoint {e}")).unwrap_or_default()
            ),
            trail,
            format!("ingest S3 logs:   aws-s3 buckets' access logs (every {every} s)"),
            format!(
                "AWS safety net:   GetAccessKeyLastUsed every {} s, grace {} s",
                p.last_used_every.as_secs(),
                p.last_used_grace.as_secs()
            ),
        ]
    }

    async fn run(self: Box<Self>, cx: ListenerContext) -> anyhow::Result<()> {
        let p = self.poller;
        let holder = cx.node.clone();
        let lease_us = (p.interval.max(Duration::from_secs(30)) * 4 + Duration::from_secs(60)).as_micros() as i64;
        let mut stop = cx.stop.clone();
        let mut last_used_due = tokio::time::Instant::now();
        let mut reported = String::new();
        loop {
            let work = async {
                if !cx.hits.try_lease(LEASE, &holder, now_us(), lease_us).await? {
                    return anyhow::Ok(());
                }
                if let Some(t) = &p.trail {
                    t.round(&p, &cx).await?;
                }
                super::s3_logs::round(&p, &cx).await?;
                if tokio::time::Instant::now() >= last_used_due {
                    last_used_due = tokio::time::Instant::now() + p.last_used_every;
                    super::last_used::round(&p, &cx).await?;
                }
                Ok(())
            };
            // A round is cut short at shutdown; whatever it recorded is in, and what it had
            // not marked done is read again (and deduplicated) next time.
            tokio::select! {
                r = work => if let Err(e) = r {
                    tracing::warn!(error = %format!("{e:#}"), "AWS poll failed; trying again next round");
                },
                _ = stopped(&mut stop) => break,
            }
            let line = p.stats.line();
            if line != reported {
                tracing::info!(stats = %line, "AWS poller");
                reported = line;
            }
            let pause =
                if p.trail.as_ref().is_some_and(|t| t.long_polls()) { Duration::from_secs(1) } else { p.interval };
            let pause = pause.min(p.last_used_every);
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let _ = cx.hits.release_lease(LEASE, &holder).await;
        Ok(())
    }
}
