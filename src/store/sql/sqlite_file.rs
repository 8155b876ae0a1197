//! Checks of a SQLite file before the pool opens it, so a damaged or locked file is reported at once.

use sqlx::Executor;

/// What is wrong with a SQLite file's header, if anything SQLite itself would only notice when
/// it reads a missing page: a file cut short of the size its header vouches for (checked only
/// with no write-ahead log beside it, since after a crash in mid-checkpoint the log still holds
/// the pages and SQLite puts them back). See <https://www.sqlite.org/fileformat2.html> §1.3.
pub(super) fn sqlite_header_problem(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let len = std::fs::metadata(path).ok()?.len();
    let wal = path.with_extension(match path.extension() {
        Some(e) => format!("{}-wal", e.to_string_lossy()),
        None => "-wal".into(),
    });
    if len == 0 || std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return None;
    }
    let mut header = [0u8; 100];
    let mut f = std::fs::File::open(path).ok()?;
    if f.read_exact(&mut header).is_err() {
        return Some(format!("{len} bytes, shorter than a SQLite header"));
    }
    if &header[..16] != b"SQLite format 3\0" {
        return None; // SQLite says "file is not a database" itself
    }
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([header[28], header[29], header[30], header[31]]));
    let vouched = header[24..28] == header[92..96]; // the size field is valid for this version
    (vouched && pages > 0 && len < pages * page)
        .then(|| format!("{len} bytes where its header says {} pages of {page} bytes: cut short?", pages))
}

/// Opens the SQLite file once, alone, before the pool does: a file that is no database, a
/// damaged one, or one another process holds locked is then reported at once, naming the file
/// and what to do, instead of as "pool timed out" after 30 s.
pub(super) async fn probe_sqlite(url: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let shown = path.display();
    let explain = |e: sqlx::Error| {
        let code = e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
        let hint = match code.as_deref() {
            Some("26") | Some("11") => {
                "it is not a SQLite database or it is damaged: restore it from a backup, or move it (and its -wal \
                 and -shm files) away to start with an empty one"
            }
            Some("5") | Some("6") => {
                "another process holds it locked: is another trapline or a sqlite3 shell using it?"
            }
            Some("8") | Some("14") | Some("23") => "the service's user cannot read and write it or its directory",
            _ => "see the error",
        };
        anyhow::anyhow!("cannot open database {shown}: {hint} ({e})")
    };
    if let Some(problem) = sqlite_header_problem(path) {
        anyhow::bail!(
            "cannot open database {shown}: it is damaged ({problem}): restore it from a backup, or move it away to \
             start with an empty one"
        );
    }
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), sqlx::AnyConnection::connect(url))
        .await
        .map_err(|_| anyhow::anyhow!("cannot open database {shown}: no answer within 10 s"))?
        .map_err(explain)?;
    // Reading the schema reads the header and the first page; BEGIN IMMEDIATE waits (up to the
    // busy timeout) for a lock that another process holds, then says so.
    let checks = async {
        conn.execute("PRAGMA busy_timeout=5000").await?;
        conn.execute("SELECT COUNT(*) FROM sqlite_schema").await?;
        conn.execute("BEGIN IMMEDIATE").await?;
        conn.execute("ROLLBACK").await?;
        Ok::<_, sqlx::Error>(())
    };
    checks.await.map_err(explain)?;
    conn.close().await.map_err(explain)?;
    Ok(())
}
