//! The refresh function fed the sample EventBridge schedule event, against moto (DynamoDB,
//! KMS) and stub providers: limits refreshed, a failing connection recorded without stopping
//! the run, fresh limits skipped, and a run cut short by its deadline resumed by the next.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod moto_setup;

use std::time::Duration;

use aws_config::SdkConfig;
use moto_setup::schedule_event;
use serde_json::{Value, json};
use vmx_api::config::Config;
use vmx_api::service::ConnectionService;
use vmx_domain::provider::ProviderKind;
use vmx_providers::testing::StubServer;

struct Setup {
    config: Config,
    sdk: SdkConfig,
    admin: std::sync::Arc<ConnectionService>,
    _stub: StubServer,
}

async fn setup(test: &str, probe: bool) -> Option<Setup> {
    let stub = StubServer::start(ProviderKind::OpenAi).await;
    let aws = moto_setup::aws(
        test,
        &[
            ("VMX_OPENAI_BASE_URL", stub.base_url.clone()),
            ("VMX_REFRESH_PROBE", probe.to_string()),
        ],
    )
    .await?;
    Some(Setup {
        config: aws.config,
        sdk: aws.sdk,
        admin: aws.admin,
        _stub: stub,
    })
}

async fn create(s: &Setup, name: &str, key: &str, models: Value) -> String {
    let c = s
        .admin
        .create(&json!({"name": name, "provider": "openai", "config": {"apiKey": key}, "allowedModels": models}))
        .await
        .unwrap();
    c.id
}

#[tokio::test]
async fn a_scheduled_run_refreshes_limits_and_records_failures() {
    let Some(s) = setup(
        "a_scheduled_run_refreshes_limits_and_records_failures",
        true,
    )
    .await
    else {
        return;
    };
    let good = create(&s, "good", "sk-good", json!(["gpt-4o-mini", "gpt-4o"])).await;
    let bad = create(&s, "bad", "invalid-key", json!(["gpt-4o-mini"])).await;
    create(&s, "no-models", "sk-x", json!(null)).await;
    let f = vmx_fn_refresh::Function::new(&s.config, s.sdk.clone(), Default::default()).unwrap();
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.connections, 3);
    assert_eq!(report.refreshed, 2, "{report:?}");
    assert_eq!(
        report.failed, 1,
        "one connection's failure does not stop the run"
    );
    assert_eq!(report.skipped_no_models, 1);
    assert!(report.resume_after.is_none());
    let g = s.admin.get(&good).await.unwrap();
    let m = &g.discovered_capacity.models["gpt-4o"];
    assert!(m.error_message.is_none());
    assert!(
        m.capacity
            .iter()
            .any(|l| l.metric == "requests" && l.limit == 5000)
    );
    let b = s.admin.get(&bad).await.unwrap();
    let msg = b.discovered_capacity.models["gpt-4o-mini"]
        .error_message
        .clone()
        .unwrap();
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("invalid-key"), "no key in the stored message");
    // Fresh limits are not probed again.
    let again = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(again.skipped_fresh, 2, "{again:?}");
    assert_eq!(again.refreshed, 0);
}

#[tokio::test]
async fn probing_is_opt_in() {
    let Some(s) = setup("probing_is_opt_in", false).await else {
        return;
    };
    create(&s, "c", "sk-good", json!(["gpt-4o"])).await;
    let f = vmx_fn_refresh::Function::new(&s.config, s.sdk.clone(), Default::default()).unwrap();
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.skipped_probe_disabled, 1);
    assert_eq!(report.refreshed, 0);
}

