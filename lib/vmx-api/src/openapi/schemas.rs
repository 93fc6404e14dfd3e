//! The component schemas every operation refers to.

use serde_json::{Map, Value, json};
use vmx_domain::provider::ProviderKind;

use super::{json_map, provider_ids, sref};

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Component schemas.
pub(super) fn schemas() -> Value {
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
    // One metric of a pool in a window (null but `used` when the window does not limit it).
    let int_or_null = json!({"type": ["integer", "null"]});
    let pool_metric = json!({"type": "object", "additionalProperties": false,
        "required": ["min", "max", "used", "allocation", "remaining"], "properties": {
        "min": int_or_null, "max": int_or_null, "used": {"type": "integer", "minimum": 0},
        "allocation": {"type": ["integer", "null"], "description": "What the pool has used plus what it may still add now: the poolAllocation a 429 would report."},
        "remaining": {"type": ["integer", "null"], "description": "What the pool may still add now."}}});
    let pool_usage = json!({"type": "object", "additionalProperties": false,
    "required": ["name", "rank", "minReservation", "maxReservation", "active", "requests", "tokens"],
    "properties": {
        "name": {"type": "string", "description": "A pool of the definition, or 'default' (the keys in no pool, the admin token)."},
        "rank": {"type": ["integer", "null"], "description": "Null for 'default', which ranks after every pool."},
        "minReservation": {"type": "integer", "minimum": 0, "maximum": 100},
        "maxReservation": {"type": "integer", "minimum": 1, "maximum": 100},
        "active": {"type": "boolean", "description": "It has a counter in this window or in the previous one: its unused minimum is held back from the other pools."},
        "requests": pool_metric, "tokens": pool_metric,
    }});
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
                                "limit": {"type": "integer"},
                                "scope": {"enum": ["connection", "source-ip", "apiKey"], "description": "Whose window: the connection's, one source IP's, or the caller's API key's own (on this connection)."},
                                "sourceIp": {"type": "string"},
                                "apiKeyId": {"type": "string", "description": "With scope apiKey: the key whose own limit was reached."},
                                "pool": {"type": "string"}, "poolAllocation": {"type": "integer"}}},
                        "estimatedPromptTokens": {"type": "integer"},
                        "request_id": {"type": "string", "description": "The request's id, also in the x-request-id response header: the caller's x-request-id when it is 1-128 characters of A-Z a-z 0-9 - _ . : /, else one vmx made."},
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
                    "pools": {"type": "array", "items": pool_usage,
                        "description": "Connection-wide windows, when prioritization pools are defined: each pool's use, 'default' last; min and max are its reservations in the window's units."},
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
                    "apiKeyId": {"type": "string", "description": "groupBy=apiKey only; absent for the admin token's requests."},
                }}},
        }},
        "ApiKeyUsageReport": {"type": "object", "required": ["apiKeyId", "granularity", "from", "to", "data"], "properties": {
            "apiKeyId": {"type": "string"}, "granularity": {"enum": ["hour", "day"]},
            "from": date_time(), "to": date_time(),
            "data": {"type": "array", "description": "One bucket per connection, model and hour or day: the fields of UsageReport's buckets plus connectionId.",
                "items": {"type": "object", "required": ["connectionId", "start", "model", "apiKeyId", "requests"],
                    "properties": {"connectionId": {"type": "string"}, "start": date_time(), "model": {"type": "string"},
                        "apiKeyId": {"type": "string"}, "requests": {"type": "integer"}}}},
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
                "capacity": nullable(json!({"type": "array", "maxItems": vmx_domain::capacity::MAX_ENTRIES, "items": sref("CapacityEntry"),
                    "description": "The key's own limits, same schema as a connection's (without dimension), enforced in the same admission as the connection's windows and applied per connection the key uses."})),
            },
            "example": {"name": "my-app", "connections": ["prod-openai"], "expiresAt": "2030-12-31T00:00:00Z",
                "capacity": [{"period": "minute", "requests": 60, "tokens": 100000}]},
        },
        "ApiKeyPatch": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "capacity": nullable(json!({"type": "array", "maxItems": vmx_domain::capacity::MAX_ENTRIES, "items": sref("CapacityEntry"),
                    "description": "Replaces the key's own limits; null or [] removes them."})),
            },
            "example": {"capacity": [{"period": "minute", "requests": 60, "tokens": 100000}]},
        },
        "ApiKey": {
            "type": "object",
            "required": ["id", "name", "prefix", "connections", "createdAt", "expiresAt", "revokedAt", "lastUsedAt", "capacity"],
            "properties": {
                "id": {"type": "string"}, "name": {"type": ["string", "null"]},
                "prefix": {"type": "string", "description": "The first characters of the key, to recognise it."},
                "connections": nullable(json!({"type": "array", "items": {"type": "string"},
                    "description": "Ids of the connections the key may use (keys created before scopes were resolved may hold names); null: every connection."})),
                "createdAt": date_time(), "expiresAt": nullable(date_time()),
                "revokedAt": nullable(date_time()), "lastUsedAt": nullable(date_time()),
                "capacity": {"type": "array", "items": sref("CapacityEntry"),
                    "description": "The key's own limits (empty: none), applied per connection the key uses; a 429 from one says error.limit.scope apiKey."},
            },
        },
        "Pool": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name", "rank", "apiKeys", "minReservation", "maxReservation"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "maxLength": vmx_domain::prioritization::MAX_POOL_NAME_LEN,
                    "description": "Unique; 'default' is reserved for the keys in no pool."},
                "rank": {"type": "integer", "minimum": 0, "description": "Unique; lower wins the last request when capacity is tight."},
                "apiKeys": {"type": "array", "items": {"type": "string"}, "description": "API key ids; a key is in at most one pool."},
                "minReservation": {"type": "integer", "minimum": 0, "maximum": 100,
                    "description": "Percent of each connection-wide limit protected while the pool is active; the minimums add up to at most 100."},
                "maxReservation": {"type": "integer", "minimum": 1, "maximum": 100,
                    "description": "Percent of each connection-wide limit the pool never exceeds; at least minReservation."},
            },
        },
        "PrioritizationPut": {
            "type": "object",
            "additionalProperties": false,
            "required": ["pools"],
            "properties": {"pools": {"type": "array", "maxItems": vmx_domain::prioritization::MAX_POOLS, "items": sref("Pool")}},
            "example": {"pools": [{"name": "web", "rank": 1, "apiKeys": ["0190c2c4-7c1e-7000-8000-000000000001"], "minReservation": 40, "maxReservation": 100}]},
        },
        "Prioritization": {
            "type": "object",
            "required": ["pools", "defaultPool"],
            "properties": {
                "pools": {"type": "array", "items": sref("Pool")},
                "defaultPool": {"type": "object", "description": "The pool of every key in no pool: minReservation 0, maxReservation 100, ranked last."},
            },
        },
        "ApiKeyCreated": {"allOf": [sref("ApiKey"), {"type": "object", "required": ["key"],
            "properties": {"key": {"type": "string", "pattern": "^vmx_sk_"}}}]},
        "DiscoveredCapacityHistory": {"type": "object", "required": ["connectionId", "data", "nextCursor"], "properties": {
            "connectionId": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object",
                "required": ["at", "model", "period", "metric", "old", "new", "source"],
                "properties": {
                    "at": date_time(), "model": {"type": "string"},
                    "period": {"enum": ["minute", "hour", "day", "week", "month", "lifetime"]},
                    "metric": {"type": "string"},
                    "old": {"type": ["integer", "null"], "minimum": 0},
                    "new": {"type": ["integer", "null"], "minimum": 0},
                    "source": {"enum": ["headers", "refresh"]},
                }}},
            "nextCursor": {"type": ["string", "null"]}}},
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
