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
/// simply "not signed in", except a store that cannot be reached. Then who
/// the caller is is unknown, not "nobody": the request fails (503) rather
/// than, say, a sign-out answered as done while the session lives on.
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = match presented_token(&parts.headers) {
            Ok(Some(token)) => match state.authenticate(&token) {
                Ok(caller) => Some(caller),
                Err(AuthError::Unavailable(detail)) => {
                    return Err(AuthError::Unavailable(detail).into())
                }
                Err(_) => None,
            },
            _ => None,
        };
        Ok(MaybeCaller(caller))
    }
}

/// The client's address for rate limiting: the socket peer, or, when the
/// peer is a configured trusted proxy, the nearest address in
/// `X-Forwarded-For` that is not itself a trusted proxy. A client talking to
/// tessera directly cannot choose its address with a header. `None` when
/// the server runs without connection info (tests driving the router).
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(peer.map(|peer| {
            client_address(peer, &parts.headers, &state.config.trusted_proxies)
        })))
    }
}

/// A network written `addr` or `addr/bits`, as `--trusted-proxy` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Network { addr, bits })
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (net, ip, width) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (ip >> shift)
    }
}

/// The address a rate limit counts against: `peer` unless it is trusted,
/// then walking `X-Forwarded-For` from the right past trusted hops.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[Network]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        // A malformed chain proves nothing: count against the proxy.
        .unwrap_or_default();
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip))
        .unwrap_or(peer)
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
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted: Vec<Network> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 10.0.0.7")]);
        let client: IpAddr = "1.2.3.4".parse().unwrap();
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let stranger: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_address(proxy, &h, &trusted), client);
        assert_eq!(client_address(stranger, &h, &trusted), stranger);
        assert_eq!(client_address("::1".parse().unwrap(), &h, &trusted), client);
        let spoofed = headers(&[("x-forwarded-for", "nonsense, 1.2.3.4")]);
        assert_eq!(client_address(proxy, &spoofed, &trusted), proxy);
        assert_eq!(client_address(proxy, &headers(&[]), &trusted), proxy);
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("0.0.0.0/0".parse::<Network>().unwrap().contains(stranger));
        assert!(!"10.0.0.0/8".parse::<Network>().unwrap().contains(stranger));
    }

    #[test]
    fn other_schemes_are_refused() {
        let h = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert!(matches!(presented_token(&h), Err(AuthError::Invalid(_))));
        let h = headers(&[("authorization", "Bearer ")]);
        assert!(matches!(presented_token(&h), Err(AuthError::Missing)));
    }
}
