//! SQS calls (JSON protocol: POST `/`, `Content-Type: application/x-amz-json-1.0`,
//! `X-Amz-Target: AmazonSQS.<Action>`): long-poll a queue and delete what was handled — how
//! the CloudTrail poller hears of new log files — plus `CreateQueue` and `SendMessage`, which
//! set a queue up (tests, the operator's own tooling).
//!
//! Without an endpoint override a call goes to the queue URL's own host.

use md5::{Digest, Md5};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::sign::{Call, Service};
use super::{endpoint, Aws, AwsError};

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    pub message_id: String,
    /// What deletes it (valid until its visibility timeout ends).
    pub receipt_handle: String,
    pub body: String,
}

impl Aws {
    /// A call about `queue_url` (none for `CreateQueue`: the override, else this region's endpoint).
    async fn sqs(&self, action: &str, queue_url: Option<&str>, request: Value) -> Result<Value, AwsError> {
        let regional = format!("https://sqs.{}.amazonaws.com/", self.region());
        let target = endpoint::sqs(self.inner.endpoint.as_ref(), self.region(), queue_url.unwrap_or(&regional))?;
        let call = Call::new(Service::Sqs, Method::POST, target)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .body(request.to_string());
        let body = self.fetch(call).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&body).map_err(|e| AwsError::Malformed(format!("SQS {action} reply: {e}")))
    }

    /// `ReceiveMessage`: up to `max` (1 to 10) messages, waiting up to `wait_secs` (0 to 20)
    /// for one to arrive; `visibility_timeout` hides them from other readers for that long
    /// (else the queue's setting).
    pub async fn receive_messages(
        &self,
        queue_url: &str,
        max: u8,
        wait_secs: u8,
        visibility_timeout: Option<u32>,
    ) -> Result<Vec<SqsMessage>, AwsError> {
        if !(1..=10).contains(&max) || wait_secs > 20 {
            return Err(AwsError::Invalid(format!(
                "ReceiveMessage takes 1 to 10 messages and waits 0 to 20 s, not {max} and {wait_secs}"
            )));
        }
        let mut request = json!({"QueueUrl": queue_url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait_secs});
        if let Some(timeout) = visibility_timeout {
            request["VisibilityTimeout"] = json!(timeout);
        }
        parse_messages(self.sqs("ReceiveMessage", Some(queue_url), request).await?)
    }

    /// `DeleteMessage`.
    pub async fn delete_message(&self, queue_url: &str, receipt_handle: &str) -> Result<(), AwsError> {
        let request = json!({"QueueUrl": queue_url, "ReceiptHandle": receipt_handle});
        self.sqs("DeleteMessage", Some(queue_url), request).await.map(drop)
    }

    /// `CreateQueue` with default attributes: the queue's URL.
    pub async fn create_queue(&self, name: &str) -> Result<String, AwsError> {
        let reply = self.sqs("CreateQueue", None, json!({"QueueName": name})).await?;
        reply
            .get("QueueUrl")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Malformed("the CreateQueue reply has no QueueUrl".into()))
    }

    /// `SendMessage`: the new message's id.
    pub async fn send_message(&self, queue_url: &str, body: &str) -> Result<String, AwsError> {
        let reply =
            self.sqs("SendMessage", Some(queue_url), json!({"QueueUrl": queue_url, "MessageBody": body})).await?;
        reply
            .get("MessageId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| AwsError::Malformed("the SendMessage reply has no MessageId".into()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Received {
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    message_id: String,
    receipt_handle: String,
    #[serde(default)]
    body: String,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: Option<String>,
}

/// The messages of a `ReceiveMessage` reply, each checked against its `MD5OfBody`.
fn parse_messages(reply: Value) -> Result<Vec<SqsMessage>, AwsError> {
    let received: Received =
        serde_json::from_value(reply).map_err(|e| AwsError::Malformed(format!("SQS ReceiveMessage reply: {e}")))?;
    received
        .messages
        .into_iter()
        .map(|m| {
            if let Some(expected) = &m.md5_of_body {
                if !hex::encode(Md5::digest(m.body.as_bytes())).eq_ignore_ascii_case(expected) {
                    return Err(AwsError::Malformed(format!(
                        "SQS message {} does not match its MD5OfBody",
                        m.message_id
                    )));
                }
            }
            Ok(SqsMessage { message_id: m.message_id, receipt_handle: m.receipt_handle, body: m.body })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_reply() {
        let reply = json!({"Messages": [{
            "MessageId": "219f8380-5770-4cc2-8c3e-5c715e145f5e",
            "ReceiptHandle": "AQEBaZ+j5qUoOAoxlmrCQPkBm9njMWXqemmIG6shMHCO6fV20JrQYg/AiZ8JELwLwOu5U61W+aIX5Qzu7GGofxJuvzymr4Ph53RiR0mudj4InLSgpSspYeTRDteBye5tV/txbZDdNZxsi+qqZA9xPnmMscKQqF6pGhnGIKrnkYGl45Nl6GPIZv62LrIRb6mSqOn1fn0yqrvmWuuY3w2UzQbaYunJWGxpzZze21EOBtywknU3Je/g7G9is+c6K9hGniddzGLkK1Tz4G6D8Bq/hH4ZJZDHo4Nz3QxGpbY61LZTt0hAgC7+Pv+nNQlIu8AhL4rBd0hi5H7T4KzLQW1c9RIy1oA8h0MPlVyI0LbLc0Br9kVzTp4p7DX4kR5ooOS5MSQqTfLaLc6dJyRJNpu59AxHuJx0XMrfm1h2cKSeAQYS+J8vEhdFW7cbS8w==",
            "MD5OfBody": "c4ca4238a0b923820dcc509a6f75849b",
            "Body": "1"
        }]});
        let messages = parse_messages(reply).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].message_id, "219f8380-5770-4cc2-8c3e-5c715e145f5e");
        assert_eq!(messages[0].body, "1");
        assert!(messages[0].receipt_handle.starts_with("AQEB"));
        assert!(parse_messages(json!({})).unwrap().is_empty());
    }

    #[test]
    fn receive_reply_is_checked() {
        let tampered = json!({"Messages": [{"MessageId": "m", "ReceiptHandle": "r", "MD5OfBody": "00", "Body": "1"}]});
        assert!(matches!(parse_messages(tampered), Err(AwsError::Malformed(_))));
        assert!(parse_messages(json!({"Messages": [{"Body": "no id"}]})).is_err());
    }
}
