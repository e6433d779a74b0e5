//! The OpenAPI 3.1 description of every route tessera serves, built from the
//! inventory below and served at `/openapi.json`, with a page for people at
//! `/docs` (rendered here, nothing from another origin).
//!
//! The inventory is code beside the routers rather than annotations on each
//! handler: one table is easier to keep whole than ninety attributes, and
//! the integration test `openapi` holds it to the routers (every `.route(...)`
//! in `src/http` and `src/web`, method by method, in both directions) and to
//! the committed copy `docs/openapi.json`, so neither can drift unnoticed.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use askama::Template;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(served_document))
        .route("/docs", get(reference_page))
}

/// Who may call a route, which decides its `security` requirement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No credentials needed.
    Anyone,
    /// A token of some kind (cookie or bearer); the text says which.
    Caller,
    /// Credentials when there are any (forward auth: public host paths need none).
    Optional,
}

/// What a route answers with on success.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Json,
    /// An HTML page (the console).
    Page,
    /// A `303` to another page.
    Redirect,
    /// A file (the backup) or another non-JSON body.
    Bytes(&'static str),
}

/// One method on one path.
struct Op {
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// Who may call it and what it needs, in words (the policy decides).
    needs: &'static str,
    who: Who,
    body: Option<Value>,
    answer: Answer,
    /// The success answer's schema (JSON answers).
    ok: Value,
    /// Query parameters: name, schema, description.
    query: Vec<(&'static str, Value, &'static str)>,
    /// Error statuses worth naming beyond the ones every call may get.
    errors: &'static [u16],
    /// Headers of the success answer: name and meaning.
    headers: &'static [(&'static str, &'static str)],
}

/// What an allowed forward-auth answer tells the proxy and the upstream.
const FORWARD_HEADERS: &[(&str, &str)] = &[
    ("Remote-User", "the username"),
    (
        "Remote-Name",
        "the full name (percent-encoded beyond printable ASCII)",
    ),
    ("Remote-Email", "the email"),
    ("Remote-Groups", "`users`, or `users,admins` for admins, then the name of each group the person belongs to, comma-separated"),
    ("X-Auth-Request-User", "the username"),
    ("X-Auth-Request-Email", "the email"),
    ("X-Auth-Request-Groups", "as Remote-Groups"),
    ("X-Forwarded-User", "the username"),
    ("X-Forwarded-Email", "the email"),
    ("X-Tessera-User-Id", "the user's id"),
    ("X-Tessera-Operation", "the operation the route table named"),
    ("X-Tessera-Agent", "on agent routes: the agent"),
    ("X-Tessera-Access", "on agent routes: the caller's level"),
    (
        "X-Tessera-Assertion",
        "a short-lived Biscuit for this operation and resource, verifiable offline with /auth/keys",
    ),
];

fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    Op {
        method,
        path,
        tag,
        summary,
        needs: "",
        who: Who::Caller,
        body: None,
        answer: Answer::Json,
        ok: json!({"type": "object"}),
        query: Vec::new(),
        errors: &[],
        headers: &[],
    }
}

