//! Incidents: listed (in bounded, budgeted pages), fetched, acknowledged and deleted, always
//! within the actor's flock.

use crate::auth::{Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::kinds;
use crate::model::*;

use super::{drop_lookahead, Core, DEFAULT_EVENT_LIMIT, LISTING_BUDGET, LISTING_CHUNK, MAX_INCIDENTS};

/// A page of incidents, as [`super::TokenPage`], with the greatest `updated_id` of all that match
/// (so a poller that reads the first page knows where the whole listing ends).
#[derive(Debug, Clone)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    pub more: bool,
    pub total: i64,
    pub max_updated_id: Option<i64>,
}

/// An incident filter in words, for audit entries.
fn describe_filter(f: &IncidentFilter) -> String {
    let mut parts = Vec::new();
    if let Some(id) = f.id {
        parts.push(format!("incident {id}"));
    }
    if let Some(t) = &f.token_id {
        parts.push(format!("token {t}"));
    }
    if let Some(ip) = &f.src_ip {
        parts.push(format!("source {ip}"));
    }
    if let Some(fl) = &f.flock_id {
        parts.push(format!("flock {fl}"));
    }
    if let Some(a) = f.acknowledged {
        parts.push(if a { "acknowledged".into() } else { "unacknowledged".into() });
    }
    if let Some(t) = f.created_before_us {
        parts.push(format!("created before {}", crate::model::rfc3339(t)));
    }
    if parts.is_empty() {
        "all incidents".into()
    } else {
        parts.join(", ")
    }
}

impl Core {
    /// The filter limited to the actor's flock; None when it asks for another flock.
    fn scope_incidents(actor: &Actor, mut filter: IncidentFilter) -> Option<IncidentFilter> {
        if let Some(scope) = &actor.flock_id {
            if filter.flock_id.as_ref().is_some_and(|f| f != scope) {
                return None;
            }
            filter.flock_id = Some(scope.clone());
        }
        if let Some(text) = &filter.text {
            // "Token name" in the Console's words: kinds are found by their human name too.
            let folded = text.to_lowercase();
            filter.text_kinds = kinds::KINDS
                .iter()
                .filter(|k| k.human_name().to_lowercase().contains(&folded))
                .map(|k| k.name().to_string())
                .collect();
        }
        Some(filter)
    }

