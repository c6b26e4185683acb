//! The sensor's stable 16-byte Kaspa peer id, generated once and persisted in the data dir.
//!
//! File: `<data_dir>/peer_id`, 32 lower-case hex characters and a newline. A random (v4) UUID is
//! the id, as kaspad does (`kaspad/src/daemon.rs` uses `Uuid::new_v4()` for its node id).
//! Peers key connections by (peer id, IP), so a stable id lets them recognise a restarted
//! sensor, and a never-nil id keeps one sensor's connections from colliding with another's.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use uuid::Uuid;

use crate::error::{Result, SensorError};

/// File name of the persisted id inside the data directory.
pub const PEER_ID_FILE: &str = "peer_id";

/// Loads the peer id from `<data_dir>/peer_id`, creating the directory and a fresh id when
/// absent. The new file is written to a temporary name and renamed, so a crash never leaves a
/// half-written id.
///
/// Errors: [`SensorError::Io`] when the directory or file cannot be created or read;
/// [`SensorError::Identity`] when the file exists but is not 32 hex characters or is all zero.
pub fn load_or_create(data_dir: &Path) -> Result<Uuid> {
    let path = data_dir.join(PEER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir)
                .map_err(|e| SensorError::io(format!("creating data dir {}", data_dir.display()), e))?;
            let id = Uuid::new_v4();
            write_atomically(&path, &format!("{}\n", id.simple()))?;
            Ok(id)
        }
        Err(e) => Err(SensorError::io(format!("reading {}", path.display()), e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<Uuid> {
    let invalid = |reason: &str| SensorError::Identity { path: path.to_owned(), reason: reason.to_owned() };
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("expected 32 hex characters (a 16-byte peer id)"));
    }
    let id = Uuid::try_parse(text).map_err(|e| invalid(&e.to_string()))?;
    if id.is_nil() {
        return Err(invalid("the nil peer id is not allowed"));
    }
    Ok(id)
}

fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let io = |what: &str, e| SensorError::io(format!("{what} {}", tmp.display()), e);
    let mut f = fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(contents.as_bytes()).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    fs::rename(&tmp, path).map_err(|e| SensorError::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let a = load_or_create(&data).unwrap();
        let b = load_or_create(&data).unwrap();
        assert_eq!(a, b);
        assert!(!a.is_nil());
        let text = fs::read_to_string(data.join(PEER_ID_FILE)).unwrap();
        assert_eq!(text.trim().len(), 32);
    }

    #[test]
    fn malformed_or_nil_file_is_an_identity_error() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["xyz", "00000000000000000000000000000000", "0011"] {
            fs::write(dir.path().join(PEER_ID_FILE), bad).unwrap();
            let err = load_or_create(dir.path()).unwrap_err();
            assert_eq!(err.kind(), "identity", "{bad}: {err}");
        }
    }
}