impl Op {
    fn anyone(mut self) -> Self {
        self.who = Who::Anyone;
        self
    }
    fn who(mut self, who: Who) -> Self {
        self.who = who;
        self
    }
    fn needs(mut self, needs: &'static str) -> Self {
        self.needs = needs;
        self
    }
    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
    fn ok(mut self, schema: Value) -> Self {
        self.ok = schema;
        self
    }
    fn answer(mut self, answer: Answer) -> Self {
        self.answer = answer;
        self
    }
    fn query(mut self, name: &'static str, schema: Value, about: &'static str) -> Self {
        self.query.push((name, schema, about));
        self
    }
    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
    fn headers(mut self, headers: &'static [(&'static str, &'static str)]) -> Self {
        self.headers = headers;
        self
    }
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn integer() -> Value {
    json!({"type": "integer"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn list_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// An object with `required` and optional (`?`-suffixed) properties.
fn object(properties: &[(&str, Value)]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, schema) in properties {
        match name.strip_suffix('?') {
            Some(optional) => {
                props.insert(optional.to_owned(), schema.clone());
            }
            None => {
                props.insert((*name).to_owned(), schema.clone());
                required.push(Value::from(*name));
            }
        }
    }
    let mut out = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        out["required"] = Value::Array(required);
    }
    out
}

fn level() -> Value {
    schema_ref("Level")
}

fn ok_flag() -> Value {
    object(&[("ok", boolean())])
}

fn status(value: &str) -> Value {
    object(&[("status", json!({"const": value})), ("name?", string())])
}

/// A console form: its fields are strings, with the form token.
fn form(fields: &[&str]) -> Value {
    let mut all: Vec<(&str, Value)> = vec![("csrf_token", string())];
    all.extend(fields.iter().map(|f| (*f, string())));
    object(&all)
}

fn page(method: &'static str, path: &'static str, summary: &'static str) -> Op {
    let answer = if method == "GET" {
        Answer::Page
    } else {
        Answer::Redirect
    };
    op(method, path, "console", summary).answer(answer).needs(
        "a signed-in person (browsers are sent to sign in); what a page offers follows the policy",
    )
}

fn inventory() -> Vec<Op> {
    let user = schema_ref("User");
    let agent = schema_ref("Agent");
    let session_answer = object(&[
        ("ok", boolean()),
        ("user", user.clone()),
        ("token", string()),
        ("needs_onboarding?", boolean()),
    ]);
    let credentials = object(&[
        ("username", string()),
        ("password", string()),
        ("auto_login?", boolean()),
    ]);
    let chunk = schema_ref("Chunk");
    let mut ops = vec![
        // Health.
        op("GET", "/health", "health", "The process is up")
            .anyone()
            .ok(object(&[("status", json!({"const": "ok"}))])),
        op(
            "GET",
            "/ready",
            "health",
            "The store answers: safe to send traffic",
        )
        .anyone()
        .ok(object(&[
            ("status", json!({"const": "ready"})),
            ("store?", json!({"const": "postgres"})),
        ]))
        .errors(&[503]),
        op(
            "GET",
            "/metrics",
            "health",
            "Prometheus metrics (only with --metrics and no --metrics-listen)",
        )
        .anyone()
        .answer(Answer::Bytes("text/plain")),
        op("GET", "/openapi.json", "health", "This document")
            .anyone()
            .ok(json!({"type": "object", "description": "an OpenAPI 3.1 document"})),
        op(
            "GET",
            "/docs",
            "health",
            "This document, as a page for people",
        )
        .anyone()
        .answer(Answer::Page),
        // Signing in and accounts.
        op(
            "GET",
            "/auth/status",
            "auth",
            "Whether tessera is set up and who the caller is",
        )
        .anyone()
        .ok(object(&[
            ("configured", boolean()),
            ("authenticated", boolean()),
            ("user", json!({"oneOf": [user.clone(), {"type": "null"}]})),
            ("multi_user", boolean()),
            ("needs_onboarding", boolean()),
        ])),
        op(
            "POST",
            "/auth/setup",
            "auth",
            "First run: create the first account (an admin)",
        )
        .anyone()
        .needs("only while no user exists (409 after); JSON or the first-run form")
        .body(object(&[
            ("username", string()),
            ("password", string()),
            ("full_name?", string()),
            ("email?", string()),
            ("auto_login?", boolean()),
        ]))
        .ok(session_answer.clone())
        .errors(&[409, 429]),
        op(
            "POST",
            "/auth/login",
            "auth",
            "Sign in; an invite code as the password starts onboarding",
        )
        .anyone()
        .needs("JSON, or the sign-in form (with `next` and the form token; answered with 303)")
        .body(credentials.clone())
        .ok(json!({"oneOf": [
            session_answer.clone(),
            // An account with a second factor: a halfway session that can
            // only finish with POST /auth/second-factor or sign out.
            object(&[
                ("ok", boolean()),
                ("needs_second_factor", boolean()),
                ("factors", list_of(string())),
                ("token", string()),
            ]),
            // A second factor is required and the person has none: a
            // session that can only enrol (or sign out).
            object(&[
                ("ok", boolean()),
                ("needs_enrolment", boolean()),
                ("user", user.clone()),
                ("token", string()),
            ]),
        ]}))
        .errors(&[401, 429]),
        op(
            "POST",
            "/auth/second-factor",
            "auth",
            "The second sign-in step, or a step-up: a TOTP or recovery code, or a passkey's answer",
        )
        .needs("a session halfway through signing in (answered with the full session, as login answers), or a signed-in one (step-up: the session counts as having just verified a factor); wrong codes and passkey answers count toward the login limits. The second-step page posts a form instead, answered with 303s")
        .body(json!({"oneOf": [
            object(&[("code", string())]),
            object(&[
                ("ceremony", string()),
                ("credential", json!({"type": "object", "description": "the PublicKeyCredential from navigator.credentials.get() for the ceremony of POST /auth/second-factor/passkey/start"})),
            ]),
        ]}))
        .ok(json!({"oneOf": [
            session_answer.clone(),
            object(&[("ok", boolean()), ("factor_verified_at", integer())]),
        ]}))
        .errors(&[401, 429]),
        op("GET", "/auth/factors", "auth", "One's second factors")
            .needs("the person, at their own session")
            .ok(object(&[
                ("factors", list_of(json!({"type": "object"}))),
                ("required", string()),
            ])),
        op(
            "POST",
            "/auth/factors/totp",
            "auth",
            "Start TOTP enrolment: the secret (base32) and its otpauth:// URL",
        )
        .needs("the person, at their own session (a step-up when they already have a factor)")
        .ok(object(&[("secret", string()), ("otpauth_url", string())]))
        .errors(&[409]),
        op(
            "POST",
            "/auth/factors/totp/confirm",
            "auth",
            "Confirm TOTP enrolment with a first code: ten recovery codes, shown only here",
        )
        .needs("the person, at their own session; wrong codes count toward the login limits")
        .body(object(&[("code", string())]))
        .ok(object(&[
            ("ok", boolean()),
            ("recovery_codes", list_of(string())),
        ]))
        .errors(&[401, 429]),
        op(
            "POST",
            "/auth/factors/passkey/start",
            "auth",
            "Start registering a passkey: a ceremony id and the options for navigator.credentials.create()",
        )
        .needs("the person, at their own session (a step-up when they already have a factor)")
        .ok(object(&[
            ("ceremony", string()),
            ("publicKey", json!({"type": "object"})),
        ]))
        .errors(&[409]),
        op(
            "POST",
            "/auth/factors/passkey/finish",
            "auth",
            "Finish registering a passkey with the browser's answer (the session counts as having just verified a factor); ten recovery codes, shown only here, when the person had none",
        )
        .needs("the person, at the session that started the ceremony (single use, 5 minutes); an answer made for another origin is refused")
        .body(object(&[
            ("ceremony", string()),
            ("name?", string()),
            ("credential", json!({"type": "object", "description": "the PublicKeyCredential from navigator.credentials.create(), binary fields base64url"})),
        ]))
        .ok(object(&[
            ("ok", boolean()),
            ("id", string()),
            ("name", string()),
            ("created_at", integer()),
            // Ten, shown only here, when the person had no recovery codes.
            ("recovery_codes?", list_of(string())),
        ]))
        .errors(&[409]),
        op(
            "POST",
            "/auth/passkey/start",
            "auth",
            "Start signing in with a passkey alone: a ceremony id and the options for navigator.credentials.get()",
        )
        .anyone()
        .ok(object(&[
            ("ceremony", string()),
            ("publicKey", json!({"type": "object"})),
        ])),
        op(
            "POST",
            "/auth/passkey/finish",
            "auth",
            "Finish signing in with a passkey: the full session, as login answers",
        )
        .anyone()
        .needs("a discoverable passkey registered here, from this server's origin (--public-url); failures count toward the login limits")
        .body(object(&[
            ("ceremony", string()),
            ("credential", json!({"type": "object", "description": "the PublicKeyCredential from navigator.credentials.get(), binary fields base64url"})),
            ("auto_login?", boolean()),
        ]))
        .ok(session_answer.clone())
        .errors(&[401, 429]),
        op(
            "POST",
            "/auth/second-factor/passkey/start",
            "auth",
            "Start the second step or a step-up with a passkey; the answer goes to POST /auth/second-factor",
        )
        .needs("a session halfway through signing in, or a signed-in one, of a person with a passkey")
        .ok(object(&[
            ("ceremony", string()),
            ("publicKey", json!({"type": "object"})),
        ])),
        op(
            "DELETE",
            "/auth/factors/{id}",
            "auth",
            "Remove a second factor: a TOTP factor or a passkey by id, `recovery` for the recovery codes",
        )
        .needs("the person, with a second factor verified in the last 15 minutes (step-up)")
        .ok(ok_flag()),
        op(
            "GET",
            "/auth/settings/second-factor",
            "accounts",
            "Who must have a second factor",
        )
        .needs("admin")
        .ok(object(&[("required", string())])),
        op(
            "POST",
            "/auth/settings/second-factor",
            "accounts",
            "Set who must have a second factor: nobody, admins or everyone",
        )
        .needs("admin, with a recent second factor if they have one (step-up)")
        .body(object(&[("required", string())]))
        .ok(object(&[("ok", boolean()), ("required", string())])),
        op(
            "POST",
            "/auth/complete",
            "auth",
            "Finish an invitation: set the password and profile",
        )
        .anyone()
        .needs("the invite code, or the onboarding page's invite-phase session")
        .body(object(&[
            ("username", string()),
            ("invite_code", string()),
            ("password", string()),
            ("full_name?", string()),
            ("email?", string()),
            ("auto_login?", boolean()),
        ]))
        .ok(session_answer)
        .errors(&[401, 429]),
        op(
            "POST",
            "/auth/logout",
            "auth",
            "End this session (303 to the sign-in page)",
        )
        .answer(Answer::Redirect),
        op("POST", "/auth/lock", "auth", "End this session").ok(ok_flag()),
        op("GET", "/auth/me", "auth", "The caller").ok(object(&[("user", user.clone())])),
        op(
            "GET",
            "/auth/keys",
            "auth",
            "The public keys tokens are signed with, to verify them offline",
        )
        .anyone()
        .ok(object(&[("keys", list_of(schema_ref("PublicKey")))])),
        op(
            "GET",
            "/auth/verify",
            "forward-auth",
            "Forward auth for Caddy and Traefik: may the caller make the original request (X-Forwarded-Method, -Uri, -Host, -Proto)? A browser without credentials gets 302 to sign-in",
        )
        .who(Who::Optional)
        .needs("the route table's rule for the original method and path, decided by the policy")
        .headers(FORWARD_HEADERS)
        .ok(json!({"type": "object"})),
        op(
            "GET",
            "/auth/verify/nginx",
            "forward-auth",
            "Forward auth for nginx auth_request (X-Original-Method, X-Original-URL); refusals are 401 with a Location for error_page",
        )
        .who(Who::Optional)
        .needs("the route table's rule for the original method and path, decided by the policy")
        .headers(FORWARD_HEADERS)
        .ok(json!({"type": "object"})),
        op("GET", "/auth/users", "accounts", "Every account")
            .needs("admin")
            .ok(object(&[("users", list_of(user.clone()))])),
        op(
            "POST",
            "/auth/users",
            "accounts",
            "Invite a person: the 8-digit code is shown only here",
        )
        .needs("admin")
        .body(object(&[("username", string())]))
        .ok(object(&[
            ("ok", boolean()),
            ("username", string()),
            ("invite_code", string()),
        ]))
        .errors(&[409]),
        op(
            "DELETE",
            "/auth/users/{username}",
            "accounts",
            "Delete an account, with its private data",
        )
        .needs("admin, not yourself; a user who owns agents needs `agents`")
        .query(
            "agents",
            string(),
            "what becomes of their agents: `transfer:<username>` or `delete`",
        )
        .ok(ok_flag())
        .errors(&[409]),
        op(
            "POST",
            "/auth/users/{username}/reset",
            "accounts",
            "Reset a password: a new code, every session ended",
        )
        .needs("admin")
        .ok(object(&[("ok", boolean()), ("invite_code", string())])),
        op(
            "POST",
            "/auth/users/{username}/admin",
            "accounts",
            "Promote or demote",
        )
        .needs("admin; never removes the last admin")
        .body(object(&[("is_admin", boolean())]))
        .ok(object(&[("ok", boolean()), ("user", user.clone())]))
        .errors(&[409]),
        op(
            "GET",
            "/auth/users/{username}/sessions",
            "accounts",
            "Live sessions, newest first",
        )
        .needs("that user, or an admin")
        .ok(object(&[("sessions", list_of(schema_ref("Session")))])),
        op(
            "DELETE",
            "/auth/users/{username}/sessions",
            "accounts",
            "End every session of a user",
        )
        .needs("admin, or that user")
        .ok(object(&[("ok", boolean()), ("revoked", integer())])),
        op(
            "POST",
            "/auth/users/{username}/profile",
            "accounts",
            "Change the profile",
        )
        .needs("that user")
        .body(object(&[("full_name?", string()), ("email?", string())]))
        .ok(object(&[("ok", boolean()), ("user", user.clone())])),
        op(
            "POST",
            "/auth/users/{username}/password",
            "accounts",
            "Change the password; other sessions end",
        )
        .needs("that user, with the current password")
        .body(object(&[("current", string()), ("new", string())]))
        .ok(ok_flag())
        .errors(&[401, 429]),
        op(
            "POST",
            "/api/admin/backup",
            "accounts",
            "Download a backup (it holds the keys)",
        )
        .needs("an admin at their own session, with their password in the request")
        .body(object(&[("password", string())]))
        .answer(Answer::Bytes("application/octet-stream"))
        .errors(&[401, 429]),
        // Agents.
        op(
            "GET",
            "/api/agents",
            "agents",
            "The agents the caller may view",
        )
        .needs(
            "signed in; a delegated token lists its own agent; bot and runtime tokens are refused",
        )
        .query("min_level", level(), "only agents where my level is at least this")
        .query("limit", integer(), "page size, 1 to 200 (without it: everything)")
        .query("cursor", string(), "from the previous page's `Link: <...>; rel=\"next\"`")
        .headers(&[("Link", "the next page, when there is one: `<...>; rel=\"next\"`")])
        .ok(list_of(agent.clone())),
        op(
            "GET",
            "/api/agents/{name}/access",
            "agents",
            "Who can reach this agent: each person's level and the chain it comes through",
        )
        .needs("share, or admin")
        .query("limit", integer(), "page size, 1 to 200")
        .query("cursor", string(), "from the previous page's `Link` header")
        .headers(&[("Link", "the next page, when there is one: `<...>; rel=\"next\"`")])
        .ok(object(&[("access", list_of(schema_ref("Access")))])),
        op(
            "POST",
            "/api/check",
            "agents",
            "Ask up to 100 questions \"may I?\" for the caller's token, answered in order as the routes would decide, with no side effects",
        )
        .needs("any token, within what it is allowed")
        .body(object(&[(
            "checks",
            json!({"type": "array", "minItems": 1, "maxItems": 100, "items": object(&[
                ("operation", string()),
                ("agent?", string()),
                ("level?", level()),
                ("user?", string()),
            ])}),
        )]))
        .ok(object(&[(
            "results",
            list_of(object(&[
                ("allowed", boolean()),
                ("reason", json!({"type": ["string", "null"]})),
            ])),
        )])),
        op("POST", "/api/agents", "agents", "Create an agent")
            .needs("signed in; `owner` set: admin")
            .body(json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "owner": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": true
            }))
            .ok(object(&[
                ("status", json!({"const": "created"})),
                ("name", string()),
                ("display_name", string()),
                ("agent", agent.clone()),
            ]))
            .errors(&[409]),
        op("GET", "/api/agents/{name}", "agents", "One agent")
            .needs("view")
            .ok(agent.clone()),
        op(
            "PUT",
            "/api/agents/{name}",
            "agents",
            "Change fields (`null` removes one)",
        )
        .needs("edit")
        .body(json!({"type": "object", "additionalProperties": true}))
        .ok(agent.clone()),
        op(
            "DELETE",
            "/api/agents/{name}",
            "agents",
            "Delete an agent with its grants and tokens",
        )
        .needs("owner")
        .ok(status("deleted")),
        op(
            "POST",
            "/api/agents/{name}/archive",
            "agents",
            "Freeze an agent",
        )
        .needs("manage")
        .ok(status("archived")),
        op(
            "POST",
            "/api/agents/{name}/restore",
            "agents",
            "Unfreeze an agent",
        )
        .needs("manage")
        .ok(status("restored")),
        op(
            "POST",
            "/api/agents/{name}/transfer",
            "agents",
            "Give an agent to another person",
        )
        .needs("owner or admin")
        .body(object(&[("to", string())]))
        .ok(object(&[
            ("status", json!({"const": "transferred"})),
            ("name", string()),
            ("owner", schema_ref("Principal")),
        ])),
        op(
            "GET",
            "/api/agents/{name}/shares",
            "agents",
            "Who the agent is shared with",
        )
        .needs("share, or admin")
        .ok(object(&[("shares", list_of(schema_ref("Share")))])),
        op(
            "POST",
            "/api/agents/{name}/shares",
            "agents",
            "Share at a level, or change a share's level",
        )
        .needs("share, at most your own level; or admin. A grant belongs to its grantor. Everyone: at most `use` (the policy's cap)")
        .body(json!({
            "type": "object",
            "description": "one grantee: `user` (a username), `group` (a group's name, one you see) or `everyone: true` (every account, present and future); `expires_at` (unix seconds, in the future) ends what it confers, without removing it",
            "properties": {
                "user": {"type": "string"},
                "group": {"type": "string"},
                "everyone": {"const": true},
                "level": {"$ref": "#/components/schemas/Level"},
                "expires_at": {"type": "integer"}
            },
            "required": ["level"],
            "oneOf": [
                {"required": ["user"]},
                {"required": ["group"]},
                {"required": ["everyone"]}
            ]
        }))
        .ok(object(&[("ok", boolean()), ("share", schema_ref("Share"))]))
        .errors(&[409]),
        op(
            "DELETE",
            "/api/agents/{name}/shares/{grantee}",
            "agents",
            "Revoke a share, or leave: `{grantee}` is a username (or `user:<username>`), `group:<name>` or `everyone`",
        )
        .needs(
            "the grantor or anyone their authority draws on, the owner, an admin, or the grantee (a person; members leave a group instead)",
        )
        .ok(ok_flag())
        .errors(&[409]),
        op(
            "POST",
            "/api/agents/{name}/runtime-token",
            "agents",
            "Mint (rotate) the agent's runtime token",
        )
        .needs("the owner, at their own session")
        .ok(object(&[
            ("agent", string()),
            ("id", string()),
            ("token", string()),
            ("expires_at", integer()),
        ])),
        op(
            "DELETE",
            "/api/agents/{name}/runtime-token",
            "agents",
            "End the agent's runtime token",
        )
        .needs("manage, or admin")
        .ok(ok_flag()),
        op(
            "PUT",
            "/api/agents/{name}/permissions",
            "memory",
            "The legacy memory flag: your own memory grant",
        )
        .needs("signed in, seeing the agent")
        .body(object(&[("can_read_user_memory", boolean())]))
        .ok(ok_flag()),
        // Groups.
        op("GET", "/api/groups", "groups", "Your groups (owned or joined); admins: all")
            .needs("signed in, at your own session")
            .ok(object(&[("groups", list_of(schema_ref("Group")))])),
        op("POST", "/api/groups", "groups", "Create a group; you own it and are its first member")
            .needs("admin, or anyone unless the operator turned that off (--no-user-groups)")
            .body(object(&[("name", string()), ("display_name?", string())]))
            .ok(object(&[("ok", boolean()), ("group", schema_ref("Group"))]))
            .errors(&[409]),
        op("GET", "/api/groups/{name}", "groups", "A group with its members")
            .needs("a member, the owner or an admin")
            .ok(schema_ref("Group")),
        op(
            "DELETE",
            "/api/groups/{name}",
            "groups",
            "Delete a group with its memberships and every share with it",
        )
        .needs("the owner or an admin")
        .ok(object(&[("ok", boolean()), ("status", json!({"const": "deleted"})), ("name", string())])),
        op(
            "PUT",
            "/api/groups/{name}/members/{username}",
            "groups",
            "Add a member (again: no change)",
        )
        .needs("the owner or an admin")
        .ok(object(&[("ok", boolean()), ("added", boolean())])),
        op(
            "DELETE",
            "/api/groups/{name}/members/{username}",
            "groups",
            "Remove a member, or leave; their access through the group ends at once",
        )
        .needs("the owner or an admin; a member for themselves")
        .ok(ok_flag()),
        // Delegated tokens and the audit log.
        op(
            "GET",
            "/api/tokens",
            "tokens",
            "Delegated token records (never the token strings)",
        )
        .needs("signed in (admins: all)")
        .ok(object(&[("tokens", list_of(schema_ref("TokenRecord")))])),
        op(
            "POST",
            "/api/tokens",
            "tokens",
            "Mint a delegated token for one agent, at most your level",
        )
        .needs("manage on the agent, at your own session")
        .body(object(&[
            ("agent", string()),
            ("level", level()),
            ("expires_in", integer()),
            ("label?", string()),
        ]))
        .ok(json!({"allOf": [schema_ref("TokenRecord"), object(&[("token", string())])]})),
        op(
            "DELETE",
            "/api/tokens/{id}",
            "tokens",
            "Revoke a delegated token",
        )
        .needs("its issuer, or an admin")
        .ok(ok_flag()),
        op(
            "POST",
            "/api/tokens/inspect",
            "tokens",
            "Read any token: blocks, kind, issuer, validity",
        )
        .needs("signed in")
        .body(object(&[("token", string())]))
        .ok(object(&[
            ("signature_valid", boolean()),
            ("valid", boolean()),
            ("reason?", string()),
            ("kind?", string()),
            ("issuer?", string()),
            ("agent?", string()),
            ("level?", string()),
            ("expires_at?", integer()),
            ("blocks", list_of(string())),
        ])),
        op("GET", "/api/audit", "audit", "The audit log, newest first")
            .needs("signed in (admins: everything)")
            .query("limit", integer(), "at most this many events")
            .query("after", string(), "the last event id of the previous page")
            .ok(object(&[("events", list_of(schema_ref("AuditEvent")))])),
        // Private data: memory.
        op(
            "GET",
            "/api/user-memory/stats",
            "memory",
            "How much memory I have",
        )
        .ok(object(&[
            ("total_chunks", integer()),
            ("collections", integer()),
        ])),
        op(
            "GET",
            "/api/user-memory/settings",
            "memory",
            "My memory settings",
        )
        .ok(json!({"type": "object"})),
        op(
            "PUT",
            "/api/user-memory/settings",
            "memory",
            "Replace my memory settings",
        )
        .body(json!({"type": "object"}))
        .ok(ok_flag()),
        op(
            "GET",
            "/api/user-memory/search",
            "memory",
            "Ranked term search over my memory",
        )
        .query("q", string(), "the words to look for")
        .query("limit", integer(), "at most this many results")
        .ok(object(&[
            ("results", list_of(chunk.clone())),
            ("query", string()),
        ])),
        op(
            "GET",
            "/api/user-memory/browse",
            "memory",
            "My chunks, newest first",
        )
        .query("collection", string(), "only this collection")
        .query("limit", integer(), "at most this many")
        .ok(object(&[("chunks", list_of(chunk.clone()))])),
        op("POST", "/api/user-memory/save", "memory", "Save a chunk")
            .body(object(&[
                ("content", string()),
                ("title?", string()),
                ("collection?", string()),
                ("metadata?", json!({"type": "object"})),
            ]))
            .ok(object(&[("ok", boolean()), ("hash", string())])),
        op(
            "GET",
            "/api/user-memory/chunk/{hash}",
            "memory",
            "One of my chunks",
        )
        .ok(chunk.clone()),
        op(
            "DELETE",
            "/api/user-memory/chunk/{hash}",
            "memory",
            "Delete one of my chunks",
        )
        .ok(ok_flag()),
        op(
            "GET",
            "/api/user-memory/collections",
            "memory",
            "My collections",
        )
        .ok(object(&[(
            "collections",
            list_of(object(&[("name", string()), ("count", integer())])),
        )])),
        op(
            "GET",
            "/api/user-memory/grants",
            "memory",
            "The agents that may read my memory",
        )
        .ok(object(&[("grants", list_of(string()))])),
        op(
            "PUT",
            "/api/user-memory/grants/{agent}",
            "memory",
            "Let an agent read my memory, or stop it",
        )
        .body(object(&[("allowed", boolean())]))
        .ok(object(&[
            ("ok", boolean()),
            ("agent", string()),
            ("allowed", boolean()),
        ])),
        op(
            "GET",
            "/api/user-memory/agent-search",
            "memory",
            "An agent searches the memory of a user who granted it",
        )
        .needs("the agent's runtime token")
        .query("user", string(), "whose memory")
        .query("q", string(), "the words to look for")
        .ok(object(&[
            ("results", list_of(chunk)),
            ("query", string()),
            ("agent", string()),
        ])),
        // Private data: chat.
        op("GET", "/api/chat/channels", "chat", "My conversations")
            .ok(object(&[("channels", list_of(schema_ref("Conversation")))])),
        op(
            "POST",
            "/api/chat/channels",
            "chat",
            "Start a conversation (with an agent: needs use)",
        )
        .body(object(&[
            ("agent?", string()),
            ("agents?", list_of(string())),
            ("name?", string()),
            ("type?", json!({"enum": ["dm", "topic"]})),
        ]))
        .ok(schema_ref("Conversation")),
        op(
            "GET",
            "/api/chat/messages",
            "chat",
            "A conversation's messages",
        )
        .needs("a member of the conversation (a bot: its own channel's)")
        .query("channel_id", string(), "the conversation")
        .ok(object(&[("messages", list_of(schema_ref("Message")))])),
        op(
            "POST",
            "/api/chat/messages",
            "chat",
            "Post a message, under its real author",
        )
        .needs("a member of the conversation (a bot: its own channel's)")
        .body(object(&[("channel_id", string()), ("content", string())]))
        .ok(schema_ref("Message")),
        op(
            "PATCH",
            "/api/chat/messages/{id}",
            "chat",
            "Edit my message",
        )
        .needs("its author")
        .body(object(&[("content", string())]))
        .ok(schema_ref("Message")),
        op(
            "DELETE",
            "/api/chat/messages/{id}",
            "chat",
            "Delete my message",
        )
        .needs("its author")
        .ok(ok_flag()),
        op(
            "GET",
            "/api/chat/unread",
            "chat",
            "Unread counts per conversation",
        )
        .ok(object(&[(
            "unread",
            json!({"type": "object", "additionalProperties": {"type": "integer"}}),
        )])),
        op(
            "POST",
            "/api/chat/mark-read",
            "chat",
            "Mark a conversation read",
        )
        .body(object(&[
            ("channel_id", string()),
            ("message_id?", string()),
        ]))
        .ok(object(&[("status", json!({"const": "marked"}))])),
        // Private data: secrets and channels.
        op("GET", "/api/secrets", "secrets", "My secrets, masked")
            .ok(object(&[("secrets", list_of(schema_ref("Secret")))])),
        op(
            "POST",
            "/api/secrets",
            "secrets",
            "Add a secret (binding needs manage on each agent)",
        )
        .body(object(&[
            ("name", string()),
            ("value", string()),
            ("category?", string()),
            ("description?", string()),
            ("agents?", list_of(string())),
        ]))
        .ok(object(&[
            ("id", string()),
            ("status", json!({"const": "created"})),
        ]))
        .errors(&[409]),
        op(
            "GET",
            "/api/secrets/{name}",
            "secrets",
            "Reveal one of my secrets",
        )
        .needs("its owner")
        .ok(json!({"allOf": [schema_ref("Secret"), object(&[("value", string())])]})),
        op(
            "PUT",
            "/api/secrets/{name}",
            "secrets",
            "Change a secret or its bindings",
        )
        .body(object(&[
            ("value?", string()),
            ("category?", string()),
            ("description?", string()),
            ("agents?", list_of(string())),
        ]))
        .ok(object(&[("status", string())])),
        op(
            "DELETE",
            "/api/secrets/{name}",
            "secrets",
            "Delete a secret",
        )
        .ok(object(&[("status", string())])),
        op(
            "GET",
            "/api/secrets/agent/{agent}",
            "secrets",
            "The secrets bound to an agent, in plaintext",
        )
        .needs("that agent's runtime token, while its owner holds manage")
        .ok(object(&[("secrets", list_of(schema_ref("Secret")))])),
        op("GET", "/api/channels", "channels", "My channels")
            .ok(object(&[("channels", list_of(schema_ref("Channel")))])),
        op(
            "POST",
            "/api/channels",
            "channels",
            "Add a channel: its bot token is shown only here",
        )
        .needs("manage on the agent; `*_secret` config values name your secrets")
        .body(object(&[
            ("agent_name", string()),
            ("type", schema_ref("ChannelType")),
            ("config", json!({"type": "object"})),
        ]))
        .ok(json!({"allOf": [schema_ref("Channel"), object(&[
            ("status", json!({"const": "added"})),
            ("token", string()),
            ("conversation_id", string()),
        ])]})),
        op(
            "POST",
            "/api/channels/{id}/toggle",
            "channels",
            "Switch a channel on or off",
        )
        .ok(object(&[
            ("status", json!({"const": "toggled"})),
            ("enabled", boolean()),
        ])),
        op(
            "DELETE",
            "/api/channels/{id}",
            "channels",
            "Delete a channel (its bot token dies)",
        )
        .ok(object(&[("status", json!({"const": "deleted"}))])),
    ];
    ops.extend(pages());
    ops
}

