//! The EventBridge notifier at moto: a rule on a fresh bus sends vmx's events to an SQS
//! queue, and the queue holds exactly the events of the changes told.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::Target;
use serde_json::{Value, json};
use time::OffsetDateTime;
use vmx_aws::EventBridgeNotifier;
use vmx_domain::capacity::Period;
use vmx_domain::discovered::{ChangeNotifier, ChangeSource, DiscoveredChange};

#[allow(unused_imports)]
use common::Stub as _;
use common::{env_config, moto};

/// One call of SQS's JSON protocol at moto (the SDK's SQS crate is not a dependency).
async fn sqs(endpoint: &str, action: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(endpoint)
        .header("X-Amz-Target", format!("AmazonSQS.{action}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .expect("SQS call");
    let status = response.status();
    let text = response.text().await.expect("SQS body");
    assert!(status.is_success(), "SQS {action}: {status} {text}");
    serde_json::from_str(&text).expect("SQS JSON")
}

fn change(model: &str, metric: &str, old: Option<u64>, new: Option<u64>) -> DiscoveredChange {
    DiscoveredChange {
        at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        model: model.to_owned(),
        period: Period::Minute,
        metric: metric.to_owned(),
        old,
        new,
        source: ChangeSource::Headers,
    }
}

#[tokio::test]
async fn put_events_reach_a_rule_target_with_the_change() {
    let Some(endpoint) = moto("put_events_reach_a_rule_target_with_the_change") else {
        return;
    };
    let client = Client::new(&env_config().await);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let bus = format!("vmx-test-{suffix}");
    client.create_event_bus().name(&bus).send().await.unwrap();
    let queue = format!("vmx-events-{suffix}");
    let created = sqs(&endpoint, "CreateQueue", json!({"QueueName": queue})).await;
    let queue_url = created["QueueUrl"].as_str().expect("QueueUrl").to_owned();
    let attributes = sqs(
        &endpoint,
        "GetQueueAttributes",
        json!({"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]}),
    )
    .await;
    let queue_arn = attributes["Attributes"]["QueueArn"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .put_rule()
        .name("discovered-capacity")
        .event_bus_name(&bus)
        .event_pattern(
            json!({"source": ["vmx"], "detail-type": ["DiscoveredCapacityChanged"]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    client
        .put_targets()
        .rule("discovered-capacity")
        .event_bus_name(&bus)
        .targets(
            Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let notifier = EventBridgeNotifier::new(client.clone(), &bus);
    // Twelve changes: two PutEvents calls (ten entries at most per call).
    let mut changes = vec![
        change("gpt-4o", "requests", Some(500), Some(400)),
        change("gpt-4o", "tokens", None, Some(30_000)),
    ];
    changes.extend((0..10).map(|i| change(&format!("m{i}"), "requests", Some(i), None)));
    notifier
        .discovered_changed("0190-id", "prod-openai", &changes)
        .await
        .expect("PutEvents");

    let mut details = Vec::new();
    for _ in 0..20 {
        let received = sqs(
            &endpoint,
            "ReceiveMessage",
            json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1}),
        )
        .await;
        let messages = received["Messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            let event: Value = serde_json::from_str(m["Body"].as_str().unwrap()).unwrap();
            assert_eq!(event["source"], "vmx");
            assert_eq!(event["detail-type"], "DiscoveredCapacityChanged");
            details.push(event["detail"].clone());
        }
        if details.len() >= changes.len() {
            break;
        }
    }
    assert_eq!(
        details.len(),
        changes.len(),
        "one event per change: {details:?}"
    );
    let first = details
        .iter()
        .find(|d| d["model"] == "gpt-4o" && d["metric"] == "requests")
        .expect("the gpt-4o requests change");
    assert_eq!(
        first,
        &json!({
            "connectionId": "0190-id", "connectionName": "prod-openai", "model": "gpt-4o",
            "period": "minute", "metric": "requests", "old": 500, "new": 400,
            "at": "2027-01-15T08:00:00Z", "source": "headers",
        })
    );
    let added = details
        .iter()
        .find(|d| d["metric"] == "tokens")
        .expect("the tokens change");
    assert_eq!(
        (added["old"].clone(), added["new"].clone()),
        (Value::Null, json!(30_000))
    );
}

#[tokio::test]
async fn an_unknown_bus_is_an_error_not_a_panic() {
    let Some(_) = moto("an_unknown_bus_is_an_error_not_a_panic") else {
        return;
    };
    let client = Client::new(&env_config().await);
    let notifier = EventBridgeNotifier::new(client, "vmx-no-such-bus");
    let result = notifier
        .discovered_changed("id", "name", &[change("m", "requests", None, Some(1))])
        .await;
    assert!(result.is_err(), "{result:?}");
}
