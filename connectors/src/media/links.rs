//! Signed, expiring links to cached files, served by the optional built-in media server
//! (`[media] serve_listen`, `public_base_url`, `link_secret`): what a destination that cannot
//! take a picture's bytes (the DingTalk custom robot, `mode = "link"`) shows instead of the
//! source platform's URL. A link is `<base>/m/<sha256>.<ext>?e=<expiry>&s=<hmac>`: the expiry
//! in seconds since the Unix epoch and an HMAC-SHA256 over the path and the expiry, so links
//! cannot be guessed or extended.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Secret;

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    /// The signature does not match: answered 403.
    #[error("bad signature")]
    BadSignature,
    /// The link is past its expiry: answered 410.
    #[error("expired")]
    Expired,
}

/// Makes and checks the media server's links.
#[derive(Debug, Clone)]
pub struct LinkSigner {
    /// The media server's address as the platforms' clients reach it, without a trailing `/`.
    base_url: String,
    /// The HMAC key.
    secret: Secret,
    /// How long a link works after it is made.
    lifetime: Duration,
}

impl LinkSigner {
    /// A signer of links under `base_url`, valid for `lifetime` after they are made.
    pub fn new(base_url: &str, secret: Secret, lifetime: Duration) -> LinkSigner {
        LinkSigner {
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret,
            lifetime,
        }
    }

    /// The link to the blob `sha256` (served with extension `ext`), made at `now_secs`.
    pub fn link(&self, sha256: &str, ext: &str, now_secs: u64) -> String {
        let path = format!("/m/{sha256}.{ext}");
        let expiry = now_secs.saturating_add(self.lifetime.as_secs());
        let signature = self.signature(&path, expiry);
        format!("{}{path}?e={expiry}&s={signature}", self.base_url)
    }

    /// Checks the link `path` (`/m/<sha256>.<ext>`) with its `expiry` and `signature` at
    /// `now_secs`. The signature is checked first, in constant time.
    ///
    /// # Errors
    /// [`LinkRefused`] when the signature is wrong or the link expired.
    pub fn check(
        &self,
        path: &str,
        expiry: u64,
        signature: &str,
        now_secs: u64,
    ) -> Result<(), LinkRefused> {
        let expected = self.signature(path, expiry);
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err(LinkRefused::BadSignature);
        }
        if now_secs > expiry {
            return Err(LinkRefused::Expired);
        }
        Ok(())
    }

    /// The URL-safe HMAC of `path` and `expiry`.
    fn signature(&self, path: &str, expiry: u64) -> String {
        // An HMAC takes a key of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes()) else {
            return String::new();
        };
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expiry.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_check_their_signature_and_expiry() {
        let signer = LinkSigner::new(
            "https://media.example.org/",
            Secret::new("0123456789abcdef0123"),
            Duration::from_secs(3600),
        );
        let link = signer.link("ab12", "png", 1_000);
        assert!(link.starts_with("https://media.example.org/m/ab12.png?e=4600&s="));
        let signature = link.rsplit("s=").next().unwrap_or_default();
        assert_eq!(signer.check("/m/ab12.png", 4_600, signature, 4_600), Ok(()));
        assert_eq!(
            signer.check("/m/ab12.png", 4_600, signature, 4_601),
            Err(LinkRefused::Expired)
        );
        assert_eq!(
            signer.check("/m/ab12.png", 9_999, signature, 1_000),
            Err(LinkRefused::BadSignature)
        );
        assert_eq!(
            signer.check("/m/ab13.png", 4_600, signature, 1_000),
            Err(LinkRefused::BadSignature)
        );
    }
}