/// The console and sign-in pages: HTML forms, posted with the form token.
fn pages() -> Vec<Op> {
    let signed_out = |method, path, summary| {
        let mut p = page(method, path, summary).anyone();
        p.tag = "pages";
        p.needs = "";
        p
    };
    vec![
        signed_out("GET", "/", "To the sign-in page, or the person's home"),
        signed_out("GET", "/static/style.css", "The pages' stylesheet")
            .answer(Answer::Bytes("text/css")),
        signed_out(
            "GET",
            "/static/app.js",
            "The pages' one script (copy buttons, prompts, passkeys)",
        )
        .answer(Answer::Bytes("text/javascript")),
        signed_out("GET", "/auth/login", "The sign-in page")
            .query("next", string(), "a same-site path to return to")
            .query("error", string(), "`1` after a failed sign-in"),
        signed_out(
            "GET",
            "/auth/setup",
            "The first-run page (only while no user exists)",
        ),
        signed_out("GET", "/auth/onboarding", "Finishing an invitation"),
        signed_out(
            "GET",
            "/auth/second-factor",
            "The second sign-in step (a session halfway through signing in)",
        ),
        page("GET", "/console", "My agents").query("q", string(), "filter by name"),
        page("GET", "/console/agents", "(to /console)"),
        page("POST", "/console/agents", "Create an agent").body(form(&[
            "name",
            "display_name",
            "owner",
        ])),
        page(
            "GET",
            "/console/agents/{name}",
            "One agent: fields, shares, tokens, channels",
        ),
        page("GET", "/console/agents/{name}/edit", "(to the agent)"),
        page("POST", "/console/agents/{name}/edit", "Save fields").body(form(&[
            "new_key",
            "new_value",
            "remove",
        ])),
        page("GET", "/console/agents/{name}/archive", "(to the agent)"),
        page("POST", "/console/agents/{name}/archive", "Archive").body(form(&[])),
        page("GET", "/console/agents/{name}/restore", "(to the agent)"),
        page("POST", "/console/agents/{name}/restore", "Restore").body(form(&[])),
        page("GET", "/console/agents/{name}/transfer", "(to the agent)"),
        page("POST", "/console/agents/{name}/transfer", "Transfer").body(form(&["to"])),
        page("GET", "/console/agents/{name}/delete", "(to the agent)"),
        page("POST", "/console/agents/{name}/delete", "Delete").body(form(&["confirm"])),
        page("GET", "/console/agents/{name}/leave", "(to the agent)"),
        page("POST", "/console/agents/{name}/leave", "Give up a share").body(form(&[])),
        page("GET", "/console/groups", "My groups (all, for admins)"),
        page("POST", "/console/groups", "Create a group")
            .body(form(&["name", "display_name"])),
        page("GET", "/console/groups/{name}", "A group: its members and what is shared with it"),
        page("GET", "/console/groups/{name}/members", "(to the group)"),
        page("POST", "/console/groups/{name}/members", "Add a member").body(form(&["user"])),
        page(
            "GET",
            "/console/groups/{name}/members/{user}/delete",
            "(to the group)",
        ),
        page(
            "POST",
            "/console/groups/{name}/members/{user}/delete",
            "Remove a member, or leave",
        )
        .body(form(&[])),
        page("GET", "/console/groups/{name}/delete", "(to the group)"),
        page("POST", "/console/groups/{name}/delete", "Delete the group")
            .body(form(&[])),
        page("GET", "/console/agents/{name}/shares", "(to the agent)"),
        page("POST", "/console/agents/{name}/shares", "Share with a username, `group:<name>` or `everyone`, until removed or `expires_in` seconds from now")
            .body(form(&["user", "level", "expires_in"])),
        page(
            "GET",
            "/console/agents/{name}/shares/{user}",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/shares/{user}",
            "Change a share's level",
        )
        .body(form(&["level"])),
        page(
            "GET",
            "/console/agents/{name}/shares/{user}/delete",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/shares/{user}/delete",
            "Revoke a share",
        )
        .body(form(&[])),
        page("GET", "/console/agents/{name}/tokens", "(to the agent)"),
        page(
            "POST",
            "/console/agents/{name}/tokens",
            "Mint a delegated token (shown once, on this answer)",
        )
        .answer(Answer::Page)
        .body(form(&["level", "expires_in", "label"])),
        page(
            "GET",
            "/console/agents/{name}/tokens/{id}/revoke",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/tokens/{id}/revoke",
            "Revoke a delegated token",
        )
        .body(form(&[])),
        page("GET", "/console/agents/{name}/runtime", "(to the agent)"),
        page(
            "POST",
            "/console/agents/{name}/runtime",
            "Rotate the runtime token (shown once, on this answer)",
        )
        .answer(Answer::Page)
        .body(form(&[])),
        page(
            "GET",
            "/console/agents/{name}/runtime/revoke",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/runtime/revoke",
            "End the runtime token",
        )
        .body(form(&[])),
        page("GET", "/console/agents/{name}/channels", "(to the agent)"),
        page(
            "POST",
            "/console/agents/{name}/channels",
            "Add a channel (its bot token shown once, on this answer)",
        )
        .answer(Answer::Page)
        .body(form(&["type", "bot_token_secret", "settings"])),
        page(
            "GET",
            "/console/agents/{name}/channels/{id}/toggle",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/channels/{id}/toggle",
            "Switch a channel",
        )
        .body(form(&[])),
        page(
            "GET",
            "/console/agents/{name}/channels/{id}/delete",
            "(to the agent)",
        ),
        page(
            "POST",
            "/console/agents/{name}/channels/{id}/delete",
            "Delete a channel",
        )
        .body(form(&[])),
        page(
            "GET",
            "/console/memory",
            "My memory: collections, search, grants",
        )
        .query("q", string(), "search")
        .query("collection", string(), "browse one collection"),
        page("GET", "/console/memory/save", "(to my memory)"),
        page("POST", "/console/memory/save", "Save a chunk").body(form(&[
            "title",
            "collection",
            "content",
        ])),
        page("GET", "/console/memory/grants", "(to my memory's grants)"),
        page(
            "POST",
            "/console/memory/grants",
            "Let an agent read my memory, or stop it",
        )
        .body(form(&["agent", "allowed"])),
        page("GET", "/console/memory/chunk/{hash}", "One chunk"),
        page(
            "GET",
            "/console/memory/chunk/{hash}/delete",
            "Confirm deleting a chunk",
        ),
        page(
            "POST",
            "/console/memory/chunk/{hash}/delete",
            "Delete a chunk",
        )
        .body(form(&[])),
        page("GET", "/console/secrets", "My secrets, masked"),
        page("POST", "/console/secrets", "Add a secret").body(form(&[
            "name",
            "value",
            "category",
            "description",
        ])),
        page("GET", "/console/secrets/reveal", "(to my secrets)"),
        page(
            "POST",
            "/console/secrets/reveal",
            "Reveal one value (on this answer only)",
        )
        .answer(Answer::Page)
        .body(form(&["name"])),
        page(
            "GET",
            "/console/secrets/edit",
            "Edit a secret and its bindings",
        )
        .query("name", string(), "the secret"),
        page("GET", "/console/secrets/update", "(to my secrets)"),
        page(
            "POST",
            "/console/secrets/update",
            "Save a secret or its bindings",
        )
        .body(form(&[
            "name",
            "value",
            "category",
            "description",
            "bindings",
            "agent",
            "others",
        ])),
        page(
            "GET",
            "/console/secrets/delete",
            "Confirm deleting a secret",
        )
        .query("name", string(), "the secret"),
        page("POST", "/console/secrets/delete", "Delete a secret").body(form(&["name"])),
        page(
            "GET",
            "/console/account",
            "My profile, password and sessions",
        ),
        page("POST", "/console/account/profile", "Save my profile")
            .body(form(&["full_name", "email"])),
        page("POST", "/console/account/password", "Change my password")
            .body(form(&["current", "new", "repeat"])),
        page(
            "POST",
            "/console/account/sessions/others",
            "Sign out everywhere else",
        )
        .body(form(&[])),
        page(
            "GET",
            "/console/account/factors",
            "My second factors: add, verify (step-up), remove",
        ),
        page(
            "POST",
            "/console/account/factors/totp",
            "Start adding an authenticator app: its QR code and key, on this answer",
        )
        .answer(Answer::Page)
        .body(form(&[])),
        page(
            "POST",
            "/console/account/factors/totp/confirm",
            "Confirm the authenticator app with a code: the recovery codes, shown once on this answer",
        )
        .answer(Answer::Page)
        .body(form(&["code"])),
        page(
            "POST",
            "/console/account/factors/verify",
            "Verify a code (step-up for 15 minutes)",
        )
        .body(form(&["code"])),
        page(
            "POST",
            "/console/account/factors/{id}/remove",
            "Remove a second factor (step-up)",
        )
        .body(form(&[])),
        page("GET", "/console/inspect", "The token inspector"),
        page("POST", "/console/inspect", "Inspect a token")
            .answer(Answer::Page)
            .body(form(&["token"])),
        page("GET", "/console/admin", "Admin: users").needs("admin"),
        page("GET", "/console/admin/users", "(to the users)").needs("admin"),
        page(
            "POST",
            "/console/admin/users",
            "Invite a person (the code shown once, on this answer)",
        )
        .needs("admin")
        .answer(Answer::Page)
        .body(form(&["username"])),
        page(
            "POST",
            "/console/admin/users/{username}/reset",
            "Reset a password (the code shown once)",
        )
        .needs("admin")
        .answer(Answer::Page)
        .body(form(&[])),
        page(
            "POST",
            "/console/admin/users/{username}/admin",
            "Promote or demote",
        )
        .needs("admin")
        .body(form(&["is_admin"])),
        page(
            "POST",
            "/console/admin/users/{username}/sessions",
            "Sign a user out everywhere",
        )
        .needs("admin")
        .body(form(&[])),
        page(
            "GET",
            "/console/admin/users/{username}/delete",
            "Confirm deleting a user",
        )
        .needs("admin"),
        page(
            "POST",
            "/console/admin/users/{username}/delete",
            "Delete a user, with their agents' disposition",
        )
        .needs("admin")
        .body(form(&["agents", "to"])),
        page("GET", "/console/admin/agents", "Admin: every agent")
            .needs("admin")
            .query("q", string(), "filter by name or owner"),
        page("GET", "/console/admin/audit", "Admin: the audit log")
            .needs("admin")
            .query("actor", string(), "only this actor")
            .query("action", string(), "only this action")
            .query("target", string(), "only this target")
            .query("after", string(), "the next page"),
        page("GET", "/console/admin/backup", "Admin: download a backup").needs("admin"),
        page(
            "POST",
            "/console/admin/backup",
            "Download a backup, with the admin's password",
        )
        .needs("admin")
        .answer(Answer::Bytes("application/octet-stream"))
        .body(form(&["password"])),
    ]
}

