//! The AWS listener (a listener without a socket) and the formats it reads.
//!
//! The poller: [`listener`] (its settings, the lease, the loop), [`trail`] (CloudTrail log files
//! by listing or SQS), [`s3_logs`] (aws-s3 access logs), [`last_used`] (the safety net),
//! [`scan`] (listing and reading objects, shared by the two readers) and [`record`] (events
//! into hits). The formats, read without network or store: [`records`] reads CloudTrail log
//! files, [`access_log`] S3 server access logs, both into one [`event::AwsEvent`]; [`objects`]
//! says which keys of the trail's bucket are log files and where to list them; [`notify`]
//! reads the SQS messages that announce new ones.

pub mod access_log;
pub mod event;
pub mod last_used;
pub mod listener;
pub mod notify;
pub mod objects;
pub mod record;
pub mod records;
pub mod s3_logs;
pub mod scan;
pub mod trail;

pub use listener::{AwsListener, CloudTrailSettings};
