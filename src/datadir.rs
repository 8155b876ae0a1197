//! Small files Trapline keeps in its data directory (the provision key, the sealing key, the
//! node id): read when present, made once — readable by the service's user only — when not.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// The trimmed text of `path`; when the file is missing, `make()` is written there first
/// (mode 0600, never over an existing file) and returned.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
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
    }
}
