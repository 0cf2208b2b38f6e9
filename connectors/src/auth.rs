//! Bearer-token checks shared by every listener a connector opens (the `api` endpoint, OneBot
//! reverse WebSockets). Tokens are compared in constant time so that response timing does
//! not leak how much of a guess was right.

use subtle::ConstantTimeEq;

/// What an `Authorization` header (or query token) proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No token is configured, or the right one was presented.
    Allowed,
    /// A token is configured and none was presented.
    Missing,
    /// A token was presented and it is wrong.
    Wrong,
}

/// Checks an `Authorization` header value against the configured token.
///
/// `expected = None` allows everything. The scheme `Bearer` is matched in any letter case, and
/// an empty `Bearer ` counts as no token, as OneBot implementations send it.
pub fn check_bearer(expected: Option<&str>, header: Option<&[u8]>) -> AuthOutcome {
    let Some(expected) = expected else {
        return AuthOutcome::Allowed;
    };
    let presented = header.and_then(bearer_token).unwrap_or(&[]);
    if presented.is_empty() {
        return AuthOutcome::Missing;
    }
    if bool::from(presented.ct_eq(expected.as_bytes())) {
        AuthOutcome::Allowed
    } else {
        AuthOutcome::Wrong
    }
}

/// The token part of `Bearer <token>` (scheme in any case), trimmed; `None` for other schemes.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    if header.len() < 6 || !header[..6].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = &header[6..];
    if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_rules() {
        let token = Some("s3cret");
        assert_eq!(check_bearer(None, None), AuthOutcome::Allowed);
        assert_eq!(
            check_bearer(token, Some(b"Bearer s3cret")),
            AuthOutcome::Allowed
        );
        assert_eq!(
            check_bearer(token, Some(b"bearer  s3cret ")),
            AuthOutcome::Allowed
        );
        assert_eq!(
            check_bearer(token, Some(b"BEARER s3cret")),
            AuthOutcome::Allowed
        );
        assert_eq!(check_bearer(token, Some(b"Bearer ")), AuthOutcome::Missing);
        assert_eq!(check_bearer(token, None), AuthOutcome::Missing);
        assert_eq!(
            check_bearer(token, Some(b"Bearer s3cre")),
            AuthOutcome::Wrong
        );
        assert_eq!(
            check_bearer(token, Some(b"Bearers3cret")),
            AuthOutcome::Missing
        );
        assert_eq!(
            check_bearer(token, Some(b"Basic s3cret")),
            AuthOutcome::Missing
        );
    }
}
