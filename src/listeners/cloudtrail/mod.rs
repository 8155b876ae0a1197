//! CloudTrail ingestion: the formats AWS reports honey-key and honey-bucket use in, read
//! without network or store. [`records`] reads CloudTrail log files, [`access_log`] S3
//! server access logs, both into one [`event::AwsEvent`]; [`objects`] says which keys of the
//! trail's bucket are log files and where to list them; [`notify`] reads the SQS messages
//! that announce new ones.

pub mod access_log;
pub mod event;
pub mod notify;
pub mod objects;
pub mod records;
