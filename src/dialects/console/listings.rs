//! The Console's paged listings: `canarytokens/paginate` and `canarytokens/search`, the
//! incident feeds (`incidents/all`, `/unacknowledged`, `/acknowledged`) and `incidents/search`.
//!
//! Each reads its parameters either from the request or, when the request carries a
//! `cursor`, from that cursor (see [`super::cursor`]), so a cursor sent alone keeps the
//! listing's filters and page size. Incremental pollers use the feeds' `incidents_since`: then
//! incidents come oldest change first, so a poller that stops part-way and resumes from the
//! last `max_updated_id` it saw misses nothing.

use chrono_tz::Tz;
use serde_json::{json, Value};

use super::cursor::{Cursor, Key, Neighbours};
use super::shapes::{self, Clock};
use super::{parse_time, Params, Req};
use crate::auth::Actor;
use crate::core::{Core, DEFAULT_PAGE, MAX_INCIDENTS};
use crate::error::{CoreError, CoreResult};
use crate::model::*;

/// The listing's parameters and where its page starts: from the cursor when one is sent.
fn listing(req: &Req, endpoint: &str) -> CoreResult<(Params, Option<Cursor>)> {
    match req.opt("cursor") {
        Some(text) => {
            let c = Cursor::decode(text, endpoint)?;
            Ok((Params(c.params.clone()), Some(c)))
        }
        None => Ok((Params(req.params.listing()), None)),
    }
}

/// `max(1, ⌈total / limit⌉)`.
fn pages(total: i64, limit: i64) -> i64 {
    ((total + limit - 1) / limit.max(1)).max(1)
}

/// The token filters of `canarytokens/search` (and the undocumented `memo`, `search` and
/// `enabled` of earlier Trapline versions), and `flock_id` for every token listing.
pub(super) fn token_filter(p: &Params) -> CoreResult<TokenFilter> {
    Ok(TokenFilter {
        kind: p.opt("kind").map(str::to_string),
        flock_id: p.opt("flock_id").map(str::to_string),
        memo_contains: p.opt("memo").or(p.opt("search")).map(str::to_string),
        words: search_words(p.opt("search_string").unwrap_or("")),
        enabled: match p.bool("active")? {
            Some(a) => Some(a),
            None => p.bool("enabled")?,
        },
    })
}

pub(super) async fn tokens(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    let (p, cursor) = listing(req, endpoint)?;
    let search = endpoint == "canarytokens/search";
    let filter = if search {
        token_filter(&p)?
    } else {
        TokenFilter { flock_id: p.opt("flock_id").map(str::to_string), ..Default::default() }
    };
    // canarytools 1.2.3 always sends render_transients on paginate, and loops forever on the
    // documented cursor object: it gets the bare `next` string.
    let bare_cursor = !search && p.bool("render_transients")?.is_some();
    let start = cursor.as_ref().map(Cursor::token_start).transpose()?.unwrap_or_default();
    let page = cursor.as_ref().map_or(1, |c| c.page);
    let limit = p.int("limit")?;
    let found = core.list_tokens(actor, filter, &start, limit).await?;
    let key = |t: &Token| Key::Token(t.created_us, t.id.clone());
    let ends = found.tokens.first().zip(found.tokens.last()).map(|(a, b)| (key(a), key(b)));
    let near = Neighbours::around(endpoint, &p.listing(), page, start.backwards, start.key.is_some(), found.more, ends);
    let tokens: Vec<Value> = found.tokens.iter().map(|t| shapes::token_json(&core.view_context(), t, search)).collect();
    let total_pages = pages(found.total, limit.unwrap_or(DEFAULT_PAGE));
    Ok(if search {
        json!({
            "canarytokens": tokens,
            "cursor": near.json(&req.base, req.auth_param()),
            "page_number": page,
            "total_pages": total_pages,
            "total_results": found.total,
        })
    } else {
        let cursor = if bare_cursor {
            near.next.as_ref().map(|c| Value::String(c.encode())).unwrap_or(Value::Null)
        } else {
            near.json(&req.base, req.auth_param())
        };
        json!({ "canarytokens": tokens, "cursor": cursor, "page_num": page, "page_total": total_pages })
    })
}

/// `tz`: the zone `_std` times are written in (an IANA name, as pytz takes them).
pub(super) fn clock(p: &Params) -> CoreResult<Clock> {
    match p.opt("tz") {
        None => Ok(Clock::default()),
        Some(name) => name
            .parse::<Tz>()
            .map(|tz| Clock { tz })
            .map_err(|_| CoreError::invalid("tz", format!("{name:?} is not a time zone name such as Europe/London"))),
    }
}

/// `filter_str` and `filter_logtypes`, as `incidents/search` and the bulk actions take them.
pub(super) fn text_filters(p: &Params, f: &mut IncidentFilter) -> CoreResult<()> {
    f.text = p.opt("filter_str").map(str::to_string);
    if let Some(list) = p.opt("filter_logtypes") {
        let codes = list
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| c.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| CoreError::invalid("filter_logtypes", "must be a comma-separated list of logtype numbers"))?;
        f.kinds = Some(shapes::kinds_with_logtypes(&codes));
    }
    Ok(())
}

