//! Pseudonymous member digests: group health counts who spoke without storing who. A digest
//! is HMAC-SHA256 of the platform and user id under a key generated once and kept in
//! `state_dir/stats.key` (mode 0600); without the key the digests cannot be tied back to ids.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key file's name under `state_dir`.
pub const KEY_FILE: &str = "stats.key";

/// Makes digests with the deployment's key.
#[derive(Clone)]
pub struct Digester {
    /// The HMAC key.
    key: [u8; 32],
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester(..)")
    }
}

impl Digester {
    /// Reads the key from `state_dir`, creating it (0600) the first time.
    ///
    /// # Errors
    /// When the file can be neither read nor created, or holds something else than a key.
    pub fn open(state_dir: &Path) -> std::io::Result<Digester> {
        let path = state_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is not a 32-byte key", path.display()),
                    )
                })?;
                Ok(Digester { key })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(Digester { key })
            }
            Err(error) => Err(error),
        }
    }

    /// The digester of a deployment: the key its shared store keeps (processes sharing a
    /// Redis store must make the same digests, or one member would count once per process),
    /// else the file in `state_dir`.
    ///
    /// # Errors
    /// When neither the store nor the file gives a key.
    pub async fn open_for(
        state_dir: &Path,
        store: &dyn crate::store::RelayStore,
    ) -> Result<Digester, String> {
        match store.shared_stats_key(rand::random()).await {
            Ok(Some(key)) => Ok(Digester { key }),
            Ok(None) => Digester::open(state_dir)
                .map_err(|error| format!("{}: {error}", state_dir.join(KEY_FILE).display())),
            Err(error) => Err(format!("the shared store: {error}")),
        }
    }

    /// A digester with a given key (tests).
    pub fn with_key(key: [u8; 32]) -> Digester {
        Digester { key }
    }

    /// The digest of a member: 32 hex characters.
    pub fn digest(&self, platform: &str, user: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(platform.as_bytes());
        mac.update(&[0]);
        mac.update(user.as_bytes());
        let bytes = mac.finalize().into_bytes();
        bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_digests_are_stable_and_not_the_id() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = Digester::open(dir.path()).expect("created");
        let again = Digester::open(dir.path()).expect("read back");
        let digest = first.digest("qq", "1437420188");
        assert_eq!(digest, again.digest("qq", "1437420188"));
        assert_eq!(digest.len(), 32);
        assert!(!digest.contains("1437420188"));
        assert_ne!(digest, first.digest("wechat", "1437420188"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
