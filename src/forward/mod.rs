//! Forward auth for a reverse proxy in front of the agent host: the proxy
//! asks about each of the host's requests; the route table names the rule,
//! the policy decides exactly as for tessera's own routes, and an allowed
//! request gets the caller's identity and a short-lived signed assertion.
//! No HTTP here: `http::forward` reads headers and writes the answer.

pub mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::authz::cache::Memo;
use crate::authz::policy::RequestFacts;
use crate::authz::AuthError;
use crate::domain::levels::Level;
use crate::domain::users::User;
use crate::domain::{now, DomainError};
use crate::state::{AppState, Caller, Via};
use table::{RouteTable, Rule};

/// Longest original URI considered; longer ones are refused as garbled.
const MAX_URI: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The proxy's description of the original request is missing or garbled.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Signed in, but the route table has no rule for this request.
    #[error("no rule of the route table covers {method} {path}")]
    Unlisted { method: String, path: String },
}

/// The request the proxy is asking about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalRequest {
    pub method: String,
    /// The path as the client sent it (percent-encoding kept), no query.
    pub path: String,
    pub query: Option<String>,
    /// The path's segments, percent-decoded, for matching.
    pub segments: Vec<String>,
}

impl OriginalRequest {
    /// `uri` is a path with an optional query (`X-Forwarded-Uri`) or an
    /// absolute `http(s)://host/path?query` URL (nginx's `X-Original-URL`).
    ///
    /// Paths that could be read two ways are refused rather than matched:
    /// dot segments, encoded slashes or backslashes, empty segments inside
    /// the path, control characters. The host behind the proxy might
    /// normalise them into a path other than the one the table saw.
    pub fn parse(method: &str, uri: &str) -> Result<Self, ForwardError> {
        let bad = |what: &str| ForwardError::BadRequest(format!("the original request {what}"));
        if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(bad("method is not an HTTP method in capitals"));
        }
        if uri.is_empty() || uri.len() > MAX_URI {
            return Err(bad("URI is empty or too long"));
        }
        if !uri.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("URI has spaces, control characters or raw non-ASCII"));
        }
        let relative = match uri.split_once("://") {
            Some((scheme, rest)) if scheme == "http" || scheme == "https" => {
                // A query right after the authority is refused, not read as
                // `/?...`: nginx lets `?` through in a Host header, so the
                // common `$scheme://$http_host$request_uri` would turn any
                // path into a query of `/` (which any signed-in person
                // may reach) while nginx passes the real path on.
                match rest.find(['/', '?']) {
                    Some(at) if rest.as_bytes()[at] == b'/' => &rest[at..],
                    Some(_) => return Err(bad("URL has a query but no path")),
                    None => "/",
                }
            }
            Some(_) => return Err(bad("URL is neither http nor https")),
            None => uri,
        };
        let without_fragment = relative.split('#').next().unwrap_or("");
        let (path, query) = match without_fragment.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (without_fragment, None),
        };
        if !path.starts_with('/') {
            return Err(bad("path does not start with `/`"));
        }
        let parts: Vec<&str> = path[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            if part.is_empty() && i + 1 != count {
                return Err(bad("path has an empty segment (`//`)"));
            }
            let decoded =
                percent_decode(part).ok_or_else(|| bad("path has bad percent-encoding"))?;
            if decoded == "." || decoded == ".." {
                return Err(bad("path has a `.` or `..` segment"));
            }
            if decoded.contains(['/', '\\']) || decoded.chars().any(char::is_control) {
                return Err(bad(
                    "path has an encoded slash, backslash or control character",
                ));
            }
            segments.push(decoded);
        }
        if segments.len() == 1 && segments[0].is_empty() {
            segments.clear();
        }
        Ok(Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query,
            segments,
        })
    }

    /// Path and query, to come back to after signing in.
    pub fn target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the proxy is told.
pub enum Verdict {
    /// A public route: no credentials were looked at.
    Public,
    Allowed(Box<Allowed>),
}

