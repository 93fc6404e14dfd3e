#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::*;

const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks one line against the EMF specification's document structure: a JSON object whose
/// `_aws` has a numeric `Timestamp` and `CloudWatchMetrics` directives, each with a
/// `Namespace`, `Dimensions` (arrays of at most 30 keys, every key a string member of the
/// root) and `Metrics` (at most 100 definitions with a `Name` that is a numeric root member
/// and a valid `Unit`). Returns the document.
fn check_emf(line: &str) -> Value {
    let doc: Value = serde_json::from_str(line).expect("one JSON object per line");
    let root = doc.as_object().expect("root object");
    let aws = root["_aws"].as_object().expect("_aws object");
    assert!(aws["Timestamp"].is_u64(), "Timestamp in ms: {line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty());
    for d in directives {
        let d = d.as_object().expect("directive object");
        let ns = d["Namespace"].as_str().expect("namespace");
        assert!(!ns.is_empty() && ns.len() <= 1024 && !ns.contains(':'));
        for set in d["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set is an array");
            assert!(set.len() <= 30);
            for key in set {
                let key = key.as_str().expect("dimension key");
                let value = root.get(key).and_then(Value::as_str);
                assert!(
                    value.is_some_and(|v| !v.is_empty() && v.len() <= 1024),
                    "dimension {key} must be a non-empty string member of the root: {line}"
                );
            }
        }
        let metrics = d["Metrics"].as_array().expect("metric definitions");
        assert!(!metrics.is_empty() && metrics.len() <= 100);
        for m in metrics {
            let name = m["Name"].as_str().expect("metric name");
            assert!(
                root.get(name).is_some_and(Value::is_number),
                "metric {name} must be a number at the root: {line}"
            );
            let unit = m["Unit"].as_str().expect("unit");
            assert!(UNITS.contains(&unit), "unit {unit}");
        }
    }
    doc
}

fn capture() -> (Metrics, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let metrics = Metrics::emf_to(Box::new(move |l: &str| {
        sink.lock().unwrap().push(l.to_owned());
    }));
    (metrics, lines)
}

/// The (dimension sets, metric names) of each directive.
fn directives(doc: &Value) -> Vec<(Vec<Vec<String>>, Vec<String>)> {
    doc["_aws"]["CloudWatchMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let sets = serde_json::from_value(d["Dimensions"].clone()).unwrap();
            let names = d["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap().to_owned())
                .collect();
            (sets, names)
        })
        .collect()
}

fn ok_request() -> Inference<'static> {
    Inference {
        connection_id: "conn_1",
        provider: "openai",
        model: "gpt-4o-mini",
        prompt_tokens: 12,
        completion_tokens: 30,
        latency: Duration::from_millis(250),
        ttft: Some(Duration::from_millis(40)),
        utilization_percent: Some(75.0),
        request_id: Some("req_a"),
        ..Inference::default()
    }
}

#[test]
fn a_successful_request_is_one_emf_line_with_its_values_and_dimensions() {
    let (metrics, lines) = capture();
    metrics.record(&ok_request());
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1);
    let doc = check_emf(&lines[0]);
    assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "vmx");
    assert_eq!(doc["connection"], "conn_1");
    assert_eq!(doc["provider"], "openai");
    assert_eq!(doc["model"], "gpt-4o-mini");
    assert_eq!(doc["request_id"], "req_a");
    assert_eq!(doc["requests"], 1);
    assert_eq!(doc["prompt_tokens"], 12);
    assert_eq!(doc["completion_tokens"], 30);
    assert_eq!(doc["latency_ms"], 250);
    assert_eq!(doc["ttft_ms"], 40);
    assert_eq!(doc["utilization_percent"], 75.0);
    assert!(doc.get("errors").is_none() && doc.get("throttled").is_none());
    let d = directives(&doc);
    assert_eq!(
        d[0],
        (
            vec![
                vec!["connection".to_owned(), "provider".to_owned()],
                vec!["connection".to_owned(), "model".to_owned()],
                vec![],
            ],
            [
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "latency_ms",
                "ttft_ms"
            ]
            .map(str::to_owned)
            .to_vec()
        )
    );
    assert_eq!(d[1].1, vec!["utilization_percent".to_owned()]);
    let units: Vec<_> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Unit"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        units,
        ["Count", "Count", "Count", "Milliseconds", "Milliseconds"]
    );
}

#[test]
fn a_capacity_429_is_counted_as_throttled_by_limit_kind_and_as_an_error() {
    let (metrics, lines) = capture();
    metrics.record(&Inference {
        error_class: Some("capacity_exceeded"),
        limit_kind: Some("requests_per_minute".to_owned()),
        ttft: None,
        utilization_percent: None,
        prompt_tokens: 0,
        completion_tokens: 0,
        ..ok_request()
    });
    let doc = check_emf(&lines.lock().unwrap()[0]);
    assert_eq!(doc["errors"], 1);
    assert_eq!(doc["error_class"], "capacity_exceeded");
    assert_eq!(doc["throttled"], 1);
    assert_eq!(doc["limit_kind"], "requests_per_minute");
    assert!(doc.get("ttft_ms").is_none());
    let d = directives(&doc);
    let names: Vec<_> = d.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        names,
        vec![
            [
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "latency_ms"
            ]
            .map(str::to_owned)
            .to_vec(),
            vec!["errors".to_owned()],
            vec!["throttled".to_owned()],
        ]
    );
    assert!(d[1].0.contains(&vec!["error_class".to_owned()]));
    assert!(d[2].0.contains(&vec![]));
}