/// Every error status an operation may name, described once.
const ERROR_STATUSES: [u16; 7] = [400, 401, 403, 404, 409, 429, 503];

fn components() -> Value {
    let responses: Map<String, Value> = ERROR_STATUSES
        .iter()
        .map(|s| (s.to_string(), error_response(*s)))
        .collect();
    let principal = object(&[("id", string()), ("username", string())]);
    json!({
        "schemas": {
            "Error": object(&[("error", string())]),
            "Level": {"enum": ["view", "use", "edit", "manage", "share", "owner"]},
            "Principal": principal,
            "User": object(&[
                ("id", string()),
                ("username", string()),
                ("full_name?", string()),
                ("email?", string()),
                ("is_admin", boolean()),
                ("pending?", boolean()),
                ("created_at?", integer()),
            ]),
            "PublicKey": object(&[
                ("id", string()),
                ("algorithm", string()),
                ("public_key", string()),
                ("biscuit", string()),
                ("active", boolean()),
            ]),
            "Session": object(&[
                ("created_at", integer()),
                ("expires_at", integer()),
                ("long_lived", boolean()),
                ("current", boolean()),
            ]),
            "Agent": {
                "type": "object",
                "description": "the agent's own fields, plus what tessera adds",
                "properties": {
                    "name": {"type": "string"},
                    "display_name": {"type": "string"},
                    "owner": {"$ref": "#/components/schemas/Principal"},
                    "access": {"$ref": "#/components/schemas/Level"},
                    "archived": {"type": "boolean"},
                    "shared_with_everyone": {"oneOf": [{"$ref": "#/components/schemas/Level"}, {"type": "null"}]},
                    "shared_with": {"type": "array", "items": {"$ref": "#/components/schemas/Share"}}
                },
                "required": ["name"],
                "additionalProperties": true
            },
            "Access": {
                "type": "object",
                "description": "one person who can reach the agent; `level` is null when none of their grants is in effect",
                "properties": {
                    "user": {"$ref": "#/components/schemas/Principal"},
                    "level": {"oneOf": [{"$ref": "#/components/schemas/Level"}, {"type": "null"}]},
                    "via": {"type": "array", "items": {"type": "object", "properties": {
                        "kind": {"enum": ["owner", "admin", "grant", "group", "everyone"]},
                        "level": {"$ref": "#/components/schemas/Level"},
                        "group": {"type": "string"},
                        "everyone": {"const": true},
                        "granted_by": {"$ref": "#/components/schemas/Principal"},
                        "at": {"type": "integer"},
                        "expires_at": {"type": ["integer", "null"]},
                        "in_effect": {"type": "boolean"},
                        "draws_on": {"type": "array", "items": {"type": "object"}}
                    }, "required": ["kind"], "additionalProperties": true}}
                },
                "required": ["user", "level", "via"]
            },
            "Share": {
                "type": "object",
                "description": "one grant: to `user`, or to a `group` (then `user` is null), or to `everyone`",
                "properties": {
                    "user": {"oneOf": [{"$ref": "#/components/schemas/Principal"}, {"type": "null"}]},
                    "group": {"type": "string"},
                    "everyone": {"const": true},
                    "level": {"$ref": "#/components/schemas/Level"},
                    "granted_by": {"$ref": "#/components/schemas/Principal"},
                    "at": {"type": "integer"},
                    "expires_at": {"type": ["integer", "null"]},
                    "expired": {"type": "boolean"},
                    "effective": {"type": "boolean"}
                },
                "required": ["user", "level", "granted_by", "at", "expires_at", "expired", "effective"]
            },
            "Group": object(&[
                ("name", string()),
                ("display_name", string()),
                ("owner", principal.clone()),
                ("created_at", integer()),
                ("member", boolean()),
                ("manage", boolean()),
                ("members?", list_of(principal.clone())),
            ]),
            "TokenRecord": object(&[
                ("id", string()),
                ("agent", string()),
                ("level", level()),
                ("expires_at", integer()),
                ("label?", string()),
                ("issuer?", schema_ref("Principal")),
            ]),
            "AuditEvent": object(&[
                ("id", string()),
                ("at", integer()),
                ("actor", string()),
                ("on_behalf_of?", string()),
                ("action", string()),
                ("target", string()),
                ("concerns?", string()),
                ("detail?", json!({"type": "object"})),
            ]),
            "Chunk": {"type": "object", "properties": {
                "hash": {"type": "string"}, "title": {"type": "string"},
                "content": {"type": "string"}, "collection": {"type": "string"},
                "metadata": {"type": "object"}, "score": {"type": "number"}
            }, "required": ["hash"], "additionalProperties": true},
            "Conversation": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
                "members": {"type": "array"}
            }, "required": ["id"], "additionalProperties": true},
            "Message": {"type": "object", "properties": {
                "id": {"type": "string"}, "channel_id": {"type": "string"},
                "content": {"type": "string"}, "author_type": {"enum": ["user", "agent", "channel"]}
            }, "required": ["id"], "additionalProperties": true},
            "Secret": {"type": "object", "properties": {
                "name": {"type": "string"}, "value": {"type": "string"},
                "category": {"type": "string"}, "description": {"type": "string"},
                "agents": {"type": "array", "items": {"type": "string"}}
            }, "required": ["name"], "additionalProperties": true},
            "ChannelType": {"enum": crate::domain::channels::CHANNEL_TYPES},
            "Channel": {"type": "object", "properties": {
                "id": {"type": "string"}, "agent_name": {"type": "string"},
                "type": {"$ref": "#/components/schemas/ChannelType"}, "enabled": {"type": "boolean"}
            }, "required": ["id"], "additionalProperties": true}
        },
        "responses": responses,
        "securitySchemes": {
            "session": {
                "type": "apiKey", "in": "cookie", "name": "taos_session",
                "description": "a browser session (a Biscuit); changes also need `csrf`"
            },
            "csrf": {
                "type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                "description": "the `csrf_token` cookie echoed back (forms: a `csrf_token` field); Origin and Sec-Fetch-Site must be same-origin"
            },
            "bearer": {
                "type": "http", "scheme": "bearer", "bearerFormat": "Biscuit",
                "description": "any tessera token: session, delegated, channel bot, agent runtime"
            }
        }
    })
}

