//! Reading the CloudTrail trail: which log files to read, and reading one.
//!
//! **Listing** (no queue configured): each round finds the trail's partitions — `AWSLogs/`,
//! then accounts (and organization ids), then regions — and lists each region's files from
//! the day before its cursor's day on (`StartAfter`), so a file delivered late under an earlier
//! name is still found; the done-objects ledger in the store says which of those are read
//! already. The cursor (the newest file read, per region) is kept in the store, so a restart
//! resumes where it was. **SQS**: each round long-polls the queue; a notification names the
//! files (SNS-wrapped or raw, CloudTrail's `{"s3Bucket", "s3ObjectKey"}` or S3 event
//! notifications), each is read unless the ledger has it, and the message is deleted once its
//! files are in (a crash before that redelivers it, and the ledger or the event ids dedupe).

use chrono::{Datelike, NaiveDate};

use super::event::AwsEvent;
use super::listener::{CloudTrailSettings, Poller, Stats};
use super::objects::{self, LogKey};
use super::record::Watched;
use super::scan::{self, Listing};
use crate::listeners::ListenerContext;
use crate::model::now_us;

/// Largest compressed log object read.
pub const MAX_OBJECT: u64 = 128 * 1024 * 1024;
/// Largest decompressed log object parsed (CloudTrail files are at most a few hundred MB).
pub const MAX_DECOMPRESSED: u64 = 1024 * 1024 * 1024;
/// Keys one call lists when finding accounts and regions.
const PAGE: u32 = 1000;
/// The ledger's source name for trail files.
const LEDGER: &str = "cloudtrail";
/// How long the ledger remembers a file (the listing looks back a day before its cursor).
const LEDGER_DAYS: i64 = 4;

pub struct Trail {
    pub bucket: Option<String>,
    pub prefix: String,
    pub sqs_url: Option<String>,
}

