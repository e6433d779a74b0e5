//! The OpenAPI description: served as committed, valid OpenAPI 3.1, and
//! complete. Completeness is checked against the routers' source: every
//! `.route("...", get(..).post(..))` under `src/` is read, method by method,
//! and must be described, and every description must be routed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;

use crate::helpers::{Auth, TestApp};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn served(app: &TestApp) -> (String, Value) {
    let resp = app
        .call(Method::GET, "/openapi.json", Auth::None, None)
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "application/json");
    (resp.text, resp.body)
}

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = TestApp::new();
    let (text, _) = served(&app).await;
    let committed = std::fs::read_to_string(repo().join("docs/openapi.json"))
        .expect("docs/openapi.json is committed");
    assert!(
        text == committed,
        "docs/openapi.json differs from what /openapi.json serves. If the change to the \
         API is intended, regenerate it with `cargo run -- openapi > docs/openapi.json` \
         and commit it with the change."
    );
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::new();
    let (_, document) = served(&app).await;
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/openapi-3.1/schema.json"))
            .expect("the OpenAPI 3.1 schema"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the OpenAPI schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not valid OpenAPI 3.1:\n{}",
        errors.join("\n")
    );
    assert_eq!(document["openapi"], "3.1.0");

    // The schema checks shape, not references: every `$ref` must name a
    // component that exists, and every operation id must be unique.
    let mut refs = Vec::new();
    collect_refs(&document, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(
            document.pointer(pointer).is_some(),
            "$ref {r} names nothing"
        );
    }
    let mut ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap().to_owned();
            assert!(ids.insert(id), "{method} {path}: operationId repeated");
            for scheme in op["security"].as_array().unwrap() {
                for name in scheme.as_object().unwrap().keys() {
                    assert!(
                        document["components"]["securitySchemes"][name].is_object(),
                        "{method} {path}: unknown security scheme {name}"
                    );
                }
            }
        }
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_owned());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_route_is_described_and_every_description_is_routed() {
    let app = TestApp::new();
    let (_, document) = served(&app).await;
    let described: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_ascii_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut routed = BTreeSet::new();
    for file in rust_files(&repo().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests build routers of their own.
        let served = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (method, path) in routes_in(served) {
            routed.insert((method, path));
        }
    }
    assert!(
        routed.len() > 100,
        "the route scanner found only {} routes: it no longer reads the routers",
        routed.len()
    );
    let undocumented: Vec<_> = routed.difference(&described).collect();
    let unrouted: Vec<_> = described.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI inventory (src/http/openapi.rs): {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "described but not routed: {unrouted:?}"
    );
}

#[tokio::test]
async fn the_reference_page_lists_every_operation_and_loads_nothing_from_elsewhere() {
    let app = TestApp::new();
    let (_, document) = served(&app).await;
    let req = Request::builder()
        .uri("/docs")
        .header("accept", "text/html")
        .body(Body::empty())
        .unwrap();
    let page = app.send(req).await;
    assert_eq!(page.status, 200);
    assert!(page.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let line = format!("{} {}", method.to_ascii_uppercase(), path);
            assert!(page.text.contains(&line), "/docs does not list {line}");
        }
    }
    for attribute in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!page.text.contains(attribute), "/docs loads {attribute}...");
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `(METHOD, path)` an axum `.route("path", get(..).post(..))` in
/// `text` registers: the method routers called at the top level of the
/// call's arguments (so a `see_other("...")` inside a closure is not one).
fn routes_in(text: &str) -> Vec<(String, String)> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(".route(") {
        let mut i = from + at + ".route(".len();
        from = i;
        while bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes[i] != b'"' {
            continue;
        }
        let end = i + 1 + code[i + 1..].find('"').unwrap();
        let path = code[i + 1..end].to_owned();
        i = end + 1;
        let mut depth = 1;
        while i < bytes.len() && depth > 0 {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'(' => depth += 1,
                b')' => depth -= 1,
                c if c.is_ascii_alphabetic()
                    && depth == 1
                    && !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') =>
                {
                    let start = i;
                    while bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' {
                        i += 1;
                    }
                    let word = &code[start..i];
                    if bytes[i] == b'('
                        && matches!(word, "get" | "post" | "put" | "delete" | "patch")
                    {
                        found.push((word.to_ascii_uppercase(), path.clone()));
                    }
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
    found
}

#[test]
fn the_route_scanner_reads_what_axum_reads() {
    let text = r#"
        Router::new()
            .route("/a", get(list).post(create))
            .route(
                "/b/{x}",
                get(|| async { see_other("/elsewhere") }).post(go),
            )
            // .route("/commented", get(x))
            .route("/c", axum::routing::delete(remove))
    "#;
    assert_eq!(
        routes_in(text),
        [
            ("GET".to_owned(), "/a".to_owned()),
            ("POST".into(), "/a".into()),
            ("GET".into(), "/b/{x}".into()),
            ("POST".into(), "/b/{x}".into()),
            ("DELETE".into(), "/c".into()),
        ]
    );
}
