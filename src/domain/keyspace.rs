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
