//! Alerting: the alert outputs added through the API, test alerts, and the outbox.

use crate::auth::{Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::model::*;

use super::{Core, MAX_TEST_DESCRIPTION};

impl Core {
    /// Queues a clearly labelled test alert, carrying `description` (cut to
    /// [`MAX_TEST_DESCRIPTION`] characters), for every output; returns how many (0 when none
    /// is configured, which is logged).
    pub async fn send_test_alert(&self, actor: &Actor, description: Option<&str>) -> CoreResult<usize> {
        self.require(actor, Permission::ManageIncidents).await?;
        let managed = self.store.list_alert_outputs().await?;
        let description: Option<String> = description
            .map(|d| d.trim().chars().take(MAX_TEST_DESCRIPTION).collect::<String>())
            .filter(|d| !d.is_empty());
        let alerts = crate::alerts::test_alerts(&self.alerts, &managed, &actor.id, description.as_deref());
        if alerts.is_empty() {
            tracing::warn!(by = %actor.id, "test alert requested, but no alert output is configured");
            return Ok(0);
        }
        let audit = self.audit(actor, "test_alert", "outputs", format!("test alert to {} outputs", alerts.len()));
        self.store.insert_alerts(&alerts, &format!("test-{}", ids::hex_id(8)), &audit).await?;
        Ok(alerts.len())
    }

    /// The alert outputs: those from the configuration (fixed while running) and those added
    /// through the API.
    pub async fn list_alert_outputs(&self, actor: &Actor) -> CoreResult<(Vec<serde_json::Value>, Vec<AlertOutput>)> {
        self.require(actor, Permission::ManageOutputs).await?;
        Ok((self.alerts.outputs.clone(), self.store.list_alert_outputs().await?))
    }

    /// Adds an output (`TYPE=TARGET`, as `--alert-outputs` takes it) for every token, or for
    /// the tokens of `flock_id`. Webhook targets are checked now, and again at delivery.
    pub async fn add_alert_output(&self, actor: &Actor, spec: &str, flock_id: Option<&str>) -> CoreResult<AlertOutput> {
        self.require(actor, Permission::ManageOutputs).await?;
        let spec = crate::alerts::check_output(&self.alerts, spec)?;
        let output = spec.to_value();
        let flock_id = flock_id.map(str::trim).filter(|f| !f.is_empty());
        if let Some(f) = flock_id {
            if self.store.get_flock(f).await?.is_none() {
                return Err(CoreError::FlockNotFound);
            }
        }
        let existing = self.store.list_alert_outputs().await?;
        if existing.iter().any(|o| o.output == output && o.flock_id.as_deref() == flock_id) {
            return Err(CoreError::invalid("output", "is already configured"));
        }
        let o = AlertOutput {
            id: format!("out_{}", ids::hex_id(8)),
            flock_id: flock_id.map(str::to_string),
            output,
            created_us: now_us(),
            created_by: actor.id.clone(),
        };
        let scope = o.flock_id.as_deref().unwrap_or("every flock");
        let audit = self.audit(actor, "output_add", &o.id, format!("{:?} output for {scope}", spec.type_name()));
        self.store.insert_alert_output(&o, &audit).await?;
        Ok(o)
    }

    /// Removes an output added through the API; false when there is none with that id.
    pub async fn delete_alert_output(&self, actor: &Actor, id: &str) -> CoreResult<bool> {
        self.require(actor, Permission::ManageOutputs).await?;
        let audit = self.audit(actor, "output_delete", id, "output removed".into());
        Ok(self.store.delete_alert_output(id.trim(), &audit).await?)
    }

    /// The alert outbox, newest first (deliveries still pending or given up, or all).
    pub async fn list_alerts(&self, actor: &Actor, undelivered_only: bool, limit: i64) -> CoreResult<Vec<Alert>> {
        self.require(actor, Permission::Read).await?;
        if actor.flock_id.is_some() {
            return self.deny(actor, Permission::Read, "alerts").await;
        }
        Ok(self.store.list_alerts(undelivered_only, limit.clamp(1, 1000)).await?)
    }
}