fn error_response(status: u16) -> Value {
    let what = match status {
        400 => "bad input",
        401 => "no valid credentials",
        403 => "not allowed, or a cookie request without CSRF proof",
        404 => "no such thing, or nothing the caller may see",
        409 => "conflicts with what is there",
        429 => "too many attempts; wait",
        503 => "the store is unavailable or a record is damaged",
        _ => "error",
    };
    json!({
        "description": what,
        "content": {"application/json": {"schema": schema_ref("Error")}}
    })
}

fn operation_object(op: &Op) -> Value {
    let mut out = Map::new();
    out.insert("tags".into(), json!([op.tag]));
    out.insert("summary".into(), json!(op.summary));
    if !op.needs.is_empty() {
        out.insert("description".into(), json!(format!("Needs: {}.", op.needs)));
    }
    out.insert(
        "operationId".into(),
        json!(format!("{} {}", op.method, op.path)),
    );
    let mut parameters: Vec<Value> = placeholders(op.path)
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": string()}))
        .collect();
    parameters.extend(op.query.iter().map(|(name, schema, about)| {
        json!({"name": name, "in": "query", "required": false, "schema": schema, "description": about})
    }));
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = &op.body {
        let content = match op.answer {
            Answer::Page | Answer::Redirect => {
                json!({"application/x-www-form-urlencoded": {"schema": body}})
            }
            _ if op.path.starts_with("/auth/") && op.who == Who::Anyone => json!({
                "application/json": {"schema": body},
                "application/x-www-form-urlencoded": {"schema": body}
            }),
            _ => json!({"application/json": {"schema": body}}),
        };
        out.insert(
            "requestBody".into(),
            json!({"required": true, "content": content}),
        );
    }
    let mut responses = Map::new();
    let success = match op.answer {
        Answer::Json => (
            "200",
            json!({"description": "done", "content": {"application/json": {"schema": op.ok}}}),
        ),
        Answer::Page => (
            "200",
            json!({"description": "the page", "content": {"text/html": {"schema": string()}}}),
        ),
        Answer::Redirect => (
            "303",
            json!({"description": "done: to the next page", "headers": {"Location": {"schema": string()}}}),
        ),
        Answer::Bytes(kind) => (
            "200",
            json!({"description": "the file", "content": {kind: {"schema": string()}}}),
        ),
    };
    let mut success = success;
    if !op.headers.is_empty() {
        let headers: Map<String, Value> = op
            .headers
            .iter()
            .map(|(name, about)| {
                (
                    (*name).to_owned(),
                    json!({"description": about, "schema": string()}),
                )
            })
            .collect();
        success.1["headers"] = Value::Object(headers);
    }
    responses.insert(success.0.into(), success.1);
    let mut statuses: Vec<u16> = vec![400];
    if op.who != Who::Anyone {
        statuses.extend([401, 403]);
    }
    if op.path.contains('{') {
        statuses.push(404);
    }
    statuses.extend(op.errors);
    statuses.sort_unstable();
    statuses.dedup();
    for status in statuses {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/{status}")}),
        );
    }
    out.insert("responses".into(), Value::Object(responses));
    let security = match (op.who, op.method) {
        (Who::Anyone, _) => json!([]),
        (Who::Optional, _) => json!([{}, {"session": []}, {"bearer": []}]),
        (Who::Caller, "GET") => json!([{"session": []}, {"bearer": []}]),
        (Who::Caller, _) => json!([{"session": [], "csrf": []}, {"bearer": []}]),
    };
    out.insert("security".into(), security);
    Value::Object(out)
}

