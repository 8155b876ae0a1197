//! Reading the S3 server access logs of `aws-s3` buckets: each round lists each enabled
//! token's log bucket under its prefix (`<source bucket>/`) from the day before its cursor on,
//! reads the objects the done-objects ledger does not have, and records a hit for every request
//! against the monitored bucket. S3 names log objects by delivery time
//! (`<prefix>YYYY-MM-DD-HH-MM-SS-<unique>`), so the cursor is the newest name read, kept in the
//! store per token. Delivery is best effort and often hours late (AWS says so).

use chrono::{Datelike, NaiveDate};

use super::event::AwsEvent;
use super::listener::Poller;
use super::record::Watched;
use super::scan::{self, Listing};
use crate::kinds::aws_s3::AwsS3Params;
use crate::kinds::params;
use crate::listeners::ListenerContext;
use crate::model::KeyScheme;

/// Largest access-log object read (S3 writes small ones, a few MB at most).
pub const MAX_OBJECT: u64 = 64 * 1024 * 1024;
const LEDGER: &str = "s3-access-log";

pub async fn round(p: &Poller, cx: &ListenerContext) -> anyhow::Result<()> {
    let buckets = cx.hits.trigger_keys(KeyScheme::S3Bucket).await?;
    if buckets.is_empty() {
        return Ok(());
    }
    let watched = Watched { keys: Default::default(), buckets: buckets.iter().map(|(b, _)| b.clone()).collect() };
    for (_, token_id) in &buckets {
        let Some(token) = cx.hits.live_token(token_id).await? else { continue };
        let s: AwsS3Params = params(&token);
        if s.s3_log_bucket.is_empty() {
            continue;
        }
        read_token_logs(p, cx, &watched, token_id, &s).await?;
    }
    Ok(())
}

async fn read_token_logs(
    p: &Poller,
    cx: &ListenerContext,
    watched: &Watched,
    token_id: &str,
    s: &AwsS3Params,
) -> anyhow::Result<()> {
    let cursor_name = format!("s3-log-cursor:{token_id}");
    let cursor = cx.hits.poller_state_get(&cursor_name).await?;
    let day = cursor
        .as_deref()
        .and_then(|k| k.strip_prefix(&s.log_prefix))
        .and_then(|rest| NaiveDate::parse_from_str(rest.get(..10)?, "%Y-%m-%d").ok())
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
        .pred_opt()
        .unwrap_or(NaiveDate::MIN);
    let start_after = format!("{}{:04}-{:02}-{:02}", s.log_prefix, day.year(), day.month(), day.day());
    let mut listing = Listing::new(&s.s3_log_bucket, &s.log_prefix, start_after, cursor);
    while let Some(keys) = listing.next_page(p, cx, LEDGER, |_| true).await? {
        for key in keys {
            let bucket = s.s3_log_bucket.as_str();
            let parse = |b: &[u8], f: &mut dyn FnMut(AwsEvent)| Ok(super::access_log::for_each_line(b, f));
            let what = "S3 access log";
            scan::read_and_mark(p, cx, watched, LEDGER, what, bucket, &key, MAX_OBJECT, parse).await?;
        }
    }
    if let Some(n) = listing.newest_if_moved() {
        cx.hits.poller_state_put(&cursor_name, n).await?;
    }
    Ok(())
}
