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

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use vmx_domain::provider::ProviderKind;

use crate::{Access, route_table};

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
                // Only until someone writes its entry: the unit test below fails meanwhile.
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

/// One documented operation.
pub struct Operation {
    pub path: &'static str,
    pub method: &'static str,
    pub value: Value,
}

fn op(path: &'static str, method: &'static str, value: Value) -> Operation {
    Operation {
        path,
        method,
        value,
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

fn body(name: &str, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": sref(name)}}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn bad(field_example: &str) -> Value {
    err(&format!(
        "Invalid input; `error.field` names it (e.g. `{field_example}`)."
    ))
}

/// The responses every inference call may give besides its success.
fn inference_errors(mut r: Map<String, Value>) -> Value {
    for (code, text) in [
        (
            "400",
            "Invalid body (`error.field` names it), or rejected by the provider.",
        ),
        (
            "403",
            "The model is not in the connection's non-empty allowedModels.",
        ),
        (
            "404",
            "No such connection, or one the API key may not use (the same answer for both).",
        ),
        ("413", "The body is over the size limit."),
        (
            "429",
            "The connection's capacity (see Retry-After and `error.limit`) or the provider's rate limit.",
        ),
        (
            "4XX",
            "The provider rejected the request with another client error.",
        ),
        (
            "502",
            "The provider failed, sent an unreadable answer, or rejected the stored credentials.",
        ),
        ("504", "The provider did not answer in time."),
    ] {
        r.insert(code.into(), err(text));
    }
    Value::Object(r)
}

fn stream_or_json(description: &str, name: &str) -> Value {
    json!({
        "description": description,
        "content": {
            "application/json": {"schema": sref(name)},
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One server-sent event (`stream: true`); `data` is JSON (or `[DONE]` \
                        ending a Chat Completions stream). A stream that breaks ends with an error \
                        event whose data has the shared error shape.",
                    "required": ["data"],
                    "properties": {
                        "event": {"type": "string"},
                        "data": {"type": "string"},
                        "id": {"type": "string"},
                    },
                },
            },
        },
    })
}

