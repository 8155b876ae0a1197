//! What the trail reader and the access-log reader share: listing a bucket under a prefix
//! from a name on, page by page, keeping the keys the done-objects ledger does not have and
//! the newest name seen (the next cursor); and reading one object into hits, its parser on a
//! blocking thread feeding the recorder through a bounded channel, so a large file is held
//! once (as fetched) and never as a list of events.

use super::event::{AwsEvent, FileStats};
use super::listener::{Poller, Stats};
use super::record::{self, Watched};
use crate::aws::AwsError;
use crate::listeners::ListenerContext;

/// Keys one listing call asks for.
const PAGE: u32 = 1000;

/// One listing of `bucket` under `prefix`, from `start_after` on.
pub struct Listing<'a> {
    bucket: &'a str,
    prefix: &'a str,
    start_after: String,
    continuation: Option<String>,
    ended: bool,
    cursor: Option<String>,
    newest: Option<String>,
}

impl<'a> Listing<'a> {
    /// `cursor` is the newest name read before (what [`Listing::newest_if_moved`] compares with).
    pub fn new(bucket: &'a str, prefix: &'a str, start_after: String, cursor: Option<String>) -> Self {
        Listing { bucket, prefix, start_after, continuation: None, ended: false, newest: cursor.clone(), cursor }
    }

    /// The next page's keys that `keep` accepts and `ledger` has not marked done, or `None`
    /// once the listing has ended.
    pub async fn next_page(
        &mut self,
        p: &Poller,
        cx: &ListenerContext,
        ledger: &str,
        keep: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Option<Vec<String>>> {
        if self.ended {
            return Ok(None);
        }
        let page = p
            .aws
            .list_objects(self.bucket, self.prefix, Some(&self.start_after), self.continuation.as_deref(), None, PAGE)
            .await?;
        self.continuation = page.next_continuation;
        self.ended = self.continuation.is_none();
        let keys: Vec<String> = page.objects.into_iter().map(|o| o.key).filter(|k| keep(k)).collect();
        if let Some(last) = keys.last() {
            if self.newest.as_deref().is_none_or(|n| n < last.as_str()) {
                self.newest = Some(last.clone());
            }
        }
        let names: Vec<String> = keys.iter().map(|k| ledger_name(self.bucket, k)).collect();
        let done = cx.hits.objects_done(ledger, &names).await?;
        Ok(Some(keys.into_iter().zip(names).filter(|(_, n)| !done.contains(n)).map(|(k, _)| k).collect()))
    }

    /// The newest name listed, when it is newer than the cursor the listing started from.
    pub fn newest_if_moved(&self) -> Option<&str> {
        self.newest.as_deref().filter(|n| self.cursor.as_deref() != Some(*n))
    }
}

/// The done-objects ledger's name for an object.
pub fn ledger_name(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// Why an object was not read.
pub enum ObjectError {
    /// The object is bad (missing, forbidden, too large, not the format): skip it for good.
    Skip(String),
    /// Trapline could not keep up (storage, AWS): try again later.
    Retry(anyhow::Error),
}

/// Fetches one object (at most `max_bytes`) and records a hit for every event `parse` finds in
/// it that names a watched key or bucket. Events recorded before a parse error stay recorded
/// (their event ids dedupe a re-read); the parse statistics go into the poller's counters.
pub async fn read_object<P>(
    p: &Poller,
    cx: &ListenerContext,
    watched: &Watched,
    bucket: &str,
    key: &str,
    max_bytes: u64,
    parse: P,
) -> Result<(), ObjectError>
where
    P: FnOnce(&[u8], &mut dyn FnMut(AwsEvent)) -> Result<FileStats, String> + Send + 'static,
{
    let bytes = match p.aws.get_object(bucket, key, max_bytes).await {
        Ok(b) => b,
        Err(e)
            if ["NoSuchKey", "NoSuchBucket", "AccessDenied"].iter().any(|c| e.is_code(c))
                || matches!(e, AwsError::TooLarge { .. }) =>
        {
            return Err(ObjectError::Skip(e.to_string()))
        }
        Err(e) => return Err(ObjectError::Retry(e.into())),
    };
    Stats::add(&p.stats.files, 1);
    if watched.is_empty() {
        return Ok(()); // no honey key or bucket yet: nothing in it can be a hit
    }
    let (tx, rx) = record::channel();
    let w = watched.clone();
    let parsing = tokio::task::spawn_blocking(move || {
        parse(&bytes, &mut |ev| {
            if !w.named_by(&ev).is_empty() {
                // The recorder side is gone only when it failed: its error is returned below.
                let _ = tx.blocking_send(ev);
            }
        })
    });
    let stored = record::record_events(cx, watched, rx).await;
    let parsed = parsing.await.map_err(|e| ObjectError::Retry(anyhow::anyhow!("parser task failed: {e}")))?;
    Stats::add(&p.stats.hits, stored.map_err(|e| ObjectError::Retry(e.into()))?);
    let stats = parsed.map_err(ObjectError::Skip)?;
    Stats::add(&p.stats.records, stats.records);
    if stats.skipped > 0 {
        Stats::add(&p.stats.bad_records, stats.skipped);
        tracing::warn!(bucket, key, skipped = stats.skipped, first = ?stats.first_skip, "records that do not parse: skipped");
    }
    Ok(())
}

/// [`read_object`], then marks the object done in `ledger`. One that cannot be read is logged
/// (as `what`), counted and marked done too; a failure to record is returned with the object
/// unmarked, so it is read again next round.
#[allow(clippy::too_many_arguments)]
pub async fn read_and_mark<P>(
    p: &Poller,
    cx: &ListenerContext,
    watched: &Watched,
    ledger: &str,
    what: &str,
    bucket: &str,
    key: &str,
    max_bytes: u64,
    parse: P,
) -> anyhow::Result<()>
where
    P: FnOnce(&[u8], &mut dyn FnMut(AwsEvent)) -> Result<FileStats, String> + Send + 'static,
{
    match read_object(p, cx, watched, bucket, key, max_bytes, parse).await {
        Ok(()) => {}
        Err(ObjectError::Skip(e)) => {
            Stats::add(&p.stats.bad_objects, 1);
            tracing::warn!(bucket, key, error = %e, "unreadable {what}: skipped");
        }
        Err(ObjectError::Retry(e)) => return Err(e),
    }
    cx.hits.mark_object_done(ledger, &ledger_name(bucket, key), crate::model::now_us()).await?;
    Ok(())
}