/// The `{name}` placeholders of a path, in order.
fn placeholders(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

/// The whole document.
pub fn document() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for op in inventory() {
        paths
            .entry(op.path)
            .or_default()
            .insert(op.method.to_ascii_lowercase(), operation_object(&op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tessera",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Authorization for self-hosted, multi-user AI agent hosts",
            "description": "Every error is JSON: `{\"error\": \"...\"}`. Changes made with the session cookie need the CSRF proof; bearer tokens do not. An agent the caller cannot view answers 404 exactly like one that does not exist. Every answer to a write (any method but GET, HEAD and OPTIONS) carries `X-Tessera-Revision: N`; a request that sends that header back is answered only once the serving replica has applied revision N (it waits up to 2 s, then answers 503 with Retry-After), so a client reads its own writes on any replica of a shared store.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "tags": [
            {"name": "health"}, {"name": "auth"}, {"name": "forward-auth"}, {"name": "accounts"}, {"name": "agents"}, {"name": "groups"},
            {"name": "tokens"}, {"name": "audit"}, {"name": "memory"}, {"name": "chat"},
            {"name": "secrets"}, {"name": "channels"}, {"name": "pages"}, {"name": "console"}
        ],
        "paths": paths,
        "components": components(),
    })
}

/// The document as served: rendered once.
pub fn document_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
        text.push('\n');
        text
    })
}

