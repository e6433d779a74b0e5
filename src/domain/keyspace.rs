//! Every store key in one place. Keys are `<namespace>/<parts...>`; anything
//! private to a user starts with that user's id right after the namespace, so
//! a user's data is one prefix scan and never shares a key with anyone else's.

pub const META_SCHEMA_VERSION: &str = "meta/schema_version";

pub fn user(id: &str) -> String {
    format!("user/{id}")
}
pub const USER_PREFIX: &str = "user/";

/// Username (lower-cased) to user id: the uniqueness index.
pub fn username(name: &str) -> String {
    format!("uname/{name}")
}

/// Present for every admin: counting admins never scans all users.
pub fn admin(id: &str) -> String {
    format!("admin/{id}")
}
pub const ADMIN_PREFIX: &str = "admin/";

/// Present for every user who completed sign-up.
pub fn active(id: &str) -> String {
    format!("active/{id}")
}
pub const ACTIVE_PREFIX: &str = "active/";

pub fn session(id: &str) -> String {
    format!("session/{id}")
}

/// A user's sessions, so all of them can be revoked at once.
pub fn user_session(user: &str, session: &str) -> String {
    format!("usess/{user}/{session}")
}
pub fn user_sessions_prefix(user: &str) -> String {
    format!("usess/{user}/")
}

pub fn agent(name: &str) -> String {
    format!("agent/{name}")
}
pub const AGENT_PREFIX: &str = "agent/";

/// Agents by owner: listing what a user owns never scans the host.
pub fn owned(owner: &str, agent: &str) -> String {
    format!("owned/{owner}/{agent}")
}
pub fn owned_prefix(owner: &str) -> String {
    format!("owned/{owner}/")
}

/// The grants on one agent, keyed by grantee.
pub fn grant(agent: &str, grantee: &str) -> String {
    format!("grant/{agent}/{grantee}")
}
pub fn grants_prefix(agent: &str) -> String {
    format!("grant/{agent}/")
}

/// Agents by grantee: what has been shared with a user.
pub fn granted(grantee: &str, agent: &str) -> String {
    format!("granted/{grantee}/{agent}")
}
pub fn granted_prefix(grantee: &str) -> String {
    format!("granted/{grantee}/")
}

pub fn delegation(id: &str) -> String {
    format!("deleg/{id}")
}
pub fn user_delegation(issuer: &str, id: &str) -> String {
    format!("udeleg/{issuer}/{id}")
}
pub fn user_delegations_prefix(issuer: &str) -> String {
    format!("udeleg/{issuer}/")
}
pub fn agent_delegation(agent: &str, id: &str) -> String {
    format!("adeleg/{agent}/{id}")
}
pub fn agent_delegations_prefix(agent: &str) -> String {
    format!("adeleg/{agent}/")
}
pub const DELEGATION_PREFIX: &str = "deleg/";

/// Audit events in time order; `uaudit/` indexes them by every user they
/// concern.
pub fn audit(id: &str) -> String {
    format!("audit/{id}")
}
pub const AUDIT_PREFIX: &str = "audit/";
pub fn user_audit(user: &str, id: &str) -> String {
    format!("uaudit/{user}/{id}")
}
pub fn user_audit_prefix(user: &str) -> String {
    format!("uaudit/{user}/")
}
