//! Request extractors: the one place a token is taken from a request and
//! turned into a [`Caller`], plus the client address for rate limiting.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::authz::AuthError;
use crate::error::ApiError;
use crate::state::{AnyCaller, AppState, Caller};

pub const SESSION_COOKIE: &str = "taos_session";

/// The token a request presents: `Authorization: Bearer` first, then the
/// session cookie. `Ok(None)` when there is neither.
pub fn presented_token(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| AuthError::Invalid("authorization header is not valid text"))?;
        let value = value.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Invalid("authorization scheme must be Bearer"));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        return Ok(Some(token.to_owned()));
    }
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=') {
                let token = token.trim().trim_matches('"');
                if name.trim() == SESSION_COOKIE && !token.is_empty() {
                    return Ok(Some(token.to_owned()));
                }
            }
        }
    }
    Ok(None)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = presented_token(&parts.headers)?.ok_or(AuthError::Missing)?;
        Ok(state.authenticate(&token)?)
    }
}

impl FromRequestParts<AppState> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = presented_token(&parts.headers)?.ok_or(AuthError::Missing)?;
        Ok(state.authenticate_any(&token)?)
    }
}

/// For routes that behave differently for signed-in callers but also serve
/// anonymous ones (`/auth/status`, logout): any authentication failure is
/// simply "not signed in".
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = match presented_token(&parts.headers) {
            Ok(Some(token)) => state.authenticate(&token).ok(),
            _ => None,
        };
        Ok(MaybeCaller(caller))
    }
}

/// The peer address, when the server was started with connection info (tests
/// driving the router directly have none).
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_wins_over_cookie() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "taos_session=xyz"),
        ]);
        assert_eq!(presented_token(&h).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "theme=dark; taos_session=xyz; other=1")]);
        assert_eq!(presented_token(&h).unwrap().as_deref(), Some("xyz"));
        assert_eq!(presented_token(&headers(&[])).unwrap(), None);
    }

    #[test]
    fn other_schemes_are_refused() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(matches!(presented_token(&h), Err(AuthError::Invalid(_))));
        let h = headers(&[("authorization", "Bearer ")]);
        assert!(matches!(presented_token(&h), Err(AuthError::Missing)));
    }
}
