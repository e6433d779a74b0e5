//! Pages of a listing ordered by a unique key: `limit` and an opaque `cursor`
//! (the last key returned), and the `Link: <...>; rel="next"` header that
//! names the next page. A key is never reused for another item, so a walk
//! through the pages returns every item present throughout it exactly once,
//! whatever changes meanwhile.

use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{ApiError, ApiResult};

/// The most items one page may ask for.
pub const MAX_LIMIT: usize = 200;
/// The longest key a cursor may carry (agent names and usernames are far shorter).
const MAX_KEY_LEN: usize = 256;

/// What a request asked for: `None` limit means everything from the cursor on.
#[derive(Debug, Default)]
pub struct Page {
    pub limit: Option<usize>,
    pub after: Option<String>,
}

impl Page {
    /// Read `limit` and `cursor` as given in a query string; `listing`
    /// names the listing, so one listing's cursor is refused by another.
    pub fn parse(limit: Option<&str>, cursor: Option<&str>, listing: &str) -> ApiResult<Self> {
        let limit = match limit {
            None => None,
            Some(text) => Some(
                text.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit must be a whole number from 1 to {MAX_LIMIT}"
                        ))
                    })?,
            ),
        };
        let after = match cursor {
            None => None,
            Some(text) => Some(decode(text, listing).ok_or_else(|| {
                ApiError::BadRequest("cursor is not one this listing handed out".into())
            })?),
        };
        Ok(Self { limit, after })
    }

    /// Whether `key` comes after the cursor.
    pub fn admits(&self, key: &str) -> bool {
        self.after.as_deref().is_none_or(|after| key > after)
    }
}

/// The opaque form of `key` for `listing`.
pub fn encode(key: &str, listing: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{listing}\n{key}"))
}

fn decode(cursor: &str, listing: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let key = text.strip_prefix(listing)?.strip_prefix('\n')?;
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then(|| key.to_owned())
}

/// The `Link` header naming the next page: `path` with `query` (already
/// encoded pairs) and the cursor after `last_key`.
pub fn next_link(path: &str, query: &[(&str, String)], last_key: &str, listing: &str) -> HeaderMap {
    let mut url = String::from(path);
    let mut sep = '?';
    for (name, value) in query {
        url.push(sep);
        url.push_str(name);
        url.push('=');
        url.push_str(value);
        sep = '&';
    }
    url.push(sep);
    url.push_str("cursor=");
    url.push_str(&encode(last_key, listing));
    let mut headers = HeaderMap::new();
    // Every part is a path, a level name, a number or base64url: valid text.
    if let Ok(value) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
        headers.insert(LINK, value);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_in_their_listing() {
        let c = encode("helper", "agents");
        let page = Page::parse(Some("5"), Some(&c), "agents").unwrap();
        assert_eq!(page.after.as_deref(), Some("helper"));
        assert_eq!(page.limit, Some(5));
        assert!(Page::parse(None, Some(&c), "access").is_err());
        assert!(Page::parse(None, Some("not base64!"), "agents").is_err());
        assert!(Page::parse(None, Some(&encode("", "agents")), "agents").is_err());
        for bad in ["0", "201", "-1", "x", ""] {
            assert!(Page::parse(Some(bad), None, "agents").is_err(), "{bad}");
        }
        assert!(page.admits("helpers") && !page.admits("helper") && !page.admits("a"));
    }

    #[test]
    fn the_next_link_keeps_the_query() {
        let h = next_link("/api/agents", &[("limit", "2".into())], "b", "agents");
        let link = h.get(LINK).unwrap().to_str().unwrap();
        assert_eq!(
            link,
            format!(
                "</api/agents?limit=2&cursor={}>; rel=\"next\"",
                encode("b", "agents")
            )
        );
    }
}
