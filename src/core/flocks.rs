//! Flocks: the groups tokens live in, and the scope flock-limited keys see.

use crate::auth::{Actor, Permission};
use crate::error::{CoreError, CoreResult};
use crate::ids;
use crate::model::*;
use crate::store::FlockDeletion;

use super::{Core, MAX_FLOCK_NAME_CHARS};

fn validate_flock_name(name: &str) -> CoreResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CoreError::FlockNameEmpty);
    }
    if name.chars().count() > MAX_FLOCK_NAME_CHARS {
        return Err(CoreError::FlockNameTooLong);
    }
    Ok(name.to_string())
}

impl Core {
    pub async fn list_flocks(&self, actor: &Actor) -> CoreResult<Vec<Flock>> {
        self.require(actor, Permission::Read).await?;
        let mut flocks = self.store.list_flocks().await?;
        flocks.retain(|f| actor.sees_flock(&f.id));
        Ok(flocks)
    }

    pub(super) async fn visible_flock(&self, actor: &Actor, id: &str) -> CoreResult<Flock> {
        match self.store.get_flock(id.trim()).await? {
            Some(f) if actor.sees_flock(&f.id) => Ok(f),
            _ => Err(CoreError::FlockNotFound),
        }
    }

    async fn require_flock_admin(&self, actor: &Actor) -> CoreResult<()> {
        self.require(actor, Permission::ManageFlocks).await?;
        if actor.flock_id.is_some() {
            // A key limited to one flock cannot reshape the set of flocks.
            return self.deny(actor, Permission::ManageFlocks, "").await;
        }
        Ok(())
    }

    pub async fn create_flock(&self, actor: &Actor, name: &str) -> CoreResult<Flock> {
        self.require_flock_admin(actor).await?;
        let name = validate_flock_name(name)?;
        let flock = Flock { id: format!("flock:{}", ids::hex_id(16)), name, created_us: now_us() };
        let audit = self.audit(actor, "flock_create", &flock.id, format!("created flock {:?}", flock.name));
        self.store.insert_flock(&flock, &audit).await?;
        Ok(flock)
    }

    pub async fn rename_flock(&self, actor: &Actor, id: &str, name: &str) -> CoreResult<Flock> {
        self.require_flock_admin(actor).await?;
        let name = validate_flock_name(name)?;
        let mut flock = self.visible_flock(actor, id).await?;
        let audit = self.audit(actor, "flock_rename", &flock.id, format!("renamed {:?} to {:?}", flock.name, name));
        if !self.store.rename_flock(&flock.id, &name, &audit).await? {
            return Err(CoreError::FlockNotFound);
        }
        flock.name = name;
        Ok(flock)
    }

    pub async fn delete_flock(&self, actor: &Actor, id: &str) -> CoreResult<()> {
        self.require_flock_admin(actor).await?;
        let flock = self.visible_flock(actor, id).await?;
        if flock.id == DEFAULT_FLOCK {
            return Err(CoreError::DefaultFlock);
        }
        let audit = self.audit(actor, "flock_delete", &flock.id, format!("deleted flock {:?}", flock.name));
        match self.store.delete_flock(&flock.id, &audit).await? {
            FlockDeletion::Deleted => Ok(()),
            FlockDeletion::NotFound => Err(CoreError::FlockNotFound),
            FlockDeletion::NotEmpty => Err(CoreError::FlockNotEmpty),
        }
    }

    pub async fn flock_summary(&self, actor: &Actor, id: &str) -> CoreResult<(Flock, FlockSummary)> {
        self.require(actor, Permission::Read).await?;
        let flock = self.visible_flock(actor, id).await?;
        let summary = self.store.flock_summary(&flock.id).await?;
        Ok((flock, summary))
    }

    /// Ids of the flock's tokens (its "sensors").
    pub async fn flock_token_ids(&self, actor: &Actor, id: &str) -> CoreResult<Vec<String>> {
        self.require(actor, Permission::Read).await?;
        let flock = self.visible_flock(actor, id).await?;
        Ok(self.store.flock_token_ids(&flock.id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_name_rules() {
        assert!(matches!(validate_flock_name(""), Err(CoreError::FlockNameEmpty)));
        assert!(matches!(validate_flock_name(&"x".repeat(101)), Err(CoreError::FlockNameTooLong)));
        assert_eq!(validate_flock_name(" Cape Town ").unwrap(), "Cape Town");
    }
}
