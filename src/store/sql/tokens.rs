//! Tokens, their files and their trigger keys: the rows hits are checked against. A delete may
//! queue the token's retirement ([`super::retirements`]) in its transaction.

use anyhow::Context;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::retirements::queue_retirement;
use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};

pub(super) const TOKEN_COLS: &str = "t.id, t.kind, t.memo, t.flock_id, t.enabled, t.created_us, t.updated_id, \
     t.params, t.created_by, (SELECT COUNT(*) FROM hits h WHERE h.token_id = t.id AND h.incident_id > 0), \
     t.alert_webhook_url, t.alert_email, t.alert_cooldown_secs, t.alert_max_per_hour, t.ignore_sources, \
     (SELECT COUNT(*) FROM incidents i WHERE i.token_id = t.id AND i.acknowledged = 0)";

/// The same columns with constants in place of the counts, for the hot path.
pub(super) const TOKEN_COLS_NO_COUNT: &str =
    "t.id, t.kind, t.memo, t.flock_id, t.enabled, t.created_us, t.updated_id, \
     t.params, t.created_by, 0, t.alert_webhook_url, t.alert_email, t.alert_cooldown_secs, t.alert_max_per_hour, \
     t.ignore_sources, 0";

pub(super) fn token_from_row(r: &AnyRow) -> StoreResult<Token> {
    let params: String = r.try_get(7)?;
    Ok(Token {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        memo: r.try_get(2)?,
        flock_id: r.try_get(3)?,
        enabled: r.try_get::<i64, _>(4)? != 0,
        created_us: r.try_get(5)?,
        updated_id: r.try_get(6)?,
        params: serde_json::from_str(&params).context("token params are not JSON")?,
        created_by: r.try_get(8)?,
        triggered_count: r.try_get(9)?,
        alert_webhook_url: r.try_get(10)?,
        alert_email: r.try_get(11)?,
        alert_cooldown_secs: r.try_get(12)?,
        alert_max_per_hour: r.try_get(13)?,
        ignore_sources: serde_json::from_str(&r.try_get::<String, _>(14)?)
            .context("token ignore_sources are not a JSON list")?,
        unacked_count: r.try_get(15)?,
    })
}

/// The text a token is found by with word-prefix search: its memo's words and its id, each
/// preceded by a space (so `LIKE '% word%'` matches at word starts only).
pub(super) fn search_words(memo: &str, id: &str) -> String {
    let mut out = String::from(" ");
    for w in crate::model::search_words(memo).iter().map(String::as_str).chain([id]) {
        out.push_str(w);
        out.push(' ');
    }
    out
}

/// WHERE conditions (over `tokens t`) for a token filter.
pub(super) fn token_conds(f: &TokenFilter, args: &mut Args) -> Vec<String> {
    let mut conds = vec!["1=1".to_string()];
    if let Some(k) = &f.kind {
        conds.push(format!("t.kind = {}", args.push(Arg::S(k.clone()))));
    }
    if let Some(fl) = &f.flock_id {
        conds.push(format!("t.flock_id = {}", args.push(Arg::S(fl.clone()))));
    }
    if let Some(m) = &f.memo_contains {
        conds.push(format!("t.memo_folded LIKE {} ESCAPE '\\'", args.push(Arg::S(contains_pattern(&fold(m))))));
    }
    for w in &f.words {
        // A word start: the stored text puts a space before every word.
        let pat = format!("% {}%", like_escape(&fold(w)));
        conds.push(format!("t.search_words LIKE {} ESCAPE '\\'", args.push(Arg::S(pat))));
    }
    if let Some(e) = f.enabled {
        conds.push(format!("t.enabled = {}", args.push(Arg::I(b(e)))));
    }
    conds
}

