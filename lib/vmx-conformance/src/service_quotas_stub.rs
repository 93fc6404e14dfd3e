//! Service Quotas on loopback, for Bedrock's quotas (moto models Service Quotas for `vpc`
//! only): the awsJson 1.1 protocol (`X-Amz-Target: ServiceQuotasV20190624.<Operation>`),
//! `ListServiceQuotas` with `ServiceCode`, `MaxResults` and `NextToken` paging as the API
//! reference describes, and the service's error shape (`__type`, `message`).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::aws_stub::{Seen, Stub};

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "ServiceQuotasV20190624.";

fn error(code: &str, message: &str) -> (u16, String) {
    (400, json!({"__type": code, "message": message}).to_string())
}

/// The `ListServiceQuotas` answer to `request` over `quotas` (name, value), pages of at most
/// `page_size`.
fn list(request: &Seen, quotas: &[(String, f64)], page_size: usize) -> (u16, String) {
    let Ok(body) = serde_json::from_str::<Value>(&request.body) else {
        return error("SerializationException", "body is not JSON");
    };
    if body["ServiceCode"] != "bedrock" {
        return error(
            "NoSuchResourceException",
            "The request failed because the specified service does not exist.",
        );
    }
    let start: usize = match body["NextToken"].as_str() {
        Some(t) => match t.strip_prefix("page-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return error("InvalidPaginationTokenException", "Invalid token"),
        },
        None => 0,
    };
    let max = body["MaxResults"]
        .as_u64()
        .map_or(page_size, |m| (m as usize).min(page_size))
        .max(1);
    let end = (start + max).min(quotas.len());
    let page: Vec<Value> = quotas[start.min(end)..end]
        .iter()
        .enumerate()
        .map(|(i, (name, value))| {
            let code = format!("L-{:08X}", start + i);
            json!({
                "ServiceCode": "bedrock",
                "ServiceName": "Amazon Bedrock",
                "QuotaArn": format!("arn:aws:servicequotas:us-east-1:123456789012:bedrock/{code}"),
                "QuotaCode": code,
                "QuotaName": name,
                "Value": value,
                "Unit": "None",
                "Adjustable": true,
                "GlobalQuota": false,
            })
        })
        .collect();
    let mut out = json!({ "Quotas": page });
    if end < quotas.len() {
        out["NextToken"] = json!(format!("page-{end}"));
    }
    (200, out.to_string())
}

/// A Service Quotas endpoint listing `quotas` for service code `bedrock`.
pub async fn start(quotas: Vec<(String, f64)>, page_size: usize) -> Stub {
    let quotas = Arc::new(quotas);
    Stub::with_handler(
        CONTENT_TYPE,
        Arc::new(move |r: &Seen| match r.target.strip_prefix(TARGET_PREFIX) {
            Some("ListServiceQuotas") => list(r, &quotas, page_size),
            _ => error("UnknownOperationException", "unknown operation"),
        }),
    )
    .await
}

/// A Service Quotas endpoint that denies every call, as for a role without the permission.
pub async fn access_denied() -> Stub {
    Stub::with_handler(
        CONTENT_TYPE,
        Arc::new(|_: &Seen| {
            error(
                "AccessDeniedException",
                "User: arn:aws:sts::123456789012:assumed-role/vmx-bedrock-access/vmx-0 is not authorized to perform: servicequotas:ListServiceQuotas",
            )
        }),
    )
    .await
}