/// Request and response schemas of every operation, keyed by (path, method).
pub fn operations() -> Vec<Operation> {
    let id_404 = |what: &str| err(&format!("No {what} with this id."));
    vec![
        op(
            "/healthz",
            "GET",
            json!({
                "operationId": "health", "tags": ["meta"], "summary": "Liveness",
                "responses": {"200": ok("Alive.", "Health")},
            }),
        ),
        op(
            "/openapi.json",
            "GET",
            json!({
                "operationId": "openapi", "tags": ["meta"], "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}}}},
            }),
        ),
        op(
            "/v1/providers",
            "GET",
            json!({
                "operationId": "listProviders", "tags": ["meta"],
                "summary": "The providers, their configuration fields and capabilities",
                "responses": {"200": ok("Every provider.", "ProviderList")},
            }),
        ),
        op(
            "/v1/connections",
            "GET",
            json!({
                "operationId": "listConnections", "tags": ["connections"],
                "summary": "List connections in creation order, optionally of one provider or by name",
                "parameters": list_connections_params(),
                "responses": {"200": ok("One page.", "ConnectionList"), "400": bad("provider")},
            }),
        ),
        op(
            "/v1/connections",
            "POST",
            json!({
                "operationId": "createConnection", "tags": ["connections"],
                "summary": "Create a connection (its secret is encrypted before it is stored)",
                "requestBody": body("ConnectionCreate", true),
                "responses": {
                    "201": links(
                        with_etag(ok("Created; secrets are shown as ********.", "Connection")),
                        &["getConnection", "updateConnection", "deleteConnection", "getCapacity", "getUsage", "testConnection"],
                    ),
                    "400": bad("capacity[2].period"),
                    "409": err("The name is taken."),
                    "413": err("The body is over the size limit."),
                },
            }),
        ),
        op(
            "/v1/connections/check",
            "POST",
            json!({
                "operationId": "checkConnection", "tags": ["connections"],
                "summary": "Try a provider configuration that is not saved, with the provider's cheapest call",
                "requestBody": body("ConnectionCheck", true),
                "responses": {
                    "200": ok("The outcome, as for a saved connection's test (the key is never echoed).", "ConnectionTestResult"),
                    "400": bad("config.apiKey"),
                    "413": err("The body is over the size limit."),
                },
            }),
        ),
        op(
            "/console/config.json",
            "GET",
            json!({
                "operationId": "consoleConfig", "tags": ["console"],
                "summary": "How the console signs in here (local session or Cognito); no secrets",
                "responses": {"200": ok("The console's settings.", "ConsoleConfig")},
            }),
        ),
        op(
            "/console/session",
            "POST",
            json!({
                "operationId": "startConsoleSession", "tags": ["console"],
                "summary": "Local server: sign in with the admin token; sets the HttpOnly session cookie",
                "requestBody": body("ConsoleSignIn", true),
                "responses": {
                    "200": ok("Signed in (Set-Cookie: vmx_session=...; HttpOnly; SameSite=Strict).", "ConsoleSession"),
                    "400": bad("token"),
                    "401": err("Wrong admin token."),
                    "429": err("Too many wrong tokens: sign-in is paused; see Retry-After."),
                },
            }),
        ),
        op(
            "/console/session",
            "GET",
            json!({
                "operationId": "getConsoleSession", "tags": ["console"],
                "summary": "The session's CSRF token and expiry",
                "responses": {"200": ok("Signed in.", "ConsoleSession")},
            }),
        ),
        op(
            "/console/session",
            "DELETE",
            json!({
                "operationId": "endConsoleSession", "tags": ["console"],
                "summary": "Sign out (needs X-CSRF-Token); clears the cookie",
                "responses": {
                    "204": {"description": "Signed out."},
                    "403": err("Missing or wrong X-CSRF-Token (code csrf_failed)."),
                },
            }),
        ),
        op(
            "/v1/connections/{id}",
            "GET",
            json!({
                "operationId": "getConnection", "tags": ["connections"],
                "summary": "Get a connection",
                "responses": {"200": with_etag(ok("The connection.", "Connection")), "404": id_404("connection")},
            }),
        ),
        op(
            "/v1/connections/{id}",
            "PATCH",
            json!({
                "operationId": "updateConnection", "tags": ["connections"],
                "summary": "Partial update; config is a JSON Merge Patch; a new apiKey rotates the secret",
                "parameters": [{"name": "If-Match", "in": "header", "required": false,
                    "description": "The version from ETag, e.g. \"3\": 409 if the connection changed.",
                    "schema": {"type": "string"}}],
                "requestBody": body("ConnectionPatch", true),
                "responses": {
                    "200": with_etag(ok("Updated.", "Connection")),
                    "400": bad("config.apiKey"),
                    "404": id_404("connection"),
                    "409": err("Stale version, or the new name is taken."),
                    "413": err("The body is over the size limit."),
                },
            }),
        ),
        op(
            "/v1/connections/{id}",
            "DELETE",
            json!({
                "operationId": "deleteConnection", "tags": ["connections"],
                "summary": "Delete a connection",
                "responses": {"204": {"description": "Deleted."}, "404": id_404("connection")},
            }),
        ),
        op(
            "/v1/connections/{id}/capacity",
            "GET",
            json!({
                "operationId": "getCapacity", "tags": ["connections"],
                "summary": "Each enabled window: limit, use, reset; busiest source IPs",
                "parameters": [query("top", "Busiest source IPs to list per source-ip window (default 10).",
                    json!({"type": "integer", "minimum": 1, "maximum": vmx_domain::admission::MAX_TOP_IPS}))],
                "responses": {"200": ok("Current use.", "CapacityUsage"), "400": bad("top"), "404": id_404("connection")},
            }),
        ),
        op(
            "/v1/connections/{id}/usage",
            "GET",
            json!({
                "operationId": "getUsage", "tags": ["connections"],
                "summary": "Usage statistics per model and hour or day",
                "parameters": [
                    query("from", "Start (RFC 3339); default 24 hours (30 days for day) before `to`.",
                        json!({"type": "string", "format": "date-time"})),
                    query("to", "End (RFC 3339); default now.", json!({"type": "string", "format": "date-time"})),
                    query("granularity", "Bucket size (default hour).", json!({"type": "string", "enum": ["hour", "day"]})),
                ],
                "responses": {"200": ok("The buckets.", "UsageReport"), "400": bad("from"), "404": id_404("connection")},
            }),
        ),
        op(
            "/v1/connections/{id}/test",
            "POST",
            json!({
                "operationId": "testConnection", "tags": ["connections"],
                "summary": "Check the stored credentials with the provider's cheapest call",
                "requestBody": body("ConnectionTest", false),
                "responses": {
                    "200": ok("The outcome (a failed check is still a 200 with ok: false).", "ConnectionTestResult"),
                    "400": bad("model"),
                    "404": id_404("connection"),
                    "413": err("The body is over the size limit."),
                },
            }),
        ),
        op(
            "/v1/api-keys",
            "GET",
            json!({
                "operationId": "listApiKeys", "tags": ["api-keys"],
                "summary": "List gateway API keys (never the key itself)",
                "parameters": page_params(),
                "responses": {"200": ok("One page.", "ApiKeyList"), "400": bad("limit")},
            }),
        ),
        op(
            "/v1/api-keys",
            "POST",
            json!({
                "operationId": "createApiKey", "tags": ["api-keys"],
                "summary": "Create a gateway API key (shown once, in this response)",
                "requestBody": body("ApiKeyCreate", true),
                "responses": {
                    "201": links(ok("Created; `key` is shown only here.", "ApiKeyCreated"), &["getApiKey", "revokeApiKey"]),
                    "400": bad("connections[2]"),
                    "413": err("The body is over the size limit."),
                },
            }),
        ),
        op(
            "/v1/api-keys/{id}",
            "GET",
            json!({
                "operationId": "getApiKey", "tags": ["api-keys"], "summary": "Get a gateway API key",
                "responses": {"200": ok("The key's record.", "ApiKey"), "404": id_404("API key")},
            }),
        ),
        op(
            "/v1/api-keys/{id}",
            "DELETE",
            json!({
                "operationId": "revokeApiKey", "tags": ["api-keys"],
                "summary": "Revoke a gateway API key (idempotent)",
                "responses": {"204": {"description": "Revoked."}, "404": id_404("API key")},
            }),
        ),
        op(
            "/v1/models",
            "GET",
            json!({
                "operationId": "listModels", "tags": ["inference"],
                "summary": "The models the caller may use, as <connection>/<model>",
                "responses": {"200": ok("OpenAI's list shape.", "ModelList")},
            }),
        ),
        op(
            "/v1/chat/completions",
            "POST",
            json!({
                "operationId": "createChatCompletion", "tags": ["inference"],
                "summary": "OpenAI Chat Completions through a connection (every provider)",
                "requestBody": body("ChatCompletionRequest", true),
                "responses": inference_errors(json_map(json!({
                    "200": stream_or_json("The completion, or its event stream.", "ChatCompletion"),
                }))),
            }),
        ),
        op(
            "/v1/messages",
            "POST",
            json!({
                "operationId": "createMessage", "tags": ["inference"],
                "summary": "Anthropic Messages through an anthropic or aws-bedrock-invoke connection",
                "parameters": [{"name": "anthropic-beta", "in": "header", "required": false,
                    "description": "Forwarded to the provider.", "schema": {"type": "string"}}],
                "requestBody": body("MessagesRequest", true),
                "responses": inference_errors(json_map(json!({
                    "200": stream_or_json("The message, or its event stream.", "Message"),
                }))),
            }),
        ),
    ]
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn with_etag(mut response: Value) -> Value {
    response["headers"] = json!({"ETag": {"description": "The connection's version, quoted.",
        "schema": {"type": "string"}}});
    response
}

/// OpenAPI links from a created resource to the operations on its `id` (what stateful
/// testing follows).
fn links(mut response: Value, operation_ids: &[&str]) -> Value {
    let links: Map<String, Value> = operation_ids
        .iter()
        .map(|op| {
            (
                (*op).to_owned(),
                json!({"operationId": op, "parameters": {"id": "$response.body#/id"}}),
            )
        })
        .collect();
    response["links"] = Value::Object(links);
    response
}

/// `limit` and `cursor`, and the list's filters.
fn list_connections_params() -> Value {
    let mut p = page_params();
    if let Value::Array(a) = &mut p {
        a.push(query(
            "provider",
            "Only connections of this provider (a provider id).",
            json!({"type": "string", "enum": provider_ids()}),
        ));
        a.push(query(
            "q",
            "Only connections whose name contains this text (case-insensitive).",
            json!({"type": "string", "maxLength": 200}),
        ));
    }
    p
}

fn provider_ids() -> Vec<&'static str> {
    vmx_domain::provider::ProviderKind::ALL
        .iter()
        .map(|p| p.id())
        .collect()
}

