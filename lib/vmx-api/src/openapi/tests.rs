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