async fn served_document() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document_text(),
    )
        .into_response()
}

/// One operation as the reference page lists it.
struct Listed {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    needs: &'static str,
    public: bool,
    body: String,
    answer: String,
}

struct Section {
    tag: &'static str,
    ops: Vec<Listed>,
}

#[derive(Template)]
#[template(path = "docs.html")]
struct ReferencePage {
    sections: Vec<Section>,
}

async fn reference_page() -> Response {
    let mut sections: Vec<Section> = Vec::new();
    for op in inventory() {
        let answer = match op.answer {
            Answer::Json => serde_json::to_string_pretty(&op.ok).unwrap_or_default(),
            Answer::Page => "an HTML page".into(),
            Answer::Redirect => "303 to the next page".into(),
            Answer::Bytes(kind) => format!("a {kind} file"),
        };
        let listed = Listed {
            method: op.method,
            path: op.path,
            summary: op.summary,
            needs: op.needs,
            public: op.who == Who::Anyone,
            body: op
                .body
                .as_ref()
                .map(|b| serde_json::to_string_pretty(b).unwrap_or_default())
                .unwrap_or_default(),
            answer,
        };
        match sections.iter_mut().find(|s| s.tag == op.tag) {
            Some(section) => section.ops.push(listed),
            None => sections.push(Section {
                tag: op.tag,
                ops: vec![listed],
            }),
        }
    }
    match (ReferencePage { sections }).render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the API reference");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for op in inventory() {
            assert!(
                seen.insert((op.method, op.path)),
                "{} {} is listed twice",
                op.method,
                op.path
            );
        }
    }

    #[test]
    fn placeholders_are_read_in_order() {
        let found: Vec<&str> = placeholders("/a/{x}/b/{y}").collect();
        assert_eq!(found, ["x", "y"]);
    }

    #[test]
    fn optional_properties_are_not_required() {
        let o = object(&[("a", string()), ("b?", string())]);
        assert_eq!(o["required"], json!(["a"]));
        assert!(o["properties"]["b"].is_object());
    }
}