pub(super) async fn insert_token(
    s: &SqlStore,
    t: &Token,
    files: &[TokenFile],
    keys: &[TriggerKey],
    audit: &AuditEntry,
) -> StoreResult<bool> {
    let mut tx = s.begin().await?;
    let flock = sqlx::query(&format!("SELECT id FROM flocks WHERE id = $1{}", s.row_lock(false)))
        .bind(t.flock_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if flock.is_none() {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO tokens (id, kind, memo, memo_folded, flock_id, enabled, created_us, updated_id, params, created_by, \
         alert_webhook_url, alert_email, alert_cooldown_secs, alert_max_per_hour, ignore_sources, search_words) \
         VALUES ($1, $2, $3, $10, $4, $5, $6, $7, $8, $9, $11, $12, $13, $14, $15, $16)",
    )
    .bind(t.id.as_str())
    .bind(t.kind.as_str())
    .bind(t.memo.as_str())
    .bind(t.flock_id.as_str())
    .bind(b(t.enabled))
    .bind(t.created_us)
    .bind(t.updated_id)
    .bind(t.params.to_string())
    .bind(t.created_by.as_str())
    .bind(fold(&t.memo))
    .bind(t.alert_webhook_url.as_deref())
    .bind(t.alert_email.as_deref())
    .bind(t.alert_cooldown_secs)
    .bind(t.alert_max_per_hour)
    .bind(serde_json::to_string(&t.ignore_sources)?)
    .bind(search_words(&t.memo, &t.id))
    .execute(&mut *tx)
    .await?;
    for f in files {
        sqlx::query("INSERT INTO token_files (token_id, name, content_type, data) VALUES ($1, $2, $3, $4)")
            .bind(t.id.as_str())
            .bind(f.name.as_str())
            .bind(f.content_type.as_str())
            .bind(f.data.as_slice())
            .execute(&mut *tx)
            .await?;
    }
    for k in keys {
        // The primary key refuses a key that names another token; the whole insert fails.
        sqlx::query("INSERT INTO token_keys (scheme, value, token_id) VALUES ($1, $2, $3)")
            .bind(k.scheme.as_str())
            .bind(k.value.as_str())
            .bind(t.id.as_str())
            .execute(&mut *tx)
            .await
            .with_context(|| format!("trigger key {}:{} is taken", k.scheme.as_str(), k.value))?;
    }
    audited(tx, audit, true).await
}

pub(super) async fn get_token_file(s: &SqlStore, token_id: &str, name: &str) -> StoreResult<Option<TokenFile>> {
    let row = sqlx::query("SELECT name, content_type, data FROM token_files WHERE token_id = $1 AND name = $2")
        .bind(token_id)
        .bind(name)
        .fetch_optional(&s.pool)
        .await?;
    row.map(|r| Ok(TokenFile { name: r.try_get(0)?, content_type: r.try_get(1)?, data: r.try_get(2)? })).transpose()
}

pub(super) async fn get_token(s: &SqlStore, id: &str) -> StoreResult<Option<Token>> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await?;
    row.as_ref().map(token_from_row).transpose()
}

pub(super) async fn list_tokens(
    s: &SqlStore,
    f: &TokenFilter,
    start: &PageStart<TokenKey>,
    limit: i64,
) -> StoreResult<Vec<Token>> {
    let mut args = Args::default();
    let mut conds = token_conds(f, &mut args);
    let start =
        PageStart { key: start.key.as_ref().map(|(c, i)| (Arg::I(*c), Arg::S(i.clone()))), backwards: start.backwards };
    let (page, order) = keyset(("t.created_us", "t.id"), true, &start, &mut args);
    conds.extend(page);
    let lim = args.push(Arg::I(limit));
    let sql = format!("SELECT {TOKEN_COLS} FROM tokens t WHERE {} ORDER BY {order} LIMIT {lim}", conds.join(" AND "));
    let rows = args.bind(sqlx::query(&sql)).fetch_all(&s.pool).await?;
    let mut tokens = rows.iter().map(token_from_row).collect::<StoreResult<Vec<_>>>()?;
    if start.backwards {
        tokens.reverse();
    }
    Ok(tokens)
}