#[tokio::test]
async fn a_run_out_of_time_resumes_where_it_stopped() {
    let Some(s) = setup("a_run_out_of_time_resumes_where_it_stopped", true).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(create(&s, &format!("c{i}"), "sk-good", json!(["gpt-4o"])).await);
    }
    let f = vmx_fn_refresh::Function::new(&s.config, s.sdk.clone(), Default::default()).unwrap();
    let cursor = vmx_aws::refresh_cursor::RefreshCursor::new(
        aws_sdk_dynamodb::Client::new(&s.sdk),
        s.config.table_name.clone().unwrap(),
    );
    // A run with no time beyond the safety margin starts nothing and keeps the cursor.
    cursor.save(Some(&ids[0])).await.unwrap();
    let none = f
        .handle(schedule_event(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(none.connections, 0);
    assert_eq!(none.resume_after.as_deref(), Some(ids[0].as_str()));
    assert_eq!(
        cursor.load().await.unwrap().as_deref(),
        Some(ids[0].as_str())
    );
    // The next run resumes after c0, finishes, and clears the cursor.
    let rest = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(rest.connections, 2, "{rest:?}");
    assert!(rest.resume_after.is_none());
    assert_eq!(cursor.load().await.unwrap(), None);
    assert!(
        s.admin
            .get(&ids[0])
            .await
            .unwrap()
            .discovered_capacity
            .models
            .is_empty()
    );
    assert!(
        !s.admin
            .get(&ids[2])
            .await
            .unwrap()
            .discovered_capacity
            .models
            .is_empty()
    );
}

#[tokio::test]
async fn a_run_sweeps_the_counters_of_ended_windows() {
    use vmx_conformance::capacity::{admitted, entry, request};
    use vmx_domain::capacity::Period;
    let Some(s) = setup("a_run_sweeps_the_counters_of_ended_windows", false).await else {
        return;
    };
    let id = s
        .admin
        .create(
            &json!({"name": "swept", "provider": "openai", "config": {"apiKey": "sk-x"},
            "capacity": [{"period": "minute", "requests": 10}]}),
        )
        .await
        .unwrap()
        .id;
    // Traffic ten minutes ago, none since: its minute counters are stale.
    let ledger: std::sync::Arc<dyn vmx_domain::ports::CapacityLedger> =
        std::sync::Arc::new(vmx_aws::dynamo_ledger::DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&s.sdk),
            s.config.table_name.clone().unwrap(),
        ));
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let entries = [entry(Period::Minute, Some(10), None)];
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, past)).await;
    let f = vmx_fn_refresh::Function::new(&s.config, s.sdk.clone(), Default::default()).unwrap();
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        report.counters_swept, 2,
        "r and t of the ended minute: {report:?}"
    );
    assert_eq!(report.sweep_failed, 0);
    let again = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(again.counters_swept, 0, "{again:?}");
}

#[tokio::test]
async fn every_write_is_one_the_refresh_role_allows() {
    use vmx_conformance::capacity::{admitted, entry, request};
    use vmx_domain::capacity::Period;
    let Some(s) = setup("every_write_is_one_the_refresh_role_allows", true).await else {
        return;
    };
    // A connection with limits to refresh and stale counters to sweep.
    let id = s
        .admin
        .create(
            &json!({"name": "all", "provider": "openai", "config": {"apiKey": "sk-all"},
            "allowedModels": ["gpt-4o-mini"], "capacity": [{"period": "minute", "requests": 10}]}),
        )
        .await
        .unwrap()
        .id;
    let ledger: std::sync::Arc<dyn vmx_domain::ports::CapacityLedger> =
        std::sync::Arc::new(vmx_aws::dynamo_ledger::DynamoLedger::new(
            aws_sdk_dynamodb::Client::new(&s.sdk),
            s.config.table_name.clone().unwrap(),
        ));
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(10);
    let entries = [entry(Period::Minute, Some(10), None)];
    admitted(&ledger, &request(&id, &entries, "10.0.0.1", 1, 1, past)).await;
    // The function's calls go through a proxy that records them.
    let proxy =
        vmx_conformance::moto_proxy::SerialProxy::start(s.sdk.endpoint_url().unwrap()).await;
    let sdk = s.sdk.to_builder().endpoint_url(&proxy.url).build();
    let f = vmx_fn_refresh::Function::new(&s.config, sdk, Default::default()).unwrap();
    // One whole run: limits recorded, counters swept, the resume cursor cleared.
    let report = f
        .handle(schedule_event(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(report.refreshed, 1, "{report:?}");
    assert_eq!(report.counters_swept, 2, "{report:?}");
    // Every item written falls under the LeadingKeys of RefreshRole in template.yaml, and
    // every key pattern there is one this run needed.
    vmx_conformance::template::assert_writes_allowed("RefreshRole", &proxy.written_items(), true);
}
