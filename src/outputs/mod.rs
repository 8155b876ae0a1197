//! Alert outputs: one module per way an alert leaves Trapline. Each takes an outbox row's
//! `output` description and payload and delivers it, or says why not (the outbox retries).

pub mod webhook;

use serde_json::Value;

/// Delivers one alert. `Err` is a message for the outbox's `last_error` and the log.
pub async fn deliver(ctx: &webhook::Client, output: &Value, payload: &Value, key: &str) -> Result<(), String> {
    match output.get("type").and_then(Value::as_str) {
        Some("webhook") => webhook::deliver(ctx, output, payload, key).await,
        other => Err(format!("unknown output type {other:?}")),
    }
}