#[test]
fn a_backing_service_failure_is_an_error_by_class_alone() {
    let (metrics, lines) = capture();
    metrics.record_backing_error("dynamodb");
    let doc = check_emf(&lines.lock().unwrap()[0]);
    assert_eq!(doc["error_class"], "dynamodb");
    assert_eq!(doc["errors"], 1);
    assert_eq!(
        directives(&doc),
        vec![(
            vec![vec!["error_class".to_owned()]],
            vec!["errors".to_owned()]
        )]
    );
}

#[test]
fn backing_error_classes_come_from_the_adapter_named_in_the_detail() {
    use vmx_domain::Error as E;
    let class = |e: E| backing_error_class(&e);
    assert_eq!(
        class(E::unavailable(Some(1), "DynamoDB UpdateItem: Throttling")),
        Some("dynamodb")
    );
    assert_eq!(class(E::internal("KMS Decrypt: Boom")), Some("kms"));
    assert_eq!(class(E::Crypto { detail: "x".into() }), Some("kms"));
    assert_eq!(class(E::internal("redb: io")), Some("internal"));
    assert_eq!(class(E::unavailable(None, "other")), Some("unavailable"));
    assert_eq!(class(E::invalid("name", "bad")), None);
    assert_eq!(class(E::NotFound { what: "connection" }), None);
}

#[test]
fn models_are_bounded_by_allowed_models_or_the_first_distinct_ones() {
    let (metrics, lines) = capture();
    let allowed = vec!["a".to_owned()];
    for model in ["a", "b"] {
        metrics.record(&Inference {
            model,
            allowed_models: Some(&allowed),
            ..ok_request()
        });
    }
    let names: Vec<String> = (0..=MODELS_PER_CONNECTION)
        .map(|n| format!("m{n}"))
        .collect();
    for model in &names {
        metrics.record(&Inference {
            connection_id: "conn_2",
            model,
            ..ok_request()
        });
    }
    // A model seen before keeps its name after the bound is reached.
    metrics.record(&Inference {
        connection_id: "conn_2",
        model: "m0",
        ..ok_request()
    });
    let models: Vec<String> = lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| check_emf(l)["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&models[..2], ["a", "other"]);
    assert_eq!(models[2], "m0");
    assert_eq!(models[1 + MODELS_PER_CONNECTION], "m19");
    assert_eq!(models[2 + MODELS_PER_CONNECTION], "other");
    assert_eq!(models[3 + MODELS_PER_CONNECTION], "m0");
}

#[test]
fn prometheus_text_counts_with_the_same_names_and_labels() {
    let metrics = Metrics::prometheus();
    metrics.record(&ok_request());
    metrics.record(&Inference {
        error_class: Some("upstream"),
        ..ok_request()
    });
    metrics.record_backing_error("kms");
    let text = metrics.prometheus_text().unwrap();
    assert!(text.contains(
        "vmx_requests_total{connection=\"conn_1\",provider=\"openai\",model=\"gpt-4o-mini\"} 2"
    ));
    assert!(text.contains(
        "vmx_errors_total{connection=\"conn_1\",provider=\"openai\",error_class=\"upstream\"} 1"
    ));
    assert!(text.contains("vmx_errors_total{connection=\"\",provider=\"\",error_class=\"kms\"} 1"));
    assert!(text.contains("vmx_prompt_tokens_total{connection=\"conn_1\",provider=\"openai\",model=\"gpt-4o-mini\"} 24"));
    assert!(text.contains("vmx_latency_ms_count{"));
    assert!(
        text.contains("vmx_utilization_percent{connection=\"conn_1\",provider=\"openai\"} 75.0")
    );
    assert!(text.ends_with("# EOF\n"));
    assert_eq!(Metrics::emf_to(Box::new(|_| {})).prometheus_text(), None);
}

#[test]
fn utilization_is_the_fullest_window_of_the_admission() {
    use time::OffsetDateTime;
    use vmx_domain::admission::{Counters, PlannedWindow, Reservation, Scope, WindowState};
    use vmx_domain::capacity::Window;
    let window = |requests, tokens, used: Counters| WindowState {
        window: PlannedWindow {
            period: Period::Minute,
            scope: Scope::Connection,
            window: Window {
                key: "m".to_owned(),
                start: 0,
                end: Some(60),
            },
            requests,
            tokens,
        },
        used,
    };
    let admitted = Admitted {
        reservation: Reservation {
            connection_id: "conn_1".to_owned(),
            windows: vec![],
            prompt_tokens: 0,
            output_tokens: 0,
            pool: None,
        },
        windows: vec![
            window(
                Some(10),
                None,
                Counters {
                    requests: 2,
                    tokens: 0,
                },
            ),
            window(
                None,
                Some(1000),
                Counters {
                    requests: 0,
                    tokens: 900,
                },
            ),
        ],
        at: OffsetDateTime::UNIX_EPOCH,
        config_version: None,
    };
    assert_eq!(utilization_percent(&admitted), Some(90.0));
    let unlimited = Admitted {
        windows: vec![],
        ..admitted
    };
    assert_eq!(utilization_percent(&unlimited), None);
}
