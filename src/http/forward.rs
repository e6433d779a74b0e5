//! `GET /auth/verify` (Caddy `forward_auth`, Traefik `ForwardAuth`) and
//! `GET /auth/verify/nginx` (nginx `auth_request`): a reverse proxy asks
//! about one of the agent host's requests. Allowed is `200` with the
//! caller's identity in headers; the decision is `crate::forward`'s.

use axum::extract::State;
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::authz::AuthError;
use crate::error::ApiError;
use crate::forward::{ForwardError, OriginalRequest, Verdict};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/verify", get(verify))
        .route("/auth/verify/nginx", get(verify_nginx))
}

/// Where the proxy describes the original request, and how it wants to
/// be told to send a browser to the sign-in page.
#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    /// `X-Forwarded-Method` / `-Uri` / `-Host` / `-Proto`; a redirect is a
    /// `302` the proxy passes on.
    Forwarded,
    /// `X-Original-Method` / `X-Original-URL`; nginx only passes on `401`
    /// and `403`, so the sign-in page travels in `Location` on a `401`.
    Nginx,
}

async fn verify(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(&state, &headers, Dialect::Forwarded)
}

async fn verify_nginx(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(&state, &headers, Dialect::Nginx)
}

fn answer(state: &AppState, headers: &HeaderMap, dialect: Dialect) -> Response {
    let request = match original(headers, dialect) {
        Ok(request) => request,
        Err(e) => return refusal(e, None, headers, dialect),
    };
    let token = super::extract::presented_token(headers);
    match state.forward.decide(state, &request, token) {
        Ok(Verdict::Public) => StatusCode::OK.into_response(),
        Ok(Verdict::Allowed(allowed)) => identity(&allowed),
        Err(e) => refusal(e, Some(&request), headers, dialect),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ForwardError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| ForwardError::BadRequest(format!("{name} is not valid text"))),
    }
}

fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ForwardError> {
    header(headers, name)?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ForwardError::BadRequest(format!(
                "{name} is missing: is this request coming from the reverse proxy's forward auth?"
            ))
        })
}

fn original(headers: &HeaderMap, dialect: Dialect) -> Result<OriginalRequest, ForwardError> {
    match dialect {
        Dialect::Forwarded => {
            let method = required(headers, "x-forwarded-method")?;
            let uri = required(headers, "x-forwarded-uri")?;
            // Not needed for the decision (the table matches paths), but a
            // garbled one means the proxy is misconfigured: say so.
            if let Some(proto) = header(headers, "x-forwarded-proto")? {
                if !matches!(proto, "http" | "https") {
                    return Err(ForwardError::BadRequest(
                        "X-Forwarded-Proto must be http or https".into(),
                    ));
                }
            }
            if let Some(host) = header(headers, "x-forwarded-host")? {
                if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
                    return Err(ForwardError::BadRequest(
                        "X-Forwarded-Host is not a host name".into(),
                    ));
                }
            }
            OriginalRequest::parse(method, uri)
        }
        Dialect::Nginx => {
            let method = required(headers, "x-original-method")?;
            let url = required(headers, "x-original-url")?;
            OriginalRequest::parse(method, url)
        }
    }
}

/// Most bytes of a user-supplied value put in a header.
const MAX_HEADER_VALUE: usize = 256;

/// A header value that survives every proxy: printable ASCII as is, and
/// `%`, control characters and anything beyond ASCII percent-encoded
/// (UTF-8), so a consumer percent-decodes to get the original back.
fn encoded(text: &str) -> Option<HeaderValue> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if (c.is_ascii_graphic() || c == ' ') && c != '%' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        if out.len() > MAX_HEADER_VALUE {
            return None;
        }
    }
    let out = out.trim();
    if out.is_empty() {
        return None;
    }
    HeaderValue::from_str(out).ok()
}

/// An email address as a header, or nothing when it is not plain ASCII
/// without spaces (an address is never worth a mangled header).
fn email(text: &str) -> Option<HeaderValue> {
    let plain = !text.is_empty()
        && text.len() <= MAX_HEADER_VALUE
        && text.contains('@')
        && text.bytes().all(|b| b.is_ascii_graphic());
    plain.then(|| HeaderValue::from_str(text).ok()).flatten()
}