/// An allowed request: who, for what, and the assertion for the upstream.
pub struct Allowed {
    pub user: Arc<User>,
    pub operation: String,
    /// The agent and the caller's effective level on it, on agent routes.
    pub agent: Option<(String, Level)>,
    pub assertion: Arc<str>,
    /// The groups the person belongs to, by name (read per request, like
    /// everything the decision used).
    pub groups: Arc<Vec<String>>,
}

/// The table and the assertion cache, built at start-up.
pub struct Forward {
    pub table: RouteTable,
    assertions: Assertions,
}

impl Forward {
    pub fn new(table: RouteTable, assertion_ttl: Duration, capacity: usize) -> Self {
        Self {
            table,
            assertions: Assertions {
                ttl: assertion_ttl,
                memo: Memo::new(capacity),
            },
        }
    }

    /// Decide `request` for whoever `token` speaks for. `token` is what the
    /// request presented (`Ok(None)`: nothing). Public routes never look at
    /// it; everything else goes through the same authentication and policy
    /// as the API, so revocation, unsharing and demotion apply at once.
    pub fn decide(
        &self,
        state: &AppState,
        request: &OriginalRequest,
        token: Result<Option<String>, AuthError>,
    ) -> Result<Verdict, ForwardError> {
        let found = self.table.find(&request.method, &request.segments);
        if let Some(found) = &found {
            if found.route.rule == Rule::Public {
                return Ok(Verdict::Public);
            }
        }
        let token = token?.ok_or(AuthError::Missing)?;
        let caller = state.authenticate(&token)?;
        let Some(found) = found else {
            return Err(ForwardError::Unlisted {
                method: request.method.clone(),
                path: request.path.clone(),
            });
        };
        let operation = found.route.rule.operation().unwrap_or("host:use");
        let agent = match (&found.route.rule, found.agent) {
            (Rule::Agent(op), Some(name)) => Some(decide_on_agent(state, &caller, op, name)?),
            (Rule::Agent(_), None) => {
                return Err(DomainError::Internal("an agent rule without {agent}".into()).into())
            }
            _ => {
                state.authorize(&caller, RequestFacts::new(operation))?;
                None
            }
        };
        let assertion = self
            .assertions
            .get(state, &caller, operation, request, agent.as_ref())?;
        Ok(Verdict::Allowed(Box::new(Allowed {
            user: caller.user.clone(),
            operation: operation.to_owned(),
            agent,
            assertion,
            groups: caller.groups.clone(),
        })))
    }
}