pub(super) async fn incidents(core: &Core, actor: &Actor, endpoint: &str, req: &Req) -> CoreResult<Value> {
    let (p, cursor) = listing(req, endpoint)?;
    let search = endpoint == "incidents/search";
    let clock = clock(&p)?;
    let mut f = IncidentFilter {
        token_id: p.opt("node_id").map(str::to_string),
        src_ip: p.opt("src_host").map(str::to_string),
        flock_id: p.opt("flock_id").map(str::to_string),
        event_limit: p.non_negative("event_limit")?,
        limit: p.int("limit")?,
        ..Default::default()
    };
    if let Some(v) = p.opt("newer_than") {
        f.created_after_us = Some(parse_time("newer_than", v)?);
    }
    if let Some(v) = p.opt("older_than") {
        f.created_before_us = Some(parse_time("older_than", v)?);
    }
    if let Some(n) = p.non_negative("incidents_since")? {
        f.updated_after = Some(n);
        f.order = IncidentOrder::Updated;
    }
    f.acknowledged = match endpoint {
        "incidents/unacknowledged" => Some(false),
        "incidents/acknowledged" => Some(true),
        "incidents/search" => match p.opt("filter_incident_state").unwrap_or("unacknowledged") {
            "unacknowledged" => Some(false),
            "acknowledged" => Some(true),
            "all" => None,
            other => {
                return Err(CoreError::invalid(
                    "filter_incident_state",
                    format!("must be all, unacknowledged or acknowledged, not {other:?}"),
                ))
            }
        },
        _ => None,
    };
    if search {
        text_filters(&p, &mut f)?;
    }
    f.start = cursor.as_ref().map(Cursor::incident_start).transpose()?.unwrap_or_default();
    let page = cursor.as_ref().map_or(1, |c| c.page);
    let paged = f.limit.is_some() || cursor.is_some();
    let limit = f.limit.unwrap_or(MAX_INCIDENTS);
    let found = core.list_incidents(actor, f.clone()).await?;
    let key = |i: &Incident| match f.order {
        IncidentOrder::Newest => Key::Incident(i.created_us, i.id),
        IncidentOrder::Updated => Key::Incident(i.updated_id, i.id),
    };
    let ends = found.incidents.first().zip(found.incidents.last()).map(|(a, b)| (key(a), key(b)));
    let near =
        Neighbours::around(endpoint, &p.listing(), page, f.start.backwards, f.start.key.is_some(), found.more, ends);
    let items: Vec<Value> = found.incidents.iter().map(|i| shapes::feed_incident(i, &core.site, &clock)).collect();
    let updated = found.incidents.iter().map(|i| i.updated_us).max().unwrap_or_else(now_us);
    let mut body = json!({
        "incidents": items,
        "updated": shapes::http_date(updated),
        "updated_std": clock.std(updated),
        "updated_timestamp": shapes::secs(updated),
    });
    // Over every page, not just this one: scripts keep the first page's as their next
    // `incidents_since` and then walk the cursor.
    if let (false, Some(max)) = (found.incidents.is_empty(), found.max_updated_id) {
        body["max_updated_id"] = max.into();
    }
    // Without a limit the answer still says where more would be, rather than hide them.
    if paged || search || near.next.is_some() {
        body["cursor"] = near.json(&req.base, req.auth_param());
    }
    if search {
        body["page_number"] = page.into();
        body["total_pages"] = pages(found.total, limit).into();
        body["total_results"] = found.total.into();
        let sources = core.incident_sources(actor, f).await?;
        body["incident_source_counts"] =
            Value::Object(sources.into_iter().map(|(src, n)| (src, Value::from(n))).collect());
    } else {
        body["feed"] = match endpoint {
            "incidents/unacknowledged" => "Unacknowledged Incidents",
            "incidents/acknowledged" => "Acknowledged Incidents",
            _ => "All Incidents",
        }
        .into();
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_totals() {
        assert_eq!(pages(0, 10), 1);
        assert_eq!(pages(10, 10), 1);
        assert_eq!(pages(11, 10), 2);
        assert_eq!(pages(7, 3), 3);
    }

    #[test]
    fn search_filters_read_active_and_words() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("search_string".to_string(), "Pay  roll, HR".to_string());
        m.insert("active".to_string(), "False".to_string());
        m.insert("enabled".to_string(), "true".to_string());
        let f = token_filter(&Params(m)).unwrap();
        assert_eq!(f.words, ["pay", "roll", "hr"]);
        assert_eq!(f.enabled, Some(false), "active wins over the older enabled");
        let mut bad = std::collections::BTreeMap::new();
        bad.insert("active".to_string(), "maybe".to_string());
        assert!(token_filter(&Params(bad)).is_err());
    }

    #[test]
    fn logtype_filters_name_kinds() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("filter_logtypes".to_string(), "17016, 16006".to_string());
        let mut f = IncidentFilter::default();
        text_filters(&Params(m), &mut f).unwrap();
        let mut k = f.kinds.unwrap();
        k.sort();
        assert_eq!(k, ["fast-redirect", "windows-dir"]);
        let mut bad = std::collections::BTreeMap::new();
        bad.insert("filter_logtypes".to_string(), "17016,web".to_string());
        assert!(text_filters(&Params(bad), &mut IncidentFilter::default()).is_err());
    }
}
