//! Applying the [`migrations`](crate::store::migrations) at start-up, and backfilling what SQL cannot compute.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::{Executor, Row};

use super::incidents::incident_search_text;
use super::tokens::search_words;
use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};
use crate::store::migrations;

impl SqlStore {
    pub(super) async fn migrate(&self) -> anyhow::Result<()> {
        let types = match self.engine {
            Engine::Sqlite => migrations::SQLITE,
            Engine::Postgres => migrations::POSTGRES,
        };
        {
            let mut tx = self.begin().await?;
            self.lock_migrations(&mut tx).await?;
            (&mut *tx)
                .execute("CREATE TABLE IF NOT EXISTS trapline_schema (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)")
                .await
                .context("cannot create the schema table")?;
            tx.commit().await?;
        }
        for (i, step) in migrations::rendered(types).enumerate() {
            let version = i as i64 + 1;
            let mut tx = self.begin().await?;
            self.lock_migrations(&mut tx).await?;
            let done: i64 = sqlx::query("SELECT COUNT(*) FROM trapline_schema WHERE version = $1")
                .bind(version)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            if done == 0 {
                (&mut *tx).execute(step.as_str()).await.with_context(|| format!("migration {version} failed"))?;
                if version == migrations::PRIVATE_DATA_STEP as i64 {
                    move_report_nonces(&mut tx).await.context("migration 11: moving report nonces failed")?;
                }
                sqlx::query("INSERT INTO trapline_schema (version, applied_us) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_us())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Fills the search texts of rows written before migration 9 added them (they are
    /// folded in Rust, so SQL cannot compute them). Idempotent: rows done have non-empty texts.
    pub(super) async fn backfill(&self) -> anyhow::Result<()> {
        self.fill_empty("tokens", "search_words", "id, memo", |r| {
            let (id, memo): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            Ok((search_words(&memo, &id), Arg::S(id)))
        })
        .await?;
        self.fill_empty("incidents", "search_text", "id, memo, src_ip, token_id, kind", |r| {
            let text = incident_search_text(
                &r.try_get::<String, _>(1)?,
                &r.try_get::<String, _>(2)?,
                &r.try_get::<String, _>(3)?,
                &r.try_get::<String, _>(4)?,
            );
            Ok((text, Arg::I(r.try_get(0)?)))
        })
        .await
    }

    /// Sets `column` of the rows of `table` where it is empty, 500 rows a transaction: `value`
    /// reads a row's `cols` (its key first) and gives the text and the key.
    async fn fill_empty(
        &self,
        table: &str,
        column: &str,
        cols: &str,
        value: impl Fn(&AnyRow) -> anyhow::Result<(String, Arg)>,
    ) -> anyhow::Result<()> {
        loop {
            let rows = sqlx::query(&format!("SELECT {cols} FROM {table} WHERE {column} = '' LIMIT 500"))
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut tx = self.begin().await?;
            for r in &rows {
                let (text, key) = value(r)?;
                let mut args = Args::default();
                let (t, k) = (args.push(Arg::S(text)), args.push(key));
                let sql = format!("UPDATE {table} SET {column} = {t} WHERE id = {k}");
                args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }

    /// Several nodes may start at once against one PostgreSQL: each migration transaction
    /// holds this lock, so one applies a step and the others wait, then see it done. (SQLite's
    /// `BEGIN IMMEDIATE` already serialises writers.)
    async fn lock_migrations(&self, tx: &mut WriteTx) -> anyhow::Result<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7427776975)").execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// Takes release 605748e's browser-scanner nonce (`_report_nonce` in a hit's data) out of the
/// data of every hit that has one and into its private data, as its amendment guard: the hit's
/// report can still be attached, and the nonce is never shown. Runs once, in the transaction
/// of migration 11 (see [`migrations`]); in Rust because the engines share no JSON functions.
async fn move_report_nonces(tx: &mut WriteTx) -> anyhow::Result<()> {
    let mut after = 0i64;
    loop {
        // `_` is a LIKE wildcard: this finds a little more than it must; the JSON decides.
        let rows = sqlx::query(
            "SELECT id, data FROM hits WHERE id > $1 AND data LIKE '%_report_nonce%' ORDER BY id LIMIT 500",
        )
        .bind(after)
        .fetch_all(&mut **tx)
        .await?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = last.try_get(0)?;
        for r in &rows {
            let id: i64 = r.try_get(0)?;
            let mut data: serde_json::Value = serde_json::from_str(&r.try_get::<String, _>(1)?)
                .with_context(|| format!("hit {id}: data is not JSON"))?;
            let Some(nonce) = data.as_object_mut().and_then(|m| m.remove("_report_nonce")) else { continue };
            let private = nonce.as_str().map(|n| amend_guard(n).to_string());
            sqlx::query("UPDATE hits SET data = $1, private_data = $2 WHERE id = $3")
                .bind(data.to_string())
                .bind(private)
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{HitRules, Store};

    /// Rows from before migration 9 (empty search texts) are found once the store reopens.
    #[tokio::test]
    async fn reopening_fills_the_search_texts_of_older_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let path = path.to_str().unwrap();
        let store = SqlStore::open(path).await.unwrap();
        let audit = AuditEntry {
            time_us: 1,
            actor: "t".into(),
            action: "token_create".into(),
            target: "t".into(),
            description: String::new(),
            src_ip: String::new(),
            dialect: "test".into(),
        };
        let mut t = crate::kinds::testing::token("dns", serde_json::json!({}));
        t.memo = "Payroll share".into();
        store.insert_token(&t, &[], &[], &audit).await.unwrap();
        let hit = NewHit {
            token: TokenRef::Id(t.id.clone()),
            time_us: 5,
            channel: Channel::Dns,
            src_ip: "192.0.2.1".into(),
            src_port: 53,
            dst_ip: String::new(),
            dst_port: 0,
            data: serde_json::json!({}),
            private: None,
            group: None,
        };
        let rules = HitRules::new(
            |_: &Token, _: &NewHit| Judgement::alert(),
            |_: &Token, _: &NewHit, _: &[AlertOutput]| Vec::new(),
        );
        store.record_hits(&[hit], &rules).await.unwrap();
        sqlx::query("UPDATE tokens SET search_words = ''").execute(&store.pool).await.unwrap();
        sqlx::query("UPDATE incidents SET search_text = ''").execute(&store.pool).await.unwrap();
        drop(store);

        let store = SqlStore::open(path).await.unwrap();
        let words = TokenFilter { words: vec!["pay".into()], ..Default::default() };
        assert_eq!(store.count_tokens(&words).await.unwrap(), 1);
        let text = IncidentFilter { text: Some("PAYROLL".into()), ..Default::default() };
        assert_eq!(store.count_incidents(&text).await.unwrap().0, 1);
    }
}