pub(super) async fn count_tokens(s: &SqlStore, f: &TokenFilter) -> StoreResult<i64> {
    let mut args = Args::default();
    let conds = token_conds(f, &mut args);
    let sql = format!("SELECT COUNT(*) FROM tokens t WHERE {}", conds.join(" AND "));
    Ok(args.bind(sqlx::query(&sql)).fetch_one(&s.pool).await?.try_get(0)?)
}

pub(super) async fn update_token(
    s: &SqlStore,
    id: &str,
    change: &TokenChange,
    audit: &AuditEntry,
) -> StoreResult<Option<Token>> {
    let mut tx = s.begin().await?;
    let mut args = Args::default();
    let mut sets = vec!["updated_id = updated_id + 1".to_string()];
    if let Some(m) = &change.memo {
        sets.push(format!("memo = {}", args.push(Arg::S(m.clone()))));
        sets.push(format!("memo_folded = {}", args.push(Arg::S(fold(m)))));
        sets.push(format!("search_words = {}", args.push(Arg::S(search_words(m, id)))));
    }
    if let Some(e) = change.enabled {
        sets.push(format!("enabled = {}", args.push(Arg::I(b(e)))));
    }
    if let Some(p) = &change.params {
        sets.push(format!("params = {}", args.push(Arg::S(p.to_string()))));
    }
    match &change.alert_webhook_url {
        Some(Some(u)) => sets.push(format!("alert_webhook_url = {}", args.push(Arg::S(u.clone())))),
        Some(None) => sets.push("alert_webhook_url = NULL".to_string()),
        None => {}
    }
    match &change.alert_email {
        Some(Some(e)) => sets.push(format!("alert_email = {}", args.push(Arg::S(e.clone())))),
        Some(None) => sets.push("alert_email = NULL".to_string()),
        None => {}
    }
    for (col, v) in
        [("alert_cooldown_secs", change.alert_cooldown_secs), ("alert_max_per_hour", change.alert_max_per_hour)]
    {
        match v {
            Some(Some(n)) => sets.push(format!("{col} = {}", args.push(Arg::I(n)))),
            Some(None) => sets.push(format!("{col} = NULL")),
            None => {}
        }
    }
    if let Some(list) = &change.ignore_sources {
        sets.push(format!("ignore_sources = {}", args.push(Arg::S(serde_json::to_string(list)?))));
    }
    let idp = args.push(Arg::S(id.to_string()));
    let sql = format!("UPDATE tokens SET {} WHERE id = {idp}", sets.join(", "));
    let n = args.bind(sqlx::query(&sql)).execute(&mut *tx).await?.rows_affected();
    if n == 0 {
        return Ok(None);
    }
    let row =
        sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1")).bind(id).fetch_one(&mut *tx).await?;
    let token = token_from_row(&row)?;
    audited(tx, audit, Some(token)).await
}

pub(super) async fn delete_token(
    s: &SqlStore,
    id: &str,
    clear_incidents: bool,
    audit: &AuditEntry,
    retire: bool,
) -> StoreResult<TokenDeletion> {
    let mut tx = s.begin().await?;
    // Deleting the row first locks it: a hit batch that has not read the token yet then
    // finds it gone, one that has read it is waited for (it share-locks the row).
    let row = sqlx::query("DELETE FROM tokens WHERE id = $1 RETURNING kind, params")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(TokenDeletion::NotFound);
    };
    if !clear_incidents {
        let incidents: i64 = sqlx::query("SELECT COUNT(*) FROM incidents WHERE token_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if incidents > 0 {
            return Ok(TokenDeletion::HasIncidents); // dropping the transaction undoes the delete
        }
    }
    sqlx::query("DELETE FROM token_files WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM token_keys WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM hits WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM incidents WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
    if retire {
        let (kind, params): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        queue_retirement(&mut tx, id, &kind, &params, audit.time_us).await?;
    }
    audited(tx, audit, TokenDeletion::Deleted).await
}

pub(super) async fn trigger_keys(s: &SqlStore, scheme: KeyScheme) -> StoreResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT value, token_id FROM token_keys WHERE scheme = $1 ORDER BY value")
        .bind(scheme.as_str())
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}
