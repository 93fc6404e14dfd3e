//! Bedrock limits refreshed from Service Quotas: the refresh function fed the sample schedule
//! event assumes each connection's role at moto's STS (DynamoDB and KMS at moto too) and lists
//! the account's Bedrock quotas at a Service Quotas stub (moto models Service Quotas for `vpc`
//! only), signed with the role's credentials in the connection's region.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod moto_setup;

use std::time::Duration;

use serde_json::{Value, json};
use vmx_aws::service_quotas::ServiceQuotasOptions;
use vmx_conformance::aws_stub::Stub;
use vmx_conformance::service_quotas_stub;
use vmx_domain::capacity::Period;

const ROLE: &str = "arn:aws:iam::123456789012:role/vmx-bedrock-access";
const SONNET_V2: &str = "anthropic.claude-3-5-sonnet-20241022-v2:0";
const SONNET_V2_PROFILE: &str = "us.anthropic.claude-3-5-sonnet-20241022-v2:0";
const NOVA: &str = "amazon.nova-pro-v1:0";

fn quotas() -> Vec<(String, f64)> {
    [
        (
            "On-demand InvokeModel requests per minute for Anthropic Claude 3.5 Sonnet V2",
            250.0,
        ),
        (
            "On-demand InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2",
            2_000_000.0,
        ),
        (
            "Cross-Region InvokeModel tokens per minute for Anthropic Claude 3.5 Sonnet V2",
            4_000_000.0,
        ),
        (
            "Cross-region model inference requests per minute for Anthropic Claude 3.5 Sonnet V2",
            500.0,
        ),
        ("APIs per second for ListFoundationModels", 10.0),
        (
            "On-demand model inference requests per minute for Anthropic Claude 3.5 Sonnet",
            50.0,
        ),
        (
            "Batch inference job size (in GB) for Anthropic Claude 3.5 Sonnet V2",
            1.0,
        ),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect()
}

use moto_setup::{Aws as Setup, schedule_event};

async fn setup(test: &str) -> Option<Setup> {
    moto_setup::aws(test, &[]).await
}

async fn bedrock(s: &Setup, name: &str, models: &[&str]) -> String {
    s.admin
        .create(&json!({
            "name": name,
            "provider": "aws-bedrock",
            "config": {"region": "us-west-2", "iamRoleArn": ROLE, "externalId": "vmx-team-ext-1"},
            "allowedModels": models,
        }))
        .await
        .unwrap()
        .id
}

fn function(s: &Setup, stub: &Stub) -> vmx_fn_refresh::Function {
    let options = ServiceQuotasOptions {
        endpoint_url: Some(stub.url.clone()),
        page_size: 3,
        ..ServiceQuotasOptions::default()
    };
    vmx_fn_refresh::Function::new(&s.config, s.sdk.clone(), options).unwrap()
}

fn limits(m: &vmx_domain::connection::DiscoveredModel) -> Vec<(Period, String, u64)> {
    m.capacity
        .iter()
        .map(|l| (l.period, l.metric.clone(), l.limit))
        .collect()
}

#[tokio::test]
async fn bedrock_limits_come_from_service_quotas_through_the_role() {
    let Some(s) = setup("bedrock_limits_come_from_service_quotas_through_the_role").await else {
        return;
    };
    let stub = service_quotas_stub::start(quotas(), 3).await;
    let a = bedrock(&s, "bedrock-a", &[SONNET_V2, NOVA]).await;
    let b = bedrock(&s, "bedrock-b", &[SONNET_V2_PROFILE]).await;
    let f = function(&s, &stub);
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.connections, 2, "{report:?}");
    assert_eq!(report.refreshed, 2, "{report:?}");
    assert_eq!(report.failed, 1, "NOVA has no quota: {report:?}");

    let a = s.admin.get(&a).await.unwrap();
    let sonnet = &a.discovered_capacity.models[SONNET_V2];
    assert!(sonnet.error_message.is_none(), "{sonnet:?}");
    assert_eq!(
        limits(sonnet),
        vec![
            (Period::Minute, "requests".to_owned(), 250),
            (Period::Minute, "tokens".to_owned(), 2_000_000)
        ]
    );
    let nova = &a.discovered_capacity.models[NOVA];
    let msg = nova.error_message.as_deref().unwrap();
    assert!(msg.contains(NOVA) && msg.contains("us-west-2"), "{msg}");
    assert!(nova.capacity.is_empty());

    let b = s.admin.get(&b).await.unwrap();
    assert_eq!(
        limits(&b.discovered_capacity.models[SONNET_V2_PROFILE]),
        vec![
            (Period::Minute, "requests".to_owned(), 500),
            (Period::Minute, "tokens".to_owned(), 4_000_000)
        ],
        "an inference profile takes the cross-Region quotas"
    );

    // One listing for the account (7 quotas, pages of 3), shared by both connections of the
    // same role, external id and region (the cache is keyed as role credentials are, so a
    // connection with another external id never reads a listing it could not make itself); every page signed with the assumed role in the connection's
    // region, never with vmx's own credentials.
    let seen = stub.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for r in &seen {
        assert_eq!(r.target, "ServiceQuotasV20190624.ListServiceQuotas");
        assert!(
            r.authorization
                .contains("/us-west-2/servicequotas/aws4_request"),
            "{}",
            r.authorization
        );
        assert!(
            !r.authorization.contains("Credential=testing/"),
            "signed with the role's credentials: {}",
            r.authorization
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["ServiceCode"], "bedrock");
    }

    // The next run finds the limits fresh and calls nothing; the failed model is retried.
    let again = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(again.skipped_fresh, 2, "{again:?}");
    assert_eq!(again.failed, 1, "{again:?}");
    assert_eq!(
        stub.seen().len(),
        3,
        "the listing is cached for the run window"
    );
}

#[tokio::test]
async fn a_role_without_service_quotas_access_is_recorded_not_fatal() {
    let Some(s) = setup("a_role_without_service_quotas_access_is_recorded_not_fatal").await else {
        return;
    };
    let stub = service_quotas_stub::access_denied().await;
    let id = bedrock(&s, "bedrock-denied", &[SONNET_V2]).await;
    let f = function(&s, &stub);
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert!(report.resume_after.is_none(), "the run completed");
    let c = s.admin.get(&id).await.unwrap();
    let msg = c.discovered_capacity.models[SONNET_V2]
        .error_message
        .clone()
        .unwrap();
    assert!(msg.contains("servicequotas:ListServiceQuotas"), "{msg}");
    assert!(
        !msg.contains("assumed-role") && !msg.contains("123456789012"),
        "no AWS principal in the stored message: {msg}"
    );
    assert!(stub.requests() >= 1);
}
