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
    if token_matches(expected.as_bytes(), presented) {
        AuthOutcome::Allowed
    } else {
        AuthOutcome::Wrong
    }
}

/// True when `presented` is `expected`, compared in constant time: every byte of equal-length
/// values is looked at whatever the first difference is (a length difference answers at
/// once; the length of a token is not the secret).
pub fn token_matches(expected: &[u8], presented: &[u8]) -> bool {
    bool::from(presented.ct_eq(expected))
}

/// The token part of `Bearer <token>` (scheme in any case), trimmed; `None` for other schemes.
pub fn bearer_value(header: &[u8]) -> Option<&[u8]> {
    bearer_token(header)
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

    /// The comparison takes as long when the first byte differs as when the last one does:
    /// a short-circuiting `==` on a 1 MiB token is hundreds of times faster for the first.
    #[test]
    fn a_wrong_token_is_compared_in_constant_time() {
        let expected = vec![b'k'; 1 << 20];
        let mut wrong_first = expected.clone();
        wrong_first[0] = b'x';
        let mut wrong_last = expected.clone();
        wrong_last[(1 << 20) - 1] = b'x';
        assert!(token_matches(&expected, &expected));
        assert!(!token_matches(&expected, &wrong_first));
        assert!(!token_matches(&expected, &wrong_last));
        assert!(!token_matches(&expected, &expected[1..]));
        assert!(!token_matches(b"", b"x"));
        // The fastest of several runs of each, so a busy machine only adds noise upwards.
        let fastest = |presented: &[u8]| {
            (0..15)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(token_matches(
                        std::hint::black_box(&expected),
                        std::hint::black_box(presented),
                    ));
                    start.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let first = fastest(&wrong_first).as_secs_f64();
        let last = fastest(&wrong_last).as_secs_f64();
        let ratio = first.max(last) / first.min(last).max(1e-9);
        assert!(
            ratio < 3.0,
            "first byte wrong: {first:.6}s, last byte wrong: {last:.6}s (ratio {ratio:.1})"
        );
    }

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
