//! The guard of the admin endpoint and the login form. Who may open the console and
//! `/api/v1/*` ([`super::access`]): everyone on a loopback admin address without
//! `admin.token`; otherwise only a request with `Authorization: Bearer <admin.token>` or the
//! console's session cookie (set by the login form: HttpOnly, SameSite=Strict). Tokens are
//! compared in constant time ([`qunbridge_connectors::auth::token_matches`]). A state-changing
//! request (anything but GET and HEAD) whose `Origin` (else `Referer`) is not this host is
//! refused, whatever it carries; one with neither needs the bearer token, or an endpoint that
//! asks for none. Without a token (loopback), only requests naming a loopback host are
//! answered (no DNS rebinding). `/healthz`, `/readyz`, `/metrics` and the static assets stay
//! open.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::access::{host_is_loopback, origin_of, Access, Origin, Proof, SESSION_COOKIE};
use super::html;
use super::i18n::Lang;
use crate::admin::Health;

/// True for the paths that never ask for the token.
fn open_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/assets/")
}

/// The guard over the whole admin router.
pub async fn guard(State(health): State<Arc<Health>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if open_path(&path) {
        return next.run(request).await;
    }
    let access = health
        .console_view()
        .map_or_else(Access::open, |view| view.access.clone());
    let headers = request.headers();
    if !access.required() && !host_is_loopback(headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the console answers only loopback host names (`localhost`, 127.0.0.1) without `admin.token`",
        );
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes {
        let origin = origin_of(headers);
        if origin == Origin::Other {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: `Origin` is not this host",
            );
        }
        if path == "/login" {
            return next.run(request).await;
        }
        let proof = access.check(headers);
        return match (proof, origin) {
            (Proof::Nothing, _) => unauthorized(&path, &access, headers, request.uri().query()),
            // A browser always names the origin of a form or `fetch` POST: a cookie alone,
            // without it, is not trusted to change anything.
            (Proof::Session, Origin::Unknown) => refuse(
                StatusCode::FORBIDDEN,
                "state-changing request without `Origin` refused: send the bearer token",
            ),
            _ => next.run(request).await,
        };
    }
    match access.check(headers) {
        Proof::Nothing => unauthorized(&path, &access, headers, request.uri().query()),
        _ => next.run(request).await,
    }
}

/// A refusal as JSON.
fn refuse(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}

/// 401: JSON for `/api/…`, the login form for a page.
fn unauthorized(path: &str, access: &Access, headers: &HeaderMap, query: Option<&str>) -> Response {
    let mut response = if path.starts_with("/api/") {
        refuse(
            StatusCode::UNAUTHORIZED,
            if access.closed() {
                "closed: the admin endpoint listens beyond loopback and no `admin.token` is set"
            } else {
                "the admin token is required (`Authorization: Bearer <admin.token>`)"
            },
        )
    } else {
        let (lang, _) = Lang::of_request(query, headers);
        let mut response = html::respond(login_page(lang, access, path, false));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"qunbridge\""),
    );
    response
}

/// The login form; `next` is where it returns to.
fn login_page(lang: Lang, access: &Access, next: &str, wrong: bool) -> String {
    let body = if access.closed() {
        format!(
            "<section class=\"card\"><p>{}</p></section>",
            html::esc(lang.t("The console is closed: the admin endpoint listens beyond loopback and no `admin.token` is set."))
        )
    } else {
        format!(
            "<section class=\"card login\"><p>{}</p>{}<form method=\"post\" action=\"/login\">\
<label>{} <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label>\
<input type=\"hidden\" name=\"next\" value=\"{}\"><button type=\"submit\">{}</button></form></section>",
            html::esc(lang.t("The console needs the admin token (`admin.token`).")),
            if wrong {
                format!("<p class=\"error\">{}</p>", html::esc(lang.t("Wrong token.")))
            } else {
                String::new()
            },
            html::esc(lang.t("Admin token")),
            html::esc(next),
            html::esc(lang.t("Sign in")),
        )
    };
    html::layout(lang, None, lang.t("Sign in"), false, &body)
}

/// `POST /login` (`token=…&next=…`): sets the session cookie and returns to `next`, or
/// shows the form again (401).
pub async fn login(State(health): State<Arc<Health>>, headers: HeaderMap, body: Bytes) -> Response {
    let access = health
        .console_view()
        .map_or_else(Access::open, |view| view.access.clone());
    let mut token = String::new();
    let mut next = "/".to_owned();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "token" => token = value.into_owned(),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    // Only a path of this console: never `//elsewhere` or an absolute URL.
    if !next.starts_with('/') || next.starts_with("//") || next.contains('\\') {
        next = "/".to_owned();
    }
    let (lang, _) = Lang::of_request(None, &headers);
    let session = access.session_value();
    match session {
        Some(session) if access.token_is(token.as_bytes()) => {
            let cookie = format!("{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict");
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => {
            let mut response = html::respond(login_page(lang, &access, &next, true));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

/// `POST /logout`: forgets the session cookie.
pub async fn logout() -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("qb_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