impl Trail {
    pub fn from_settings(s: &CloudTrailSettings) -> anyhow::Result<Option<Trail>> {
        let bucket = s.bucket.as_deref().map(str::trim).filter(|b| !b.is_empty()).map(str::to_string);
        let sqs_url = s.sqs_url.as_deref().map(str::trim).filter(|b| !b.is_empty()).map(str::to_string);
        if bucket.is_none() && sqs_url.is_none() {
            anyhow::ensure!(s.prefix.is_none(), "cloudtrail_prefix needs cloudtrail_bucket");
            return Ok(None);
        }
        if let Some(u) = &sqs_url {
            anyhow::ensure!(
                url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                "cloudtrail_sqs_url must be the queue's https URL"
            );
        }
        let mut prefix = s.prefix.clone().unwrap_or_default().trim().trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Some(Trail { bucket, prefix, sqs_url }))
    }

    pub fn describe(&self) -> String {
        match (&self.sqs_url, &self.bucket) {
            (Some(q), _) => format!("SQS {q}"),
            (None, Some(b)) => format!("s3://{b}/{}", self.prefix),
            (None, None) => "nothing".into(),
        }
    }

    /// Whether rounds long-poll (and so need no pause of their own).
    pub fn long_polls(&self) -> bool {
        self.sqs_url.is_some()
    }

    pub async fn round(&self, p: &Poller, cx: &ListenerContext) -> anyhow::Result<()> {
        match &self.sqs_url {
            Some(q) => self.sqs_round(p, cx, q).await,
            None => self.list_round(p, cx, &Watched::load(cx).await?).await,
        }?;
        let _ = cx.hits.prune_objects_done(now_us() - LEDGER_DAYS * 86_400_000_000).await;
        Ok(())
    }

    async fn sqs_round(&self, p: &Poller, cx: &ListenerContext, queue: &str) -> anyhow::Result<()> {
        // Until the queue is empty, at most a few batches a round (so the other jobs run).
        for _ in 0..10 {
            let msgs = p.aws.receive_messages(queue, 10, 20, Some(300)).await?;
            if msgs.is_empty() {
                return Ok(());
            }
            // Loaded after the long poll, which may have waited while a token was made.
            let watched = &Watched::load(cx).await?;
            'messages: for m in msgs {
                match super::notify::parse_notification(&m.body) {
                    Ok(super::notify::Notification::Objects(objs)) => {
                        for (bucket, key) in objs {
                            if !key.ends_with(".json.gz") || is_digest_or_insight(&key) {
                                continue; // digests, insights, anything that is not a log file
                            }
                            if let Err(e) = self.read_once(p, cx, watched, &bucket, &key).await {
                                // Kept in the queue: it comes back after its visibility timeout
                                // (a queue with a dead-letter queue moves it there in the end).
                                tracing::warn!(error = %format!("{e:#}"), message_id = %m.message_id,
                                    "could not read the files of an SQS message; it stays in the queue");
                                continue 'messages;
                            }
                        }
                    }
                    Ok(super::notify::Notification::Ignore(why)) => {
                        tracing::debug!(reason = %why, "SQS message without log files");
                    }
                    Err(e) => {
                        Stats::add(&p.stats.bad_messages, 1);
                        tracing::warn!(error = %e, message_id = %m.message_id, "unreadable SQS message: deleted");
                    }
                }
                p.aws.delete_message(queue, &m.receipt_handle).await?;
            }
        }
        Ok(())
    }

    async fn list_round(&self, p: &Poller, cx: &ListenerContext, watched: &Watched) -> anyhow::Result<()> {
        let Some(bucket) = &self.bucket else { return Ok(()) };
        for region_prefix in self.partitions(p, bucket).await? {
            self.list_region(p, cx, watched, bucket, &region_prefix).await?;
        }
        Ok(())
    }

    /// `…/AWSLogs/[<org>/]<account>/CloudTrail/<region>/` of every account and region.
    async fn partitions(&self, p: &Poller, bucket: &str) -> anyhow::Result<Vec<String>> {
        let children = |prefix: String| async move {
            let page = p.aws.list_objects(bucket, &prefix, None, None, Some("/"), PAGE).await?;
            anyhow::Ok(page.common_prefixes)
        };
        let mut accounts = Vec::new();
        for c in children(format!("{}AWSLogs/", self.prefix)).await? {
            let name = c.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
            if name.starts_with("o-") {
                accounts.extend(children(c).await?); // organization trail: accounts below the org id
            } else {
                accounts.push(c);
            }
        }
        let mut regions = Vec::new();
        for a in accounts {
            regions.extend(children(format!("{a}CloudTrail/")).await?);
        }
        Ok(regions)
    }

    async fn list_region(
        &self,
        p: &Poller,
        cx: &ListenerContext,
        watched: &Watched,
        bucket: &str,
        region_prefix: &str,
    ) -> anyhow::Result<()> {
        let cursor_name = format!("cloudtrail-cursor:{bucket}/{region_prefix}");
        let cursor = cx.hits.poller_state_get(&cursor_name).await?;
        let from_day = cursor
            .as_deref()
            .and_then(|k| objects::parse_log_key(k, &self.prefix))
            .and_then(|k: LogKey| NaiveDate::from_ymd_opt(k.date.0, k.date.1, k.date.2))
            .unwrap_or_else(|| chrono::Utc::now().date_naive())
            .pred_opt()
            .unwrap_or(NaiveDate::MIN);
        // Start after the name of the day before (`…/YYYY/MM/DD`, which sorts before its files).
        let start_after =
            format!("{region_prefix}{:04}/{:02}/{:02}", from_day.year(), from_day.month(), from_day.day());
        let mut listing = Listing::new(bucket, region_prefix, start_after, cursor);
        let is_log = |k: &str| objects::parse_log_key(k, &self.prefix).is_some();
        while let Some(keys) = listing.next_page(p, cx, LEDGER, is_log).await? {
            for k in keys {
                read_file(p, cx, watched, bucket, &k).await?; // next_page left out those done
            }
        }
        if let Some(n) = listing.newest_if_moved() {
            cx.hits.poller_state_put(&cursor_name, n).await?;
        }
        Ok(())
    }

    /// Reads one log file unless the ledger has it (an SQS notification may name one read
    /// before), then marks it done.
    async fn read_once(
        &self,
        p: &Poller,
        cx: &ListenerContext,
        watched: &Watched,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<()> {
        let ledger_key = scan::ledger_name(bucket, key);
        if cx.hits.objects_done(LEDGER, std::slice::from_ref(&ledger_key)).await?.contains(&ledger_key) {
            return Ok(());
        }
        read_file(p, cx, watched, bucket, key).await
    }
}

/// Reads one log file and marks it done ([`scan::read_and_mark`]).
async fn read_file(p: &Poller, cx: &ListenerContext, watched: &Watched, bucket: &str, key: &str) -> anyhow::Result<()> {
    let parse = |gz: &[u8], f: &mut dyn FnMut(AwsEvent)| {
        super::records::for_each_record(gz, MAX_DECOMPRESSED, f).map_err(|e| e.to_string())
    };
    scan::read_and_mark(p, cx, watched, LEDGER, "CloudTrail log file", bucket, key, MAX_OBJECT, parse).await
}

fn is_digest_or_insight(key: &str) -> bool {
    key.contains("/CloudTrail-Digest/") || key.contains("/CloudTrail-Insight/")
}
