//! The operations: each one's parameters, bodies and responses, keyed by (path, method).

use serde_json::{Map, Value, json};

use super::{bad, err, json_map, ok, provider_ids, sref};

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

fn body(name: &str, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": sref(name)}}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
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
                    query("groupBy", "Buckets per model (default; every key summed) or per model and API key (`apiKeyId` on each bucket; none for the admin token's requests).",
                        json!({"type": "string", "enum": ["model", "apiKey"]})),
                ],
                "responses": {"200": ok("The buckets.", "UsageReport"), "400": bad("from"), "404": id_404("connection")},
            }),
        ),
        op(
            "/v1/connections/{id}/discovered-capacity/history",
            "GET",
            json!({
                "operationId": "getDiscoveredCapacityHistory", "tags": ["connections"],
                "summary": "Every change of a discovered limit (old -> new), newest first",
                "parameters": [
                    query("limit", "Page size (default 50).",
                        json!({"type": "integer", "minimum": 1, "maximum": crate::routes::MAX_PAGE})),
                    query("cursor", "`nextCursor` of the previous page.", json!({"type": "string"})),
                    query("model", "Only this model's changes.",
                        json!({"type": "string", "minLength": 1, "maxLength": vmx_domain::discovered::MODEL_MAX_BYTES})),
                ],
                "responses": {
                    "200": ok("One page of changes.", "DiscoveredCapacityHistory"),
                    "400": bad("cursor"),
                    "404": id_404("connection"),
                },
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
            "PATCH",
            json!({
                "operationId": "updateApiKey", "tags": ["api-keys"],
                "summary": "Replace the key's own capacity (applies at once in this process, within the key cache TTL elsewhere)",
                "requestBody": body("ApiKeyPatch", true),
                "responses": {
                    "200": ok("The key's record.", "ApiKey"),
                    "400": bad("capacity[0].period"),
                    "404": id_404("API key"),
                    "413": err("The body is over the size limit."),
                },
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
            "/v1/api-keys/{id}/usage",
            "GET",
            json!({
                "operationId": "getApiKeyUsage", "tags": ["api-keys"],
                "summary": "The key's usage per connection, model and hour or day",
                "parameters": [
                    query("from", "Start (RFC 3339); default 24 hours (30 days for day) before `to`.",
                        json!({"type": "string", "format": "date-time"})),
                    query("to", "End (RFC 3339); default now.", json!({"type": "string", "format": "date-time"})),
                    query("granularity", "Bucket size (default hour).", json!({"type": "string", "enum": ["hour", "day"]})),
                ],
                "responses": {"200": ok("The buckets.", "ApiKeyUsageReport"), "400": bad("from"), "404": id_404("API key")},
            }),
        ),
        op(
            "/v1/prioritization",
            "GET",
            json!({
                "operationId": "getPrioritization", "tags": ["api-keys"],
                "summary": "The prioritization pools that share every connection's capacity",
                "responses": {"200": ok("The definition (no pools: capacity is not split).", "Prioritization")},
            }),
        ),
        op(
            "/v1/prioritization",
            "PUT",
            json!({
                "operationId": "putPrioritization", "tags": ["api-keys"],
                "summary": "Replace the prioritization pools",
                "requestBody": body("PrioritizationPut", true),
                "responses": {
                    "200": ok("The stored definition.", "Prioritization"),
                    "400": bad("pools[1].minReservation"),
                    "413": err("The body is over the size limit."),
                },
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
        op(
            "/metrics",
            "GET",
            json!({
                "operationId": "metrics", "tags": ["meta"],
                "summary": "Prometheus metrics of this process (local server; Lambda writes CloudWatch EMF)",
                "responses": {
                    "200": {"description": "OpenMetrics text: vmx_requests_total, vmx_errors_total, ...",
                        "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}},
                    "404": err("This process writes its metrics as CloudWatch EMF."),
                },
            }),
        ),
    ]
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
