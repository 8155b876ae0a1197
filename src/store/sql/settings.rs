//! Named settings (name → value) and the installation id kept among them.

use sqlx::Row;

use super::*;
use crate::model::*;

pub(super) async fn get_setting(s: &SqlStore, name: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&s.pool).await?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

pub(super) async fn set_setting(s: &SqlStore, name: &str, value: &str, audit: &AuditEntry) -> StoreResult<()> {
    let mut tx = s.begin().await?;
    sqlx::query(
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(name)
    .bind(value)
    .execute(&mut *tx)
    .await?;
    audited(tx, audit, ()).await
}

pub(super) async fn install_id(s: &SqlStore) -> StoreResult<String> {
    let mut tx = s.begin().await?;
    sqlx::query("INSERT INTO settings (name, value) VALUES ('install_id', $1) ON CONFLICT (name) DO NOTHING")
        .bind(crate::ids::hex_id(6))
        .execute(&mut *tx)
        .await?;
    let id: String =
        sqlx::query("SELECT value FROM settings WHERE name = 'install_id'").fetch_one(&mut *tx).await?.try_get(0)?;
    tx.commit().await?;
    Ok(id)
}
