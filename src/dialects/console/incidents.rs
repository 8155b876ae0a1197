//! Endpoints on one incident (fetch, acknowledge, unacknowledge, delete) and the bulk
//! actions on the incidents a filter matches. The listings are in `listings`.

use serde_json::{json, Value};

use super::{listings, shapes, Req, SRC_AND_NODE};
use crate::auth::Actor;
use crate::core::Core;
use crate::error::{CoreError, CoreResult};
use crate::model::*;

pub(super) async fn fetch(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    let which = match (req.opt("incident"), req.opt("hash_id")) {
        (Some(_), _) => IncidentFilter { id: Some(incident_id(req)?), ..Default::default() },
        (None, Some(h)) => IncidentFilter { hash_id: Some(h.to_string()), ..Default::default() },
        (None, None) => return Err(CoreError::invalid("incident", "or hash_id is required")),
    };
    let clock = listings::clock(&req.params)?;
    let inc = core.get_incident(actor, which).await?;
    Ok(json!({ "incident": shapes::fetched_incident(&inc, &core.site, &clock) }))
}

/// What is done to incidents: acknowledged (`Some(true)`), unacknowledged, or deleted (None).
type Action = Option<bool>;

fn action_word(action: Action) -> &'static str {
    match action {
        Some(true) => "acknowledged",
        Some(false) => "unacknowledged",
        None => "deleted",
    }
}

async fn change_one(core: &Core, actor: &Actor, req: &Req, action: Action) -> CoreResult<Value> {
    let id = incident_id(req)?;
    let filter = IncidentFilter { id: Some(id), ..Default::default() };
    match action {
        None => core.delete_incidents(actor, filter).await?,
        Some(ack) => core.set_acknowledged(actor, filter, ack).await?,
    };
    Ok(json!({ "action": action_word(action), "key": shapes::incident_key(id) }))
}

pub(super) async fn acknowledge(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_one(core, actor, req, Some(true)).await
}

pub(super) async fn unacknowledge(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_one(core, actor, req, Some(false)).await
}

pub(super) async fn delete(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_one(core, actor, req, None).await
}

async fn change_many(core: &Core, actor: &Actor, req: &Req, action: Action) -> CoreResult<Value> {
    let mut filter = bulk_filter(req)?;
    let ids = match action {
        None => {
            if !req.bool("include_unacknowledged")?.unwrap_or(false) {
                filter.acknowledged = Some(true);
            }
            core.delete_incidents(actor, filter).await?
        }
        Some(ack) => core.set_acknowledged(actor, filter, ack).await?,
    };
    let keys: Vec<String> = ids.iter().map(|i| shapes::incident_key(*i)).collect();
    Ok(json!({ "action": action_word(action), "keys": keys }))
}

pub(super) async fn acknowledge_many(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_many(core, actor, req, Some(true)).await
}

pub(super) async fn unacknowledge_many(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_many(core, actor, req, Some(false)).await
}

pub(super) async fn delete_many(core: &Core, actor: &Actor, req: &Req) -> CoreResult<Value> {
    change_many(core, actor, req, None).await
}

/// Incident ids look like `incident:canarytoken:<n>`; a bare number is accepted too.
fn incident_id(req: &Req) -> CoreResult<i64> {
    let raw = req.required("incident")?;
    raw.rsplit(':').next().and_then(|n| n.parse::<i64>().ok()).ok_or(CoreError::IncidentNotFound)
}

/// The filters of the bulk incident actions.
fn bulk_filter(req: &Req) -> CoreResult<IncidentFilter> {
    let (node, src) = (req.opt("node_id"), req.opt("src_host"));
    if node.is_some() && src.is_some() {
        return Err(CoreError::invalid(SRC_AND_NODE, "cannot be combined"));
    }
    let mut f = IncidentFilter {
        token_id: node.map(str::to_string),
        src_ip: src.map(str::to_string),
        flock_id: req.opt("flock_id").map(str::to_string),
        ..Default::default()
    };
    if let Some(v) = req.opt("older_than") {
        f.created_before_us = Some(now_us() - parse_period(v).ok_or_else(|| CoreError::invalid("older_than", v))?);
    }
    listings::text_filters(&req.params, &mut f)?;
    Ok(f)
}

/// `[quantity][h|d|w]` in microseconds.
fn parse_period(v: &str) -> Option<i64> {
    let unit = match v.chars().last()? {
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    let n: i64 = v[..v.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(unit)?.checked_mul(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        assert_eq!(parse_period("1h"), Some(3_600_000_000));
        assert_eq!(parse_period("2d"), Some(2 * 86_400_000_000));
        assert_eq!(parse_period("1w"), Some(604_800_000_000));
        for bad in ["", "h", "1x", "-1d", "1.5h", "99999999999999999w"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }
}
