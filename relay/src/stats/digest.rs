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
    /// The HMAC state keyed once (the key's pads hashed), cloned for each digest.
    keyed: Hmac<Sha256>,
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
                Ok(Digester::with_key(key))
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
                Ok(Digester::with_key(key))
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
            Ok(Some(key)) => Ok(Digester::with_key(key)),
            Ok(None) => Digester::open(state_dir)
                .map_err(|error| format!("{}: {error}", state_dir.join(KEY_FILE).display())),
            Err(error) => Err(format!("the shared store: {error}")),
        }
    }

    /// A digester with the given key.
    pub fn with_key(key: [u8; 32]) -> Digester {
        Digester {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .expect("HMAC takes a key of any length"),
        }
    }

    /// The digest of a member: 32 hex characters.
    pub fn digest(&self, platform: &str, user: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.keyed.clone();
        mac.update(platform.as_bytes());
        mac.update(&[0]);
        mac.update(user.as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(32);
        for byte in &bytes[..16] {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        hex
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

    #[test]
    fn a_digest_is_the_first_half_of_hmac_sha256_over_platform_nul_id_in_hex() {
        // Computed independently (Python hmac): digests kept in a store stay the same across
        // versions, or every member would count twice on the day of an upgrade.
        let digester = Digester::with_key([7; 32]);
        assert_eq!(
            digester.digest("qq", "1234567890"),
            "ce93bcc265142191d85198626344d8e4"
        );
    }
}
