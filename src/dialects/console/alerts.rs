//! Alert outputs, the outbox and test alerts (Trapline's own endpoints). The outbox shows
//! targets redacted to callers who may not manage outputs.

use serde_json::{json, Value};

use super::{shapes, Req};
use crate::auth::{Actor, Permission};
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::model::*;
use crate::outputs::redact;

pub(super) async fn outputs(core: &Core, actor: &Actor, _req: &Req) -> CoreResult<Value> {
    let (fixed, added) = core.list_alert_outputs(actor).await?;
    let added: Vec<Value> = added.iter().map(output_json).collect();
    Ok(json!({ "configured": fixed, "outputs": added }))
}

pub(super) async fn add_output(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let o = core.add_alert_output(actor, req.required("output")?, req.opt("flock_id")).await?;
    Ok(json!({ "output": output_json(&o) }))
}

pub(super) async fn delete_output(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    if !core.delete_alert_output(actor, req.required("output_id")?).await? {
        return Err(CoreError::OutputNotFound);
    }
    Ok(json!({}))
}

pub(super) async fn test(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let n = core.send_test_alert(actor, req.opt("description")).await?;
    if n == 0 {
        return Err(CoreError::invalid("outputs", "none are configured (see alert_webhooks, alert_outputs)"));
    }
    Ok(json!({ "outputs": n, "msg": "test alert queued for every configured output" }))
}

pub(super) async fn outbox(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let pending = !matches!(req.opt("all"), Some("true" | "1"));
    let alerts = core.list_alerts(actor, pending, req.int("limit")?.unwrap_or(100)).await?;
    // Webhook URLs and routing keys are secrets: only those who manage outputs see them
    // whole; everyone else sees the output's type and host (audit F4).
    let whole = actor.may(Permission::ManageOutputs);
    let items: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let (output, last_error) = if whole {
                (a.output.clone(), a.last_error.clone())
            } else {
                (redact::output(&a.output), a.last_error.as_deref().map(redact::redact))
            };
            json!({
                "id": a.id,
                "idempotency_key": a.idempotency_key,
                "output": output,
                "canarytoken": a.token_id,
                "incident_id": a.incident_id,
                "created": shapes::epoch_text(a.created_us),
                "attempts": a.attempts,
                "last_error": last_error,
                "next_attempt": shapes::epoch_text(a.next_attempt_us),
                "delivered": a.delivered_us.map(shapes::epoch_text),
                "gave_up": a.gave_up_us.map(shapes::epoch_text),
            })
        })
        .collect();
    Ok(json!({ "alerts": items }))
}

/// An alert output added through the API.
fn output_json(o: &AlertOutput) -> Value {
    json!({
        "id": o.id,
        "flock_id": o.flock_id,
        "output": o.output,
        "created": shapes::epoch_text(o.created_us),
        "created_by": o.created_by,
    })
}
