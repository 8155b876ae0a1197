//! Output `pagerduty`: a PagerDuty Events API v2 `trigger` event. The alert's idempotency key
//! is the `dedup_key`, so a repeated delivery updates the same PagerDuty alert.

use serde_json::{json, Value};

use super::card::Card;

/// Where Events v2 go unless a URL is configured.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub fn body(c: &Card, payload: &Value, routing_key: &str, key: &str) -> Value {
    let s = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
    let details: serde_json::Map<String, Value> =
        c.facts.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": if c.test { c.title.clone() } else { format!("{}: {}", c.title, s("memo")) },
            "source": if s("src_ip").is_empty() { "trapline" } else { s("src_ip") },
            "severity": if c.test { "info" } else { "critical" },
            "component": s("token_id"),
            "group": s("flock_id"),
            "class": s("kind"),
            "custom_details": details,
        },
    });
    if !s("time").is_empty() {
        event["payload"]["timestamp"] = s("time").into();
    }
    if let Some(link) = &c.link {
        event["links"] = json!([ { "href": link, "text": "Token in Trapline" } ]);
    }
    event
}
