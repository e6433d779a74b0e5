//! Cross-site request forgery, refused for the pages and the JSON API alike.
//!
//! A browser sends the session cookie with requests other sites trigger, so
//! a cookie alone never authorizes a change. A request that changes
//! anything (any method but GET, HEAD, OPTIONS) and is authenticated by the
//! session cookie must echo the `csrf_token` cookie (double submit, the
//! TinyAgentOS convention: `X-CSRF-Token` header, or a `csrf_token` field in
//! a form), and its `Origin` and `Sec-Fetch-Site`, where the browser sends
//! them, must say same-origin. Only the same origin counts: another port on
//! the same host is the same *site* but not the same origin, and may run
//! anything. Requests with `Authorization: Bearer` carry no ambient
//! credential and are exempt.
//!
//! The routes that establish credentials (login, setup, invite completion)
//! work without a session (a stale cookie is ignored) but refuse a browser's
//! cross-origin post, and a browser's form post there must carry the form
//! token: otherwise another site could sign a person in as someone else.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::extract::SESSION_COOKIE;
use crate::domain::DomainError;
use crate::error::ApiError;
use crate::state::AppState;

pub const CSRF_COOKIE: &str = "csrf_token";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "csrf_token";

/// The token of this browser, for pages to put in their forms (a request
/// extension set by [`protect`]).
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

/// Routes that establish credentials rather than use them.
const CREDENTIAL_ROUTES: [&str; 5] = [
    "/auth/login",
    "/auth/setup",
    "/auth/complete",
    // Signing in with a passkey alone.
    "/auth/passkey/start",
    "/auth/passkey/finish",
];

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, v)| n.trim() == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// A token as we mint them: 32 url-safe characters.
fn well_formed(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn csrf_cookie(token: &str, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{CSRF_COOKIE}={token}; Path=/; SameSite=Strict{secure}"
    ))
    .ok()
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the browser says the request comes from this origin. Headers a
/// non-browser client does not send are no evidence either way.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let fetch_site = headers.get("sec-fetch-site");
    if let Some(site) = fetch_site {
        match site.to_str().unwrap_or("") {
            // "none": typed into the address bar or a bookmark.
            "same-origin" | "none" => {}
            _ => return Err("this request came from another site or origin"),
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        // Under `Referrer-Policy: no-referrer` (tessera's own pages) a
        // browser sends `Origin: null` with its form posts; its fetch
        // metadata, which no page can set, has already said same-origin.
        if origin == "null" && fetch_site.is_some() {
            return Ok(());
        }
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or("");
        if origin == "null" || host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err("this request came from another origin");
        }
    }
    Ok(())
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The `csrf_token` field of a form body.
fn form_token(body: &[u8]) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v)
}

/// A `403` in JSON, or, for a browser's page request, a page in words.
fn refuse(reason: &str, page: bool) -> Response {
    let text = format!("{reason}; reload the page and try again");
    if page {
        let html = format!(
            "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\">\
             <title>Not allowed</title><link rel=stylesheet href=/static/style.css>\
             <main><section class=narrow><h1>Not allowed</h1><p>{}</p>\
             <p><a href=\"/\">Go to the start page</a></p></section></main>",
            // The reasons are fixed strings; escape anyway.
            text.replace('&', "&amp;").replace('<', "&lt;")
        );
        return (
            axum::http::StatusCode::FORBIDDEN,
            axum::response::Html(html),
        )
            .into_response();
    }
    ApiError::Domain(DomainError::Forbidden(text)).into_response()
}

/// The middleware: hands every request its browser's token (minting one and
/// setting the cookie when there is none) and refuses forged changes.
pub async fn protect(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let headers = request.headers();
    let existing = cookie(headers, CSRF_COOKIE)
        .filter(|t| well_formed(t))
        .map(str::to_owned);
    let token = existing.clone().unwrap_or_else(new_token);
    let path = request.uri().path();
    let credential_route = CREDENTIAL_ROUTES.contains(&path);
    let bearer = headers.contains_key(AUTHORIZATION);
    let with_session = cookie(headers, SESSION_COOKIE).is_some();
    let browser = headers.contains_key("sec-fetch-site") || headers.contains_key(ORIGIN);
    let page = crate::web::wants_html(headers);

    let mut request = if safe(request.method()) || bearer {
        request
    } else if credential_route || with_session {
        if let Err(reason) = same_origin(headers) {
            return refuse(reason, page);
        }
        let header_token = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // A form's token is in its body: read it (bounded like any body) and
        // hand the same bytes on.
        let (request, field_token) = if is_form(headers) && header_token.is_none() {
            let (parts, body) = request.into_parts();
            let bytes: Bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    return (
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        axum::Json(serde_json::json!({"error": "request body too large"})),
                    )
                        .into_response()
                }
            };
            let field = form_token(&bytes);
            (Request::from_parts(parts, Body::from(bytes)), field)
        } else {
            (request, None)
        };
        let presented = header_token.or(field_token);
        // Credential routes: a browser's form post needs the form token; a
        // client that is not a browser (no cookie, no fetch metadata) and
        // JSON sent same-origin do not.
        let needs_token = if credential_route {
            is_form(request.headers()) && (browser || existing.is_some())
        } else {
            true
        };
        if needs_token {
            let matches = match (&existing, &presented) {
                (Some(cookie), Some(given)) => equal(cookie, given),
                _ => false,
            };
            if !matches {
                return refuse("missing or wrong CSRF token", page);
            }
        }
        request
    } else {
        request
    };
    request.extensions_mut().insert(CsrfToken(token.clone()));
    let mut response = next.run(request).await;
    if existing.is_none() {
        if let Some(value) = csrf_cookie(&token, state.config.cookie_secure) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

/// Headers every response carries: no framing, no sniffing, no referrer, a
/// policy that allows nothing but tessera's own styles, scripts, forms and
/// fetches (the passkey buttons' JSON calls), and HSTS behind HTTPS. Pages are never stored by caches: some show a
/// token once.
pub async fn security_headers(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !is_static && !headers.contains_key("cache-control") {
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    if state.config.cookie_secure {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_the_same_origin_passes() {
        let ok = [
            headers(&[]),
            headers(&[
                ("host", "a.example:8080"),
                ("origin", "http://a.example:8080"),
            ]),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            // A form post from our own page under no-referrer.
            headers(&[("sec-fetch-site", "same-origin"), ("origin", "null")]),
        ];
        for h in ok {
            assert!(same_origin(&h).is_ok(), "{h:?}");
        }
        let refused = [
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[("sec-fetch-site", "cross-site")]),
            // Another port on the same host: same site, not same origin.
            headers(&[
                ("host", "127.0.0.1:8080"),
                ("origin", "http://127.0.0.1:9090"),
            ]),
            headers(&[("host", "a.example"), ("origin", "null")]),
            headers(&[("sec-fetch-site", "cross-site"), ("origin", "null")]),
            headers(&[("origin", "http://a.example")]),
        ];
        for h in refused {
            assert!(same_origin(&h).is_err(), "{h:?}");
        }
    }

    #[test]
    fn tokens_are_well_formed_and_cookies_parse() {
        let t = new_token();
        assert!(well_formed(&t), "{t}");
        assert!(!well_formed("short"));
        let h = headers(&[("cookie", &format!("a=1; csrf_token={t}; taos_session=x"))]);
        assert_eq!(cookie(&h, CSRF_COOKIE), Some(t.as_str()));
        assert_eq!(
            form_token(format!("a=1&csrf_token={t}").as_bytes()),
            Some(t)
        );
    }
}
