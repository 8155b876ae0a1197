//! The data directory and the small files Trapline keeps in it (the provision key, the sealing
//! key, the node id): read when present, made once — readable by the service's user only —
//! when not.
//!
//! What is found there is checked before it is trusted: anyone who can write the directory or
//! a key file can put their own provision key there and make themselves an admin. So a
//! directory or file not owned by the service's user, or writable by its group or others, is
//! refused with the command that fixes it; one merely readable by others is made private, with
//! a warning (its secrets may have been read).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Makes the data directory (mode 0700), or checks the one found (see the module doc).
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        return std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create data directory {}", dir.display()));
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read data directory {}", dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "data directory {} is not a directory", dir.display());
    check_private("data directory", dir, &meta, 0o700)
}

/// Takes the data directory for this `trapline serve` (an exclusive lock on its `serve.lock`,
/// held while the returned file lives): two servers on one data directory would share one node
/// id and, with SQLite, one database file without knowing of each other.
pub fn lock_for_serve(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // flock(2) underneath (std's File::try_lock): released when the file is closed, also when
    // the process dies.
    let taken = file.try_lock().is_ok();
    anyhow::ensure!(
        taken,
        "another trapline serve is using data directory {} (it holds {}): stop it, or give this one its own \
         --data-dir",
        dir.display(),
        path.display()
    );
    Ok(file)
}

/// Refuses what others own or may write; makes private (`mode`) what others may read.
fn check_private(what: &str, path: &Path, meta: &std::fs::Metadata, mode: u32) -> anyhow::Result<()> {
    let me = rustix::process::geteuid().as_raw();
    let shown = path.display();
    anyhow::ensure!(
        meta.uid() == me,
        "{what} {shown} belongs to user id {}, not to this service's user ({me}): whoever owns it can replace \
         its keys. Fix with: chown {me} {shown}",
        meta.uid()
    );
    let found = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        found & 0o022 == 0,
        "{what} {shown} is writable by its group or others (mode {found:04o}): anyone who can write there can \
         replace its keys. Check its contents, then fix with: chmod {mode:o} {shown}"
    );
    if found & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make {what} {shown} private"))?;
        tracing::warn!(
            "{what} {shown} was readable by its group or others (mode {found:04o}); made it {mode:04o}. \
             Secrets in it may have been read: consider rotating them."
        );
    }
    Ok(())
}

/// The trimmed text of `path`; when the file is missing, `make()` is written there first
/// (mode 0600, never over an existing file) and returned.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
            check_private("file", path, &meta, 0o600)?;
            Ok(text.trim().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = make();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(f, "{value}")?;
            Ok(value)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        assert_eq!(read_or_create(&path, || "first".into()).unwrap(), "first");
        assert_eq!(read_or_create(&path, || "second".into()).unwrap(), "first");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(read_or_create(dir.path(), || "x".into()).is_err(), "a directory is no file");
        // found readable by others: made private; writable by others: refused
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_or_create(&path, || "second".into()).unwrap(), "first");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o662)).unwrap();
        let e = read_or_create(&path, || "second".into()).unwrap_err().to_string();
        assert!(e.contains("writable by its group or others (mode 0662)") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn one_server_a_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_for_serve(dir.path()).unwrap();
        let e = lock_for_serve(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another trapline serve is using data directory"), "{e}");
        drop(held);
        lock_for_serve(dir.path()).unwrap();
    }

    #[test]
    fn data_dir_made_private_or_checked() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        prepare_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "readable by others: made private");
        for loose in [0o777, 0o770, 0o702] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(loose)).unwrap();
            let e = prepare_dir(&dir).unwrap_err().to_string();
            assert!(e.contains("writable by its group or others") && e.contains("chmod 700"), "{e}");
            assert_eq!(mode(&dir), loose, "left as found for the operator to check");
        }
        let file = base.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(prepare_dir(&file).unwrap_err().to_string().contains("is not a directory"));
    }
}