/// Ask the policy about `operation` on the agent `name`, with the same facts
/// the API's agent routes use; the caller's effective level when allowed. An
/// agent the caller cannot see is refused exactly like a missing one.
fn decide_on_agent(
    state: &AppState,
    caller: &Caller,
    operation: &str,
    name: &str,
) -> Result<(String, Level), ForwardError> {
    let hidden = || AuthError::Denied(format!("no agent {name:?} this caller may reach"));
    let loaded = state.agent(name)?.ok_or_else(hidden)?;
    match state.authorize(
        caller,
        AppState::agent_request(operation, &loaded, &caller.user.id, 0),
    ) {
        Ok(()) => {}
        Err(AuthError::Denied(reason)) => {
            let sees = operation != "agent:read"
                && state
                    .authorize(
                        caller,
                        AppState::agent_request("agent:read", &loaded, &caller.user.id, 0),
                    )
                    .is_ok();
            return Err(if sees {
                AuthError::Denied(reason)
            } else {
                hidden()
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    let mut rank = state.caller_rank(&loaded, caller, true)?;
    if let Via::Delegation(delegation) = &caller.via {
        // A delegated token exercises at most the level it was minted with.
        rank = rank.min(delegation.level.rank());
    }
    let level = Level::from_rank(rank).ok_or_else(|| {
        DomainError::Internal(format!("{operation} allowed on {name} at rank {rank}"))
    })?;
    Ok((loaded.agent.name.clone(), level))
}

/// Who, through what, did what where: assertions are reused only for
/// exactly the same question and answer.
#[derive(Clone, PartialEq, Eq, Hash)]
struct AssertionKey {
    user: String,
    via: String,
    operation: String,
    method: String,
    path: String,
    agent: Option<(String, Level)>,
}

/// Minting signs a Biscuit on every proxied request; a fresh one is reused
/// for the first quarter of its lifetime, so the upstream always receives
/// at least three quarters of the configured lifetime.
struct Assertions {
    ttl: Duration,
    memo: Memo<AssertionKey, (Instant, Arc<str>)>,
}

impl Assertions {
    fn get(
        &self,
        state: &AppState,
        caller: &Caller,
        operation: &str,
        request: &OriginalRequest,
        agent: Option<&(String, Level)>,
    ) -> Result<Arc<str>, AuthError> {
        let via = match &caller.via {
            Via::Session(id) => format!("s:{id}"),
            Via::Delegation(d) => format!("d:{}", d.id),
            Via::ChannelBot(c) => format!("c:{c}"),
        };
        let key = AssertionKey {
            user: caller.user.id.clone(),
            via,
            operation: operation.to_owned(),
            method: request.method.clone(),
            path: request.path.clone(),
            agent: agent.cloned(),
        };
        let reuse_for = self.ttl / 4;
        if let Some((minted, token)) = self.memo.get(&key) {
            if minted.elapsed() < reuse_for {
                return Ok(token);
            }
        }
        let expires_at = now() + self.ttl.as_secs().max(1) as i64;
        let token: Arc<str> = state
            .authz
            .mint_assertion(&crate::authz::tokens::AssertionFacts {
                user: &caller.user.id,
                username: &caller.user.username,
                operation,
                method: &request.method,
                path: &request.path,
                agent: agent.map(|(name, level)| (name.as_str(), level.as_str())),
                expires_at,
            })?
            .into();
        if !reuse_for.is_zero() {
            self.memo.insert(key, (Instant::now(), token.clone()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str) -> Result<OriginalRequest, ForwardError> {
        OriginalRequest::parse("GET", uri)
    }

    #[test]
    fn paths_and_absolute_urls_parse() {
        let r = parse("/api/agents/helper/chat?x=1&y=%20").unwrap();
        assert_eq!(r.path, "/api/agents/helper/chat");
        assert_eq!(r.query.as_deref(), Some("x=1&y=%20"));
        assert_eq!(r.segments, ["api", "agents", "helper", "chat"]);
        assert_eq!(r.target(), "/api/agents/helper/chat?x=1&y=%20");
        let r = parse("https://host.example:8443/desktop/?a=b").unwrap();
        assert_eq!(r.path, "/desktop/");
        assert_eq!(r.segments, ["desktop", ""]);
        let r = parse("http://host.example").unwrap();
        assert_eq!(r.path, "/");
        assert!(r.segments.is_empty());
        let r = parse("/a%20b/c").unwrap();
        assert_eq!(r.segments, ["a b", "c"]);
    }

    #[test]
    fn ambiguous_or_garbled_requests_are_refused() {
        for uri in [
            "",
            "api/x",
            "/a/../admin",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a%2fb",
            "/a%5Cb",
            "/a//b",
            "/a b",
            "/a%zz",
            "/a%ff",
            "/a/%00",
            "ftp://host/x",
            "/\u{e9}",
            "http://host.example?q=1",
            "http://host.example?/api/admin/users",
        ] {
            assert!(parse(uri).is_err(), "{uri:?}");
        }
        assert!(OriginalRequest::parse("get", "/").is_err());
        assert!(OriginalRequest::parse("", "/").is_err());
        assert!(OriginalRequest::parse("G3T", "/").is_err());
        assert!(parse(&format!("/{}", "a".repeat(MAX_URI))).is_err());
    }
}
