//! The relay's libp2p identity: a keypair file, so the PeerId survives restarts.
//!
//! Format: the protobuf encoding of a libp2p keypair (`Keypair::to_protobuf_encoding`), the same
//! bytes the operator stores in the RelayNode's identity Secret (key `identity.key`). In
//! Kubernetes the file is a read-only Secret mount and always exists; elsewhere a missing file is
//! created once with a fresh Ed25519 key (mode 0600, written to a temporary file in the same
//! directory and renamed, so a crash never leaves half a key). A file that exists but cannot be
//! read or decoded is an error: it is never replaced, since that would silently change the
//! PeerId every client knows.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

use crate::error::{Result, SensorError};

/// Loads the keypair from `path`, or creates an Ed25519 one there when the file does not exist
/// (creating missing parent directories). Returns the key and whether it was created.
///
/// Errors: [`SensorError::Identity`] when the file exists but cannot be read, is empty or is not
/// a protobuf-encoded keypair of a supported type (Ed25519 in this build), or when a new file
/// cannot be written.
pub fn load_or_create(path: &Path) -> Result<(Keypair, bool)> {
    let fail = |reason: String| SensorError::Identity { path: path.to_owned(), reason };
    match fs::read(path) {
        Ok(bytes) => decode(&bytes).map(|key| (key, false)).map_err(fail),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| fail(format!("cannot encode a new key: {e}")))?;
            write_new(path, &bytes).map_err(|e| fail(format!("cannot create it: {e}")))?;
            Ok((key, true))
        }
        Err(e) => Err(fail(format!("cannot read it: {e}"))),
    }
}

/// Decodes a protobuf-encoded keypair; the error says what is wrong, for an operator.
pub fn decode(bytes: &[u8]) -> std::result::Result<Keypair, String> {
    if bytes.is_empty() {
        return Err("the file is empty (expected a protobuf-encoded libp2p keypair)".into());
    }
    Keypair::from_protobuf_encoding(bytes)
        .map_err(|e| format!("not a protobuf-encoded libp2p keypair (Keypair::to_protobuf_encoding, Ed25519): {e}"))
}

/// Writes `bytes` to a new temporary file (mode 0600) next to `path`, syncs it and renames it to
/// `path`.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/relay.key");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (b, created_again) = load_or_create(&path).unwrap();
        assert!(!created_again);
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        assert!(a.public().try_into_ed25519().is_ok(), "a new key is Ed25519");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn an_existing_key_is_loaded_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let key = Keypair::generate_ed25519();
        fs::write(&path, key.to_protobuf_encoding().unwrap()).unwrap();
        let (loaded, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(loaded.public().to_peer_id(), key.public().to_peer_id());
    }

    #[test]
    fn garbage_is_an_identity_error_and_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        for garbage in [&b""[..], b"not a key", &[0x08, 0x01, 0x12, 0x40, 0xff][..]] {
            fs::write(&path, garbage).unwrap();
            let err = load_or_create(&path).unwrap_err();
            assert_eq!(err.kind(), "identity", "{err}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
            assert_eq!(fs::read(&path).unwrap(), garbage, "the file is left alone");
        }
    }

    #[test]
    fn an_unreadable_file_is_an_identity_error() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading fails with something other than NotFound.
        let path = dir.path().join("identity.key");
        fs::create_dir(&path).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert_eq!(err.kind(), "identity", "{err}");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn an_unwritable_location_is_an_identity_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let err = load_or_create(&blocker.join("identity.key")).unwrap_err();
        assert_eq!(err.kind(), "identity", "{err}");
        assert!(err.to_string().contains("cannot"), "{err}");
    }
}