fn page_params() -> Value {
    json!([
        query(
            "limit",
            "Page size (default 50).",
            json!({"type": "integer", "minimum": 1, "maximum": crate::routes::MAX_PAGE})
        ),
        query(
            "cursor",
            "`nextCursor` of the previous page.",
            json!({"type": "string"})
        ),
    ])
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Component schemas.
fn schemas() -> Value {
    let providers: Vec<&str> = ProviderKind::ALL.iter().map(|p| p.id()).collect();
    let periods = json!(["minute", "hour", "day", "week", "month", "lifetime"]);
    let positive = json!({"type": "integer", "minimum": 1, "maximum": 9_007_199_254_740_992u64});
    // Printable, no '/', no leading or trailing space, not of the form of an id.
    let name = json!({"type": "string", "minLength": 1, "maxLength": vmx_domain::connection::NAME_MAX,
        "pattern": "^[^/\\s\\x00-\\x1f\\x7f-\\x9f]([^/\\x00-\\x1f\\x7f-\\x9f]*[^/\\s\\x00-\\x1f\\x7f-\\x9f])?$",
        "not": {"pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
        "description": "Unique; never of the form of a connection id (a UUID)."});
    let model_id = json!({"type": "string", "minLength": 1, "maxLength": vmx_domain::connection::MODEL_ID_MAX});
    let limit_view = json!({"type": "object", "required": ["used"], "properties": {
        "limit": nullable(json!({"type": "integer"})), "used": {"type": "integer"}, "remaining": {"type": "integer"}}});
    let mut all = Map::new();
    all.extend(json_map(json!({
        "Error": {
            "type": "object",
            "description": "Every error. `param` (for OpenAI SDKs) and `field` (admin API) name the offending input.",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["message", "type", "code", "param"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string", "description": "OpenAI's error type for the status."},
                        "code": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "field": {"type": "string"},
                        "limit": {"type": "object", "description": "429 capacity_exceeded: the window that tripped.",
                            "properties": {"period": {"enum": periods}, "metric": {"type": "string"},
                                "limit": {"type": "integer"}, "scope": {"type": "string"}, "sourceIp": {"type": "string"}}},
                        "estimatedPromptTokens": {"type": "integer"},
                    },
                },
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "ProviderList": {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": {
            "type": "object", "required": ["id", "displayName", "auth", "configFields", "capabilities"],
            "properties": {
                "id": {"enum": providers}, "displayName": {"type": "string"},
                "auth": {"enum": ["api-key", "iam-role"]},
                "configFields": {"type": "array", "items": {"type": "object",
                    "required": ["name", "type", "required", "secret", "description"],
                    "properties": {"name": {"type": "string"}, "type": {"type": "string"},
                        "required": {"type": "boolean"}, "secret": {"type": "boolean"},
                        "description": {"type": "string"}}}},
                "capabilities": {"type": "object", "properties": {"streaming": {"type": "boolean"},
                    "tools": {"type": "boolean"}, "vision": {"type": "boolean"},
                    "anthropicFeatures": {"type": "boolean"}}},
            }}}}},
    })));
    all.extend(json_map(json!({
        "CapacityEntry": {
            "type": "object",
            "additionalProperties": false,
            "required": ["period"],
            "anyOf": [{"required": ["requests"]}, {"required": ["tokens"]}],
            "properties": {
                "period": {"enum": periods},
                "requests": positive,
                "tokens": positive,
                "enabled": {"type": "boolean", "default": true},
                "dimension": {"enum": ["source-ip"]},
            },
        },
        "ApiKeyConfig": {
            "type": "object", "additionalProperties": false, "required": ["apiKey"],
            "properties": {"apiKey": {"type": "string", "minLength": 1, "maxLength": vmx_domain::connection::SECRET_MAX,
                "description": "Write-only: responses show ********; sending ******** back keeps the stored key."}},
        },
        "AwsConfig": {
            "type": "object", "additionalProperties": false, "required": ["region", "iamRoleArn"],
            "properties": {
                "region": {"type": "string", "pattern": "^[a-z]{2}(-[a-z]+){1,2}-[0-9]+$"},
                "iamRoleArn": {"type": "string", "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]*[A-Za-z0-9+=,.@_-]$"},
                "externalId": {"type": "string", "minLength": 2, "maxLength": 1224, "pattern": "^[A-Za-z0-9+=,.@:/_-]+$"},
                "performanceConfig": {"type": "object", "additionalProperties": false, "required": ["latency"],
                    "properties": {"latency": {"enum": ["standard", "optimized"]}}},
                "guardrailConfig": {"type": "object", "additionalProperties": false,
                    "required": ["guardrailIdentifier", "guardrailVersion"],
                    "properties": {"guardrailIdentifier": {"type": "string"},
                        "guardrailVersion": {"type": "string", "pattern": "^(DRAFT|[1-9][0-9]{0,7})$"},
                        "trace": {"enum": ["enabled", "disabled", "enabled_full"]}}},
            },
        },
        "ConnectionCreate": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "provider", "config"],
            "properties": {
                "name": name,
                "description": nullable(json!({"type": "string", "maxLength": vmx_domain::connection::DESCRIPTION_MAX})),
                "provider": {"enum": providers},
                "config": {"description": "ApiKeyConfig for API-key providers, AwsConfig for the Bedrock ones.",
                    "anyOf": [sref("ApiKeyConfig"), sref("AwsConfig")]},
                "capacity": {"type": "array", "maxItems": vmx_domain::capacity::MAX_ENTRIES, "items": sref("CapacityEntry")},
                "allowedModels": nullable(json!({"type": "array", "maxItems": vmx_domain::connection::ALLOWED_MODELS_MAX, "items": model_id})),
            },
            "example": {"name": "prod-openai", "provider": "openai", "config": {"apiKey": "sk-example"},
                "capacity": [{"period": "minute", "requests": 100, "tokens": 100000}],
                "allowedModels": ["gpt-4o-mini"]},
        },
        "ConnectionPatch": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": name,
                "description": nullable(json!({"type": "string", "maxLength": vmx_domain::connection::DESCRIPTION_MAX})),
                "provider": {"enum": providers, "description": "Cannot change; accepted when equal."},
                "config": {"type": "object", "description": "JSON Merge Patch onto the stored config; null removes an optional field."},
                "capacity": nullable(json!({"type": "array", "maxItems": vmx_domain::capacity::MAX_ENTRIES, "items": sref("CapacityEntry")})),
                "allowedModels": nullable(json!({"type": "array", "maxItems": vmx_domain::connection::ALLOWED_MODELS_MAX, "items": model_id})),
                "version": nullable(positive.clone()),
            },
            "example": {"description": "main account"},
        },
    })));
    all.extend(json_map(json!({
        "Connection": {
            "type": "object",
            "required": ["id", "name", "description", "provider", "config", "capacity", "allowedModels",
                "discoveredCapacity", "createdAt", "updatedAt", "version"],
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "description": {"type": ["string", "null"]},
                "provider": {"enum": providers},
                "config": {"type": "object", "description": "Secrets are shown as ********."},
                "capacity": {"type": "array", "items": sref("CapacityEntry")},
                "allowedModels": nullable(json!({"type": "array", "items": {"type": "string"}})),
                "discoveredCapacity": {"type": "object", "properties": {"models": {"type": "object",
                    "additionalProperties": {"type": "object", "required": ["updatedAt", "capacity"], "properties": {
                        "updatedAt": date_time(),
                        "changedAt": {"type": "string", "format": "date-time",
                            "description": "When the limits last changed (absent for entries recorded before vmx kept it)."},
                        "capacity": {"type": "array", "items": {"type": "object", "required": ["period", "metric", "limit"],
                            "properties": {"period": {"enum": periods}, "metric": {"type": "string"},
                                "limit": {"type": "integer"}, "remaining": {"type": "integer"}, "reset": {"type": "string"}}}},
                        "errorMessage": {"type": "string"}}}}}},
                "createdAt": date_time(),
                "updatedAt": date_time(),
                "version": {"type": "integer", "minimum": 1},
            },
        },
        "ConnectionList": {"type": "object", "required": ["data", "nextCursor"], "properties": {
            "data": {"type": "array", "items": sref("Connection")}, "nextCursor": {"type": ["string", "null"]}}},
        "CapacityUsage": {"type": "object", "required": ["connectionId", "name", "at", "windows"], "properties": {
            "connectionId": {"type": "string"}, "name": {"type": "string"}, "at": date_time(),
            "windows": {"type": "array", "items": {"type": "object", "required": ["period", "scope", "windowStart", "resetAt", "resetInSecs"],
                "properties": {
                    "period": {"enum": periods}, "scope": {"enum": ["connection", "source-ip"]},
                    "windowStart": nullable(date_time()), "resetAt": nullable(date_time()),
                    "resetInSecs": {"type": ["integer", "null"]},
                    "requests": limit_view, "tokens": limit_view,
                    "limits": {"type": "object"}, "sourceIpCount": {"type": "integer"},
                    "topSourceIps": {"type": "array", "items": {"type": "object", "required": ["ip"],
                        "properties": {"ip": {"type": "string"}, "requests": limit_view, "tokens": limit_view}}},
                }}},
        }},
        "UsageReport": {"type": "object", "required": ["connectionId", "granularity", "from", "to", "data"], "properties": {
            "connectionId": {"type": "string"}, "granularity": {"enum": ["hour", "day"]},
            "from": date_time(), "to": date_time(),
            "data": {"type": "array", "items": {"type": "object",
                "required": ["start", "model", "requests", "promptTokens", "completionTokens", "cachedTokens"],
                "properties": {
                    "start": date_time(), "model": {"type": "string"}, "requests": {"type": "integer"},
                    "errors": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "promptTokens": {"type": "integer"}, "completionTokens": {"type": "integer"},
                    "cachedTokens": {"type": "integer"}, "latencyMsSum": {"type": "integer"},
                    "latencyMsMax": {"type": "integer"}, "ttftMsSum": {"type": "integer"},
                    "ttftMsMax": {"type": "integer"}, "ttftCount": {"type": "integer"},
                }}},
        }},
        "ConnectionCheck": {"type": "object", "required": ["provider", "config"], "additionalProperties": false, "properties": {
            "provider": {"type": "string", "enum": provider_ids()},
            "config": {"type": "object", "description": "As in ConnectionCreate (an API key in plain text)."},
            "model": {"type": "string", "minLength": 1, "description": "The model to try (default: the provider's cheapest call without one)."},
        }},
        "ConsoleConfig": {"type": "object", "required": ["mode", "name", "apiBase"], "properties": {
            "mode": {"type": "string", "enum": ["local", "cognito", "iam"],
                "description": "local: sign in with the admin token (POST /console/session); cognito: the hosted UI; iam: no browser sign-in is configured."},
            "name": {"type": "string", "description": "local, or the stack name."},
            "apiBase": {"type": "string", "description": "Prefix of the console's API calls (/console/api behind the JWT authorizer)."},
            "cognito": {"type": "object", "properties": {
                "domain": {"type": "string"}, "clientId": {"type": "string"},
                "redirectUri": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
            }},
            "bedrockPrincipalArn": {"type": "string", "description": "The role a Bedrock connection role must trust."},
        }},
        "ConsoleSignIn": {"type": "object", "required": ["token"], "additionalProperties": false,
            "properties": {"token": {"type": "string", "minLength": 1, "description": "The admin token."}}},
        "ConsoleSession": {"type": "object", "required": ["csrfToken", "expiresAt"], "properties": {
            "signedIn": {"type": "boolean"},
            "csrfToken": {"type": "string", "description": "Send it as X-CSRF-Token on every state-changing request."},
            "expiresAt": date_time(),
            "name": {"type": "string"},
        }},
        "ConnectionTest": {"type": "object", "properties": {"model": {"type": "string", "minLength": 1,
            "description": "Model to probe; default: the first of allowedModels."}}},
        "ConnectionTestResult": {"type": "object", "required": ["ok", "latencyMs"], "properties": {
            "ok": {"type": "boolean"}, "latencyMs": {"type": "integer"},
            "model": {"type": ["string", "null"]}, "call": {"type": "string"},
            "limits": {"type": "array", "items": {"type": "object"}},
            "error": {"type": "object", "required": ["class", "message"], "properties": {
                "class": {"enum": ["credentials_rejected", "network", "timeout", "provider_outage", "rate_limited", "bad_request"]},
                "message": {"type": "string"}}},
        }},
    })));
    all.extend(json_map(json!({
        "ApiKeyCreate": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "name": nullable(json!({"type": "string", "minLength": 1, "maxLength": vmx_domain::api_key::NAME_MAX})),
                "connections": nullable(json!({"type": "array", "minItems": 1, "maxItems": vmx_domain::api_key::CONNECTIONS_MAX,
                    "items": {"type": "string", "minLength": 1, "maxLength": vmx_domain::api_key::CONNECTION_REF_MAX, "pattern": "^[^/]+$"},
                    "description": "Connection ids or names this key may use, each resolved to the connection's id when the key is created (one that names no connection: 400 naming connections[i]); absent: every connection."})),
                "expiresAt": nullable(json!({"type": "string", "format": "date-time", "description": "In the future."})),
            },
            "example": {"name": "my-app", "connections": ["prod-openai"], "expiresAt": "2030-12-31T00:00:00Z"},
        },
        "ApiKey": {
            "type": "object",
            "required": ["id", "name", "prefix", "connections", "createdAt", "expiresAt", "revokedAt", "lastUsedAt"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": ["string", "null"]},
                "prefix": {"type": "string", "description": "The first characters of the key, to recognise it."},
                "connections": nullable(json!({"type": "array", "items": {"type": "string"},
                    "description": "Ids of the connections the key may use (keys created before scopes were resolved may hold names); null: every connection."})),
                "createdAt": date_time(), "expiresAt": nullable(date_time()),
                "revokedAt": nullable(date_time()), "lastUsedAt": nullable(date_time()),
            },
        },
        "ApiKeyCreated": {"allOf": [sref("ApiKey"), {"type": "object", "required": ["key"],
            "properties": {"key": {"type": "string", "pattern": "^vmx_sk_"}}}]},
        "ApiKeyList": {"type": "object", "required": ["data", "nextCursor"], "properties": {
            "data": {"type": "array", "items": sref("ApiKey")}, "nextCursor": {"type": ["string", "null"]}}},
        "ModelList": {"type": "object", "required": ["object", "data"], "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object", "required": ["id", "object", "created", "owned_by"],
                "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                    "created": {"type": "integer"}, "owned_by": {"type": "string"}}}},
        }},
    })));
    all.extend(json_map(json!({
        "ChatCompletionRequest": {
            "type": "object",
            "description": "OpenAI's Chat Completions body; fields vmx does not read go to the provider.",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "pattern": "^[^/]+/.+$", "description": "<connection name or id>/<provider model id>"},
                "messages": {"type": "array", "minItems": 1, "description": "At most 2048 (the gateway's limit).", "items": {"type": "object",
                    "required": ["role"], "properties": {"role": {"type": "string", "minLength": 1}}}},
                "stream": {"type": ["boolean", "null"]},
                "stream_options": {"type": ["object", "null"], "properties": {"include_usage": {"type": "boolean"}}},
                "max_tokens": {"type": ["integer", "null"], "minimum": 1},
                "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1},
            },
            "example": {"model": "prod-openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
        },
        "ChatCompletion": {"type": "object", "required": ["choices"], "properties": {
            "id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": ["object", "null"]},
        }},
        "MessagesRequest": {
            "type": "object",
            "description": "Anthropic's Messages body, passed through unchanged but for `model`.",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "pattern": "^[^/]+/.+$", "description": "<connection name or id>/<provider model id>"},
                "messages": {"type": "array", "minItems": 1, "description": "At most 2048 (the gateway's limit).", "items": {"type": "object"}},
                "max_tokens": {"type": "integer", "minimum": 1},
                "stream": {"type": ["boolean", "null"]},
            },
            "example": {"model": "prod-claude/claude-sonnet-4-5", "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Hello"}]},
        },
        "Message": {"type": "object", "required": ["type", "content"], "properties": {
            "id": {"type": "string"}, "type": {"const": "message"}, "role": {"type": "string"},
            "model": {"type": "string"}, "content": {"type": "array", "items": {"type": "object"}},
            "stop_reason": {"type": ["string", "null"]}, "usage": {"type": "object"},
        }},
    })));
    Value::Object(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_exactly_one_schema_entry_and_every_entry_a_route() {
        let table: Vec<_> = route_table().into_iter().filter(documented).collect();
        let ops = operations();
        for route in &table {
            for m in route.methods {
                let n = ops
                    .iter()
                    .filter(|o| o.path == route.path && o.method == *m)
                    .count();
                assert_eq!(
                    n, 1,
                    "{m} {}: write its entry in openapi::operations",
                    route.path
                );
            }
        }
        for o in &ops {
            assert!(
                table
                    .iter()
                    .any(|r| r.path == o.path && r.methods.contains(&o.method)),
                "{} {} is documented but not routed",
                o.method,
                o.path
            );
        }
    }

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_is_consistent() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {r}"
            );
        }
        let mut ops = 0;
        for route in route_table().into_iter().filter(documented) {
            for m in route.methods {
                let op = &doc["paths"][route.path][m.to_ascii_lowercase()];
                ops += 1;
                assert!(op["operationId"].is_string(), "{m} {}", route.path);
                let responses = op["responses"].as_object().unwrap();
                assert!(
                    responses.keys().any(|k| k.starts_with('2')),
                    "{m} {}",
                    route.path
                );
                let secured = !op["security"].as_array().unwrap().is_empty();
                assert_eq!(secured, route.access != Access::Public);
                if secured {
                    assert!(responses.contains_key("401"));
                }
                for p in route.path.split('/').filter(|s| s.starts_with('{')) {
                    let name = &p[1..p.len() - 1];
                    assert!(
                        op["parameters"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x["name"] == name && x["in"] == "path"),
                        "{m} {}: path parameter {name}",
                        route.path
                    );
                }
            }
        }
        assert!(ops >= 18);
        // operationIds are unique.
        let mut ids: Vec<String> = operations()
            .iter()
            .map(|o| o.value["operationId"].as_str().unwrap().to_owned())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
        // Every link names a documented operation.
        for o in operations() {
            for r in o.value["responses"].as_object().unwrap().values() {
                for l in r["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    let target = l["operationId"].as_str().unwrap();
                    assert!(ids.iter().any(|i| i == target), "link to {target}");
                }
            }
        }
    }

    /// The Error schema's required fields are what `ApiError::body` produces.
    #[test]
    fn the_error_schema_matches_error_bodies() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["Error"];
        let required: Vec<&str> = schema["properties"]["error"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for e in [
            crate::error::ApiError::Unauthorized,
            crate::error::ApiError::bad_request("capacity[0].period", "x"),
            crate::error::ApiError::PayloadTooLarge { limit: 1 },
            crate::error::ApiError::MethodNotAllowed,
        ] {
            let body = e.body();
            assert_eq!(body["type"], "error");
            for k in &required {
                assert!(body["error"].get(*k).is_some(), "{k} in {body}");
            }
        }
    }
}