    /// The filter of a listing, checked: a flock it names must exist and be visible.
    async fn listing_filter(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<IncidentFilter> {
        self.require(actor, Permission::Read).await?;
        if let Some(f) = &filter.flock_id {
            self.visible_flock(actor, f).await?;
        }
        Self::scope_incidents(actor, filter).ok_or(CoreError::FlockNotFound)
    }

    /// A page of the incidents matching `filter` (in its order, from its page start), at most
    /// `filter.limit` (default and most: [`MAX_INCIDENTS`]).
    pub async fn list_incidents(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<IncidentPage> {
        let mut filter = self.listing_filter(actor, filter).await?;
        let limit = filter.limit.unwrap_or(MAX_INCIDENTS);
        if !(1..=MAX_INCIDENTS).contains(&limit) {
            return Err(CoreError::invalid("limit", format!("must be between 1 and {MAX_INCIDENTS}")));
        }
        filter.event_limit.get_or_insert(DEFAULT_EVENT_LIMIT);
        let (incidents, more) = self.fill_listing(filter.clone(), limit, LISTING_BUDGET).await?;
        let (total, max_updated_id) = self.store.count_incidents(&filter).await?;
        Ok(IncidentPage { incidents, more, total, max_updated_id })
    }

    /// Up to `limit` incidents of `filter` from its page start, read [`LISTING_CHUNK`] at a
    /// time, stopping early once their events' data passes `budget` bytes; and whether more
    /// follow in the direction asked.
    pub async fn fill_listing(
        &self,
        mut filter: IncidentFilter,
        limit: i64,
        budget: usize,
    ) -> CoreResult<(Vec<Incident>, bool)> {
        let backwards = filter.start.backwards;
        let key = |i: &Incident| match filter.order {
            IncidentOrder::Newest => (i.created_us, i.id),
            IncidentOrder::Updated => (i.updated_id, i.id),
        };
        let mut got: Vec<Incident> = Vec::new();
        let mut bytes = 0;
        loop {
            let want = LISTING_CHUNK.min(limit - got.len() as i64);
            filter.limit = Some(want + 1);
            let mut rows = self.store.list_incidents(&filter).await?;
            let more = drop_lookahead(&mut rows, want, backwards);
            bytes += rows.iter().flat_map(|i| &i.events).map(|h| h.data.to_string().len()).sum::<usize>();
            // The next chunk starts past the far end of this one, in the direction asked.
            let far = if backwards { rows.first() } else { rows.last() };
            filter.start.key = far.map(key).or(filter.start.key);
            if backwards {
                rows.append(&mut got);
                got = rows;
            } else {
                got.append(&mut rows);
            }
            if !more {
                return Ok((got, false));
            }
            if got.len() as i64 >= limit || bytes >= budget {
                return Ok((got, true));
            }
        }
    }

    /// The sources of the incidents matching `filter`, with how many each.
    pub async fn incident_sources(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<Vec<(String, i64)>> {
        let filter = self.listing_filter(actor, filter).await?;
        Ok(self.store.incident_sources(&filter).await?)
    }

    /// One incident, by id or by hash id.
    pub async fn get_incident(&self, actor: &Actor, which: IncidentFilter) -> CoreResult<Incident> {
        self.require(actor, Permission::Read).await?;
        if which.id.is_none() && which.hash_id.is_none() {
            return Err(CoreError::IncidentNotFound);
        }
        let which = IncidentFilter {
            id: which.id,
            hash_id: which.hash_id,
            limit: Some(1),
            event_limit: Some(DEFAULT_EVENT_LIMIT),
            ..Default::default()
        };
        let filter = Self::scope_incidents(actor, which).ok_or(CoreError::IncidentNotFound)?;
        self.store.list_incidents(&filter).await?.pop().ok_or(CoreError::IncidentNotFound)
    }

    /// Acknowledges (`Some(true)`), unacknowledges (`Some(false)`) or deletes (`None`) the
    /// incidents matching `filter`; returns their ids. A filter naming one incident that does
    /// not exist (or is out of scope) is IncidentNotFound.
    async fn change_incidents(&self, actor: &Actor, filter: IncidentFilter, ack: Option<bool>) -> CoreResult<Vec<i64>> {
        self.require(actor, Permission::ManageIncidents).await?;
        let single = filter.id;
        let Some(filter) = Self::scope_incidents(actor, filter) else {
            return if single.is_some() { Err(CoreError::IncidentNotFound) } else { Ok(Vec::new()) };
        };
        let action = match ack {
            Some(true) => "incident_acknowledge",
            Some(false) => "incident_unacknowledge",
            None => "incident_delete",
        };
        let target = single.map(|i| i.to_string()).unwrap_or_else(|| "incidents".into());
        let audit = self.audit(actor, action, &target, format!("{action}: {}", describe_filter(&filter)));
        let ids = match ack {
            Some(a) => self.store.set_acknowledged(&filter, a, &audit).await?,
            None => self.store.delete_incidents(&filter, &audit).await?,
        };
        if ids.is_empty() && single.is_some() {
            return Err(CoreError::IncidentNotFound);
        }
        Ok(ids)
    }

    /// Acknowledges (or un-) the incidents matching `filter`; returns their ids.
    pub async fn set_acknowledged(&self, actor: &Actor, filter: IncidentFilter, ack: bool) -> CoreResult<Vec<i64>> {
        self.change_incidents(actor, filter, Some(ack)).await
    }

    /// Deletes the incidents matching `filter`; returns the ids of those that went.
    pub async fn delete_incidents(&self, actor: &Actor, filter: IncidentFilter) -> CoreResult<Vec<i64>> {
        self.change_incidents(actor, filter, None).await
    }
}
