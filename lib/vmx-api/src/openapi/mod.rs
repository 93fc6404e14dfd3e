//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`.
//!
//! It cannot drift from the router: its paths, methods and security come from
//! [`route_table`](crate::route_table) itself (a route added there appears here at once), and
//! each operation's parameters, bodies and responses are written once, in [`operations`],
//! keyed by (path, method). A unit test fails when the two disagree, and `scripts/schemathesis.sh`
//! checks the running server against this document.
//!
//! Errors everywhere use the one shape of [`crate::error`]; streaming responses are
//! `text/event-stream`.
//!
//! Sections: this file assembles the document and holds the small builders every section
//! uses; `paths.rs` holds the operations, `schemas.rs` the component schemas.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::{Access, route_table};

mod paths;
mod schemas;
#[cfg(test)]
mod tests;

pub use paths::{Operation, operations};
use schemas::schemas;

/// `GET /openapi.json` (public).
pub async fn doc() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone()).into_response()
}

/// The whole document.
pub fn document() -> Value {
    let ops = operations();
    let mut paths = Map::new();
    for route in route_table().into_iter().filter(documented) {
        let mut item = Map::new();
        for method in route.methods {
            let mut op = match ops
                .iter()
                .find(|o| o.path == route.path && o.method == *method)
            {
                Some(o) => o.value.clone(),
                // Only until someone writes its entry: the unit test in tests.rs fails meanwhile.
                None => {
                    json!({"summary": "undocumented", "responses": {"default": err("an error")}})
                }
            };
            finish(&mut op, route.path, route.access);
            // A malformed `{id}` (e.g. not UTF-8 once decoded) is a 400 naming `id`.
            if route.path.contains("{id}")
                && let Some(Value::Object(responses)) = op.get_mut("responses")
            {
                responses.entry("400").or_insert_with(|| bad("id"));
            }
            item.insert(method.to_ascii_lowercase(), op);
        }
        // A path may have two entries (its methods under different access levels).
        match paths.get_mut(route.path) {
            Some(Value::Object(existing)) => existing.extend(item),
            _ => {
                paths.insert(route.path.to_owned(), Value::Object(item));
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "vmx",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "AI Connections gateway: connections to LLM providers with encrypted \
                credentials and enforced capacity (admin API), and OpenAI Chat Completions and \
                Anthropic Messages inference through them. Admin routes take the admin bearer \
                token locally and API Gateway IAM authorization in AWS; inference routes take a \
                gateway API key as a bearer token or in x-api-key.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "connections", "description": "Connections to providers (admin)."},
            {"name": "api-keys", "description": "Gateway API keys for inference callers (admin)."},
            {"name": "inference", "description": "OpenAI- and Anthropic-compatible inference."},
            {"name": "meta", "description": "Health, providers and this document."},
            {"name": "console", "description": "The web console's sign-in (local server sessions) and settings."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Admin routes: the admin token (local server). Inference \
                        routes: a gateway API key (vmx_sk_...), or locally the admin token.",
                },
                "consoleSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "vmx_session",
                    "description": "Local server: the console session from POST /console/session. \
                        Admin routes take it too; with it, every method but GET/HEAD/OPTIONS must \
                        send the session's X-CSRF-Token.",
                },
                "apiKeyHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "Inference routes: a gateway API key, as the Anthropic SDKs send it.",
                },
            },
            "schemas": schemas(),
        },
    })
}

/// Whether a route is in this document: the console's HTML pages and static files are not
/// (they are no JSON API); its `config.json` and session routes are.
pub fn documented(route: &crate::Route) -> bool {
    !(route.path == "/"
        || route.access == Access::Page
        || route.path.starts_with("/console/assets/"))
}

/// Adds what the route table decides: path parameters, security and the 401.
fn finish(op: &mut Value, path: &str, access: Access) {
    let Value::Object(o) = op else { return };
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"type": "string", "minLength": 1}})
        })
        .collect();
    if let Some(Value::Array(extra)) = o.remove("parameters") {
        params.extend(extra);
    }
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    let security = match access {
        Access::Public => json!([]),
        Access::Admin => json!([{"bearerAuth": []}]),
        Access::Caller => json!([{"bearerAuth": []}, {"apiKeyHeader": []}]),
        Access::Page | Access::Session => json!([{"consoleSession": []}]),
    };
    o.insert("security".into(), security);
    if access != Access::Public
        && let Some(Value::Object(r)) = o.get_mut("responses")
    {
        r.insert(
            "401".into(),
            err("Missing, malformed, wrong, revoked or expired credentials."),
        );
        r.insert("500".into(), err("Internal error (detail is only logged)."));
        r.insert(
            "503".into(),
            err("A backing service is temporarily unavailable; see Retry-After."),
        );
    }
}

fn sref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A JSON response with schema `name`.
fn ok(description: &str, name: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": sref(name)}}})
}

/// An error response (the shared error shape).
fn err(description: &str) -> Value {
    ok(description, "Error")
}

fn bad(field_example: &str) -> Value {
    err(&format!(
        "Invalid input; `error.field` names it (e.g. `{field_example}`)."
    ))
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn provider_ids() -> Vec<&'static str> {
    vmx_domain::provider::ProviderKind::ALL
        .iter()
        .map(|p| p.id())
        .collect()
}
