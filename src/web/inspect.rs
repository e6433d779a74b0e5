//! The token inspector: paste any token and see what it says (its blocks
//! in Datalog, kind, issuer, agent, level, expiry) and whether tessera would
//! accept it now, and if not why. The same function answers
//! `POST /api/tokens/inspect`; the pasted token is only read, never used as
//! the caller's proof, and is never put in a URL.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;

use super::agent::PageForm;
use super::when;
use super::{error_page, explain, page, Chrome, Person};
use crate::authz::policy::RequestFacts;
use crate::http::csrf::CsrfToken;
use crate::http::tokens::{inspect_token, Inspection};
use crate::state::{AppState, Caller};

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/inspect", get(form).post(inspect))
}

/// What the page says about a token.
pub struct Report {
    pub blocks: Vec<String>,
    pub kind: &'static str,
    pub issuer: String,
    pub agent: String,
    pub level: String,
    pub label: String,
    pub channel: String,
    pub expires: String,
    pub signature_valid: bool,
    pub valid: bool,
    pub reason: String,
    pub root_key_id: String,
}

impl Report {
    fn new(i: Inspection) -> Self {
        let kind = match i.kind {
            Some("session") => "login session",
            Some("delegated") => "delegated agent token",
            Some("channel_bot") => "channel bot",
            Some("agent_runtime") => "agent runtime",
            Some(_) => "unknown",
            None => "",
        };
        let (level, label) = match &i.delegated {
            Some((level, label)) => (level.as_str().to_owned(), label.clone().unwrap_or_default()),
            None => (String::new(), String::new()),
        };
        Self {
            blocks: i.blocks,
            kind,
            issuer: match i.issuer {
                Some((_, Some(username))) => username,
                Some((id, None)) => format!("a deleted account ({id})"),
                None => String::new(),
            },
            agent: i.agent.unwrap_or_default(),
            level,
            label,
            channel: i.channel.unwrap_or_default(),
            expires: i.expires_at.map(when).unwrap_or_default(),
            signature_valid: i.signature_valid,
            valid: i.valid,
            reason: i.reason.unwrap_or_default(),
            root_key_id: i.root_key_id.map(|k| k.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "inspect.html")]
struct InspectPage {
    chrome: Chrome,
    /// Whether this caller may inspect at all (the policy's `tokens:inspect`).
    allowed: bool,
    report: Option<Report>,
}

fn may_inspect(state: &AppState, caller: &Caller) -> bool {
    state
        .authorize(caller, RequestFacts::new("tokens:inspect"))
        .is_ok()
}

async fn form(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
) -> Response {
    page(
        StatusCode::OK,
        &InspectPage {
            allowed: may_inspect(&state, &caller),
            chrome: Chrome::new(&csrf, Some(&caller), "inspect"),
            report: None,
        },
    )
}

#[derive(Deserialize)]
struct InspectForm {
    #[serde(default)]
    token: String,
}

async fn inspect(
    State(state): State<AppState>,
    Extension(csrf): Extension<CsrfToken>,
    Person(caller): Person,
    PageForm(form): PageForm<InspectForm>,
) -> Response {
    match inspect_token(&state, &caller, &form.token) {
        Ok(inspection) => page(
            StatusCode::OK,
            &InspectPage {
                allowed: true,
                chrome: Chrome::new(&csrf, Some(&caller), "inspect"),
                report: Some(Report::new(inspection)),
            },
        ),
        Err(e) if may_inspect(&state, &caller) => {
            // A token that cannot be read: say so above the form again.
            let (status, text) = explain(e).await;
            page(
                status,
                &InspectPage {
                    allowed: true,
                    chrome: Chrome::new(&csrf, Some(&caller), "inspect").error(Some(text)),
                    report: None,
                },
            )
        }
        Err(e) => error_page(&csrf, Some(&caller), e, "/console").await,
    }
}
