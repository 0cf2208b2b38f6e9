//! Who may open the console and `/api/v1/*`, as plain data: `admin.token`, whether it is
//! asked for, what a request proves (the bearer token or the login cookie, compared in
//! constant time with [`qunbridge_connectors::auth::token_matches`]) and where a request
//! comes from (`Origin`, else `Referer`, against `Host`). [`super::auth`] applies it.

use axum::http::{header, HeaderMap};
use hmac::{Hmac, Mac};
use qunbridge_connectors::auth::{bearer_value, token_matches};
use sha2::Sha256;

use crate::config::{AdminConfig, Secret};

/// Name of the session cookie the login form sets.
pub const SESSION_COOKIE: &str = "qb_session";
/// What the session cookie's value is derived from (with the token as the key), so the
/// cookie is not the token itself and changes when the token does.
const SESSION_CONTEXT: &[u8] = b"qunbridge console session v1";

/// Who may open the console and `/api/v1/*`.
#[derive(Debug, Clone)]
pub struct Access {
    /// `admin.token`.
    token: Option<Secret>,
    /// True when the token is asked for (set, or the endpoint listens beyond loopback).
    required: bool,
}

impl Access {
    /// The access `[admin]` asks for.
    pub fn of(admin: &AdminConfig) -> Access {
        Access {
            token: admin.token.clone(),
            required: admin.token_required(),
        }
    }

    /// Open to everyone (loopback without a token).
    pub fn open() -> Access {
        Access {
            token: None,
            required: false,
        }
    }

    /// True when the token is asked for.
    pub fn required(&self) -> bool {
        self.required
    }

    /// True when the token is asked for and none is set: nobody gets in.
    pub fn closed(&self) -> bool {
        self.required && self.token.is_none()
    }

    /// True when `presented` is the token (constant time).
    pub fn token_is(&self, presented: &[u8]) -> bool {
        self.token
            .as_ref()
            .is_some_and(|token| token_matches(token.expose().as_bytes(), presented))
    }

    /// The session cookie's value for the token in force.
    pub fn session_value(&self) -> Option<String> {
        let token = self.token.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(token.expose().as_bytes()).ok()?;
        mac.update(SESSION_CONTEXT);
        Some(hex(&mac.finalize().into_bytes()))
    }

    /// What a request proves.
    pub fn check(&self, headers: &HeaderMap) -> Proof {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_value(value.as_bytes()))
            .is_some_and(|presented| !presented.is_empty() && self.token_is(presented));
        if bearer {
            return Proof::Bearer;
        }
        let session = self.session_value().is_some_and(|expected| {
            cookie(headers, SESSION_COOKIE)
                .is_some_and(|value| token_matches(expected.as_bytes(), value.as_bytes()))
        });
        if session {
            Proof::Session
        } else if !self.required {
            Proof::Open
        } else {
            Proof::Nothing
        }
    }
}

/// What a request proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// The right `Authorization: Bearer` token.
    Bearer,
    /// The session cookie.
    Session,
    /// Nothing, and nothing is asked for.
    Open,
    /// Nothing, and the token is asked for.
    Nothing,
}

/// Where a state-changing request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `Origin` (or `Referer`) names this host.
    Same,
    /// It names another one (or `null`).
    Other,
    /// Neither header was sent (not a browser).
    Unknown,
}

/// Where a request comes from, by its `Origin` (else `Referer`) against its `Host`.
pub fn origin_of(headers: &HeaderMap) -> Origin {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let named = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(named) = named else {
        return Origin::Unknown;
    };
    let authority = url::Url::parse(named).ok().and_then(|url| {
        let host = url.host_str()?.to_ascii_lowercase();
        Some(match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    });
    match (authority, host) {
        (Some(authority), Some(host)) if authority == host => Origin::Same,
        _ => Origin::Other,
    }
}

/// True when the request's `Host` names loopback (`localhost`, `127.x.x.x`, `[::1]`, with
/// any port). An endpoint open without a token answers only such requests: a web page whose
/// name an attacker points at 127.0.0.1 (DNS rebinding) is then refused, since its requests
/// carry its own name.
pub fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn guarded() -> Access {
        Access {
            token: Some(Secret::new("0123456789abcdef-token")),
            required: true,
        }
    }

    #[test]
    fn bearer_or_session_cookie_proves_the_token() {
        let access = guarded();
        assert_eq!(access.check(&HeaderMap::new()), Proof::Nothing);
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef-token")]);
        assert_eq!(access.check(&bearer), Proof::Bearer);
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef-tokex")]);
        assert_eq!(access.check(&wrong), Proof::Nothing);
        let session = access.session_value().expect("session");
        assert_ne!(
            session, "0123456789abcdef-token",
            "the cookie is not the token"
        );
        let cookie = headers(&[(header::COOKIE, &format!("qb_lang=zh; qb_session={session}"))]);
        assert_eq!(access.check(&cookie), Proof::Session);
        let forged = headers(&[(header::COOKIE, "qb_session=0123456789abcdef-token")]);
        assert_eq!(access.check(&forged), Proof::Nothing);
        assert_eq!(Access::open().check(&HeaderMap::new()), Proof::Open);
        let closed = Access {
            token: None,
            required: true,
        };
        assert!(closed.closed());
        assert_eq!(closed.check(&bearer), Proof::Nothing);
    }

    #[test]
    fn only_loopback_names_count_as_loopback_hosts() {
        for host in [
            "127.0.0.1:9464",
            "localhost:9464",
            "[::1]:9464",
            "127.1.2.3",
            "LOCALHOST",
        ] {
            assert!(
                host_is_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        for host in [
            "evil.example:9464",
            "10.0.0.5:9464",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(
                !host_is_loopback(&headers(&[(header::HOST, host)])),
                "{host}"
            );
        }
        assert!(!host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn origin_must_name_this_host() {
        let same = headers(&[
            (header::HOST, "10.0.0.5:9464"),
            (header::ORIGIN, "http://10.0.0.5:9464"),
        ]);
        assert_eq!(origin_of(&same), Origin::Same);
        let other = headers(&[
            (header::HOST, "10.0.0.5:9464"),
            (header::ORIGIN, "http://evil.example"),
        ]);
        assert_eq!(origin_of(&other), Origin::Other);
        let null = headers(&[(header::HOST, "10.0.0.5:9464"), (header::ORIGIN, "null")]);
        assert_eq!(origin_of(&null), Origin::Other);
        let referer = headers(&[
            (header::HOST, "10.0.0.5:9464"),
            (header::REFERER, "http://10.0.0.5:9464/held"),
        ]);
        assert_eq!(origin_of(&referer), Origin::Same);
        let other_port = headers(&[
            (header::HOST, "10.0.0.5:9464"),
            (header::REFERER, "http://10.0.0.5:8080/held"),
        ]);
        assert_eq!(origin_of(&other_port), Origin::Other);
        assert_eq!(
            origin_of(&headers(&[(header::HOST, "10.0.0.5:9464")])),
            Origin::Unknown
        );
    }
}
