//! Retention: deleting the hits, incidents and finished alerts that may go, in small transactions.

use sqlx::Row;

use super::*;
use crate::model::*;
use crate::store::args::{Arg, Args};

/// Retention may delete a hit that raised no incident or whose incident is acknowledged.
pub(super) const LOOSE_HIT: &str =
    "(h.incident_id = 0 OR NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = h.incident_id AND i.acknowledged = 0))";

impl SqlStore {
    /// Deletes the hits `h` that `pick` (with `args` as $1, $2, …) selects, oldest first, at
    /// most `chunk` per transaction; collects their incident ids. Returns how many went.
    async fn delete_hits_chunked(
        &self,
        pick: &str,
        args: &[Arg],
        chunk: i64,
        incidents: &mut Vec<i64>,
    ) -> StoreResult<u64> {
        let mut all = Args::from_vec(args.to_vec());
        let limit = all.push(Arg::I(chunk));
        let sql = format!(
            "DELETE FROM hits WHERE id IN (SELECT h.id FROM hits h WHERE {pick} ORDER BY h.id LIMIT {limit}) \
             RETURNING incident_id"
        );
        let mut n = 0;
        loop {
            let mut tx = self.begin().await?;
            let rows = all.bind(sqlx::query(&sql)).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            for r in &rows {
                incidents.push(r.try_get(0)?);
            }
            n += rows.len() as u64;
            if (rows.len() as i64) < chunk {
                return Ok(n);
            }
        }
    }
}

pub(super) async fn prune(
    s: &SqlStore,
    older_than_us: Option<Micros>,
    keep_per_token: Option<i64>,
    chunk: i64,
) -> StoreResult<u64> {
    let mut deleted = 0;
    let mut incidents = Vec::new();
    if let Some(cutoff) = older_than_us {
        let pick = format!("h.time_us < $1 AND {LOOSE_HIT}");
        deleted += s.delete_hits_chunked(&pick, &[Arg::I(cutoff)], chunk, &mut incidents).await?;
        let mut tx = s.begin().await?;
        sqlx::query(
            "DELETE FROM alerts WHERE (delivered_us IS NOT NULL OR gave_up_us IS NOT NULL) AND created_us < $1",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    if let Some(keep) = keep_per_token {
        let crowded: Vec<String> = sqlx::query("SELECT token_id FROM hits GROUP BY token_id HAVING COUNT(*) > $1")
            .bind(keep)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for token in crowded {
            // The newest hit past the ones kept: it and older ones may go.
            let edge = sqlx::query("SELECT id FROM hits WHERE token_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2")
                .bind(token.as_str())
                .bind(keep)
                .fetch_optional(&s.pool)
                .await?;
            let Some(edge) = edge else { continue };
            let pick = format!("h.token_id = $1 AND h.id <= $2 AND {LOOSE_HIT}");
            let args = [Arg::S(token), Arg::I(edge.try_get(0)?)];
            deleted += s.delete_hits_chunked(&pick, &args, chunk, &mut incidents).await?;
        }
    }
    incidents.sort_unstable();
    incidents.dedup();
    incidents.retain(|&i| i > 0);
    for ids in incidents.chunks(500) {
        let mut args = Args::default();
        let list = args.list(ids.iter().map(|&i| Arg::I(i)));
        let sql = format!(
            "DELETE FROM incidents WHERE id IN ({list}) AND acknowledged = 1 \
             AND NOT EXISTS (SELECT 1 FROM hits WHERE hits.incident_id = incidents.id)"
        );
        let mut tx = s.begin().await?;
        args.bind(sqlx::query(&sql)).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(deleted)
}