fn identity(allowed: &crate::forward::Allowed) -> Response {
    let user = &allowed.user;
    let mut headers = HeaderMap::new();
    let mut set = |names: &[&'static str], value: Option<HeaderValue>| {
        if let Some(value) = value {
            for name in names {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
    };
    set(
        &["remote-user", "x-auth-request-user", "x-forwarded-user"],
        encoded(&user.username),
    );
    set(&["remote-name"], encoded(&user.full_name));
    set(
        &["remote-email", "x-auth-request-email", "x-forwarded-email"],
        email(&user.email),
    );
    // Group names are slugs, never `users` or `admins` (see
    // `domain::groups`), so no group reads as one of those.
    let mut groups = String::from(if user.is_admin {
        "users,admins"
    } else {
        "users"
    });
    // As many as fit: a header over the limit would be left out whole,
    // taking `users` with it.
    for group in allowed.groups.iter() {
        if groups.len() + 1 + group.len() <= MAX_HEADER_VALUE {
            groups.push(',');
            groups.push_str(group);
        }
    }
    set(
        &["remote-groups", "x-auth-request-groups"],
        encoded(&groups),
    );
    set(&["x-tessera-user-id"], encoded(&user.id));
    set(&["x-tessera-operation"], encoded(&allowed.operation));
    if let Some((agent, level)) = &allowed.agent {
        set(&["x-tessera-agent"], encoded(agent));
        set(
            &["x-tessera-access"],
            Some(HeaderValue::from_static(level.as_str())),
        );
    }
    set(
        &["x-tessera-assertion"],
        HeaderValue::from_str(&allowed.assertion).ok(),
    );
    (StatusCode::OK, headers).into_response()
}

/// The sign-in page, coming back to `request` afterwards when that is a
/// path tessera would send a browser to.
fn sign_in(request: Option<&OriginalRequest>) -> String {
    let next = request.and_then(|r| super::auth::safe_next(Some(&r.target())));
    match next.and_then(|n| serde_urlencoded::to_string([("next", n)]).ok()) {
        Some(query) => format!("/auth/login?{query}"),
        None => "/auth/login".to_owned(),
    }
}

fn refusal(
    error: ForwardError,
    request: Option<&OriginalRequest>,
    headers: &HeaderMap,
    dialect: Dialect,
) -> Response {
    let auth = match error {
        ForwardError::BadRequest(message) => return ApiError::BadRequest(message).into_response(),
        ForwardError::Domain(e) => return ApiError::Domain(e).into_response(),
        ForwardError::Unlisted { .. } => {
            return ApiError::Auth(AuthError::Denied(error.to_string())).into_response()
        }
        ForwardError::Auth(auth) => auth,
    };
    let unauthenticated = matches!(
        auth,
        AuthError::Missing | AuthError::Invalid(_) | AuthError::Expired | AuthError::Revoked
    );
    if !unauthenticated || !crate::web::wants_html(headers) {
        return ApiError::Auth(auth).into_response();
    }
    let Ok(location) = HeaderValue::from_str(&sign_in(request)) else {
        return ApiError::Auth(auth).into_response();
    };
    match dialect {
        Dialect::Forwarded => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        Dialect::Nginx => {
            let mut response = ApiError::Auth(auth).into_response();
            response.headers_mut().insert(LOCATION, location);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_encoded_not_echoed() {
        assert_eq!(encoded("bob").unwrap(), "bob");
        assert_eq!(encoded("Bob Smith").unwrap(), "Bob Smith");
        assert_eq!(encoded("Zoë 100%").unwrap(), "Zo%C3%AB 100%25");
        assert_eq!(encoded("a\r\nX-Evil: 1").unwrap(), "a%0D%0AX-Evil: 1");
        assert!(encoded("").is_none());
        assert!(encoded(&"x".repeat(MAX_HEADER_VALUE + 1)).is_none());
        assert_eq!(email("bob@example.org").unwrap(), "bob@example.org");
        assert!(email("bob @example.org").is_none());
        assert!(email("bøb@example.org").is_none());
        assert!(email("").is_none());
    }

    #[test]
    fn the_sign_in_page_comes_back_to_the_original_path() {
        let r = OriginalRequest::parse("GET", "/api/agents/helper?a=1&b=2").unwrap();
        assert_eq!(
            sign_in(Some(&r)),
            "/auth/login?next=%2Fapi%2Fagents%2Fhelper%3Fa%3D1%26b%3D2"
        );
        assert_eq!(sign_in(None), "/auth/login");
    }
}
