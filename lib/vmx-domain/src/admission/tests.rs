use super::*;
use serde_json::json;
use time::macros::datetime;

fn entry(period: Period, requests: Option<u64>, tokens: Option<u64>) -> CapacityEntry {
    CapacityEntry {
        period,
        requests,
        tokens,
        enabled: true,
        dimension: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

const NOW: OffsetDateTime = datetime!(2026-11-25 13:45:30 UTC);

fn est(prompt: u64, max_output: u64) -> TokenEstimate {
    TokenEstimate { prompt, max_output }
}

fn planned(entries: &[CapacityEntry], estimate: TokenEstimate) -> AdmitRequest {
    match plan(
        "c1",
        "prod-openai",
        entries,
        ip("203.0.113.7"),
        estimate,
        NOW,
    ) {
        Ok(r) => r,
        Err(r) => panic!("unexpected rejection: {}", r.message()),
    }
}

fn rejected(d: Decision) -> Rejection {
    match d {
        Decision::Reject(r) => r,
        Decision::Charge { tokens } => panic!("admitted with {tokens} tokens"),
    }
}

#[test]
fn plan_keeps_enabled_windows_connection_wide_first() {
    let mut disabled = entry(Period::Hour, Some(1), None);
    disabled.enabled = false;
    let mut per_ip = entry(Period::Minute, Some(5), None);
    per_ip.dimension = Some(Dimension::SourceIp);
    let entries = [
        per_ip,
        entry(Period::Day, None, Some(1000)),
        disabled,
        entry(Period::Minute, Some(100), None),
    ];
    let r = plan(
        "c1",
        "n",
        &entries,
        ip("::ffff:203.0.113.7"),
        est(1, 1),
        NOW,
    )
    .expect("admissible");
    let got: Vec<(Period, Scope)> = r.windows.iter().map(|w| (w.period, w.scope)).collect();
    assert_eq!(
        got,
        vec![
            (Period::Minute, Scope::Connection),
            (Period::Day, Scope::Connection),
            (Period::Minute, Scope::SourceIp(ip("203.0.113.7"))),
        ],
        "disabled entry dropped, IPv4-mapped IP canonicalised"
    );
    assert_eq!(r.windows[0].window, Period::Minute.window(NOW));
    assert!(
        plan("c1", "n", &[], ip("1.1.1.1"), est(1, 1), NOW)
            .expect("no limits")
            .is_unlimited()
    );
}

#[test]
fn output_reservation_is_capped_at_what_remains() {
    let r = planned(&[entry(Period::Minute, None, Some(1000))], est(100, 4096));
    // Empty window: the cap is the limit itself, so a limit below the default output
    // reservation does not lock the connection out.
    assert_eq!(r.optimistic_charge(), Some(1000));
    assert_eq!(
        r.decide(&[Counters {
            requests: 3,
            tokens: 850
        }]),
        Decision::Charge { tokens: 150 }
    );
    // Exactly the prompt still fits (no output room left).
    assert_eq!(
        r.decide(&[Counters {
            requests: 3,
            tokens: 900
        }]),
        Decision::Charge { tokens: 100 }
    );
    let rej = rejected(r.decide(&[Counters {
        requests: 3,
        tokens: 901,
    }]));
    assert_eq!(rej.metric, Metric::Tokens);
    assert_eq!(rej.retry_after_secs, Some(30));
    // A small requested output is not inflated.
    let small = planned(&[entry(Period::Minute, None, Some(1000))], est(100, 20));
    assert_eq!(small.optimistic_charge(), Some(120));
}

#[test]
fn cap_is_the_tightest_token_window() {
    let r = planned(
        &[
            entry(Period::Minute, None, Some(10_000)),
            entry(Period::Day, None, Some(50_000)),
        ],
        est(10, 4096),
    );
    let d = r.decide(&[
        Counters {
            requests: 0,
            tokens: 0,
        },
        Counters {
            requests: 0,
            tokens: 49_000,
        },
    ]);
    assert_eq!(d, Decision::Charge { tokens: 1000 });
}

#[test]
fn prompt_larger_than_a_limit_never_fits() {
    let entries = [
        entry(Period::Minute, None, Some(1000)),
        entry(Period::Hour, None, Some(500)),
    ];
    let rej = plan(
        "c1",
        "prod-openai",
        &entries,
        ip("1.2.3.4"),
        est(800, 10),
        NOW,
    )
    .expect_err("never fits");
    assert_eq!(rej.kind, RejectionKind::NeverFits { prompt_tokens: 800 });
    assert_eq!((rej.period, rej.limit), (Period::Hour, 500));
    assert_eq!(rej.retry_after_secs, None);
    assert_eq!(
        rej.message(),
        "the request's prompt needs an estimated 800 tokens, more than connection \
         'prod-openai' allows per hour (limit 500 tokens), so it can never fit: shorten the \
         prompt or raise the limit"
    );
    assert!(rej.message().contains("never fit"));
    assert_eq!(rej.body()["error"]["estimatedPromptTokens"], json!(800));
    // The prompt exactly at the limit fits.
    assert!(plan("c1", "n", &entries, ip("1.2.3.4"), est(500, 10), NOW).is_ok());
}

#[test]
fn rejection_names_the_window_that_stays_full_longest() {
    let r = planned(
        &[
            entry(Period::Minute, Some(10), Some(1000)),
            entry(Period::Day, Some(100), None),
        ],
        est(1, 1),
    );
    let full = Counters {
        requests: 100,
        tokens: 1000,
    };
    let rej = rejected(r.decide(&[full, full]));
    assert_eq!(
        (rej.period, rej.metric, rej.limit),
        (Period::Day, Metric::Requests, 100)
    );
    let day_end = datetime!(2026-11-26 00:00:00 UTC).unix_timestamp();
    assert_eq!(
        rej.retry_after_secs,
        Some(u64::try_from(day_end - NOW.unix_timestamp()).unwrap_or(0))
    );
    // Only the minute's tokens are full: requests before tokens on the same window.
    let rej = rejected(r.decide(&[
        Counters {
            requests: 10,
            tokens: 1000,
        },
        Counters::default(),
    ]));
    assert_eq!((rej.period, rej.metric), (Period::Minute, Metric::Requests));
}

#[test]
fn messages_and_bodies() {
    let r = planned(&[entry(Period::Minute, Some(100), None)], est(1, 1));
    let rej = r.rejection(0, Metric::Requests);
    assert_eq!(
        rej.message(),
        "connection 'prod-openai' reached its limit of 100 requests per minute"
    );
    assert_eq!(
        rej.body(),
        json!({"error": {"code": "capacity_exceeded",
            "message": "connection 'prod-openai' reached its limit of 100 requests per minute",
            "limit": {"period": "minute", "metric": "requests", "limit": 100, "scope": "connection"}}})
    );
    assert_eq!(rej.retry_after_secs, Some(30));

    let mut per_ip = entry(Period::Hour, None, Some(5000));
    per_ip.dimension = Some(Dimension::SourceIp);
    let r = planned(&[per_ip], est(1, 1));
    let rej = r.rejection(0, Metric::Tokens);
    assert_eq!(
        rej.message(),
        "connection 'prod-openai' reached its limit of 5000 tokens per hour for source IP 203.0.113.7"
    );
    assert_eq!(
        rej.body()["error"]["limit"],
        json!({"period": "hour", "metric": "tokens", "limit": 5000, "scope": "source-ip",
               "sourceIp": "203.0.113.7"})
    );

    let r = planned(&[entry(Period::Lifetime, None, Some(1_000_000))], est(1, 1));
    let rej = r.rejection(0, Metric::Tokens);
    assert_eq!(rej.retry_after_secs, None);
    assert_eq!(
        rej.message(),
        "connection 'prod-openai' reached its lifetime limit of 1000000 tokens; this cap is \
         permanent until the limit is raised"
    );
}

#[test]
fn admitted_headers_use_the_tightest_window() {
    let r = planned(
        &[
            entry(Period::Minute, Some(100), Some(10_000)),
            entry(Period::Hour, Some(1000), None),
            entry(Period::Lifetime, None, Some(1_000_000)),
        ],
        est(10, 90),
    );
    let a = r.admitted(
        100,
        vec![
            Counters {
                requests: 40,
                tokens: 2_000,
            },
            Counters {
                requests: 950,
                tokens: 9_000,
            },
            Counters {
                requests: 5000,
                tokens: 995_000,
            },
        ],
    );
    assert_eq!(a.reservation.tokens(), 100);
    assert_eq!(a.reservation.prompt_tokens, 10);
    assert_eq!(a.reservation.output_tokens, 90);
    let h = a.rate_limit_headers();
    let get = |name: &str| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("1000"));
    assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("50"));
    // 13:45:30 -> 14:00:00.
    assert_eq!(get("x-ratelimit-reset-requests").as_deref(), Some("14m30s"));
    assert_eq!(get("x-ratelimit-limit-tokens").as_deref(), Some("1000000"));
    assert_eq!(get("x-ratelimit-remaining-tokens").as_deref(), Some("5000"));
    assert_eq!(
        get("x-ratelimit-reset-tokens"),
        None,
        "lifetime has no reset"
    );
    assert_eq!(openai_duration(1), "1s");
    assert_eq!(openai_duration(360), "6m0s");
    assert_eq!(openai_duration(3723), "1h2m3s");
}

#[test]
fn reconcile_and_refund_adjustments() {
    let r = planned(&[entry(Period::Minute, Some(5), Some(1000))], est(100, 200));
    let a = r.admitted(300, vec![]);
    let res = &a.reservation;
    assert_eq!(res.reconcile(120).token_delta, -180);
    assert_eq!(res.reconcile(450).token_delta, 150);
    assert!(!res.reconcile(450).refund_request);
    assert_eq!(
        res.refund(),
        Adjustment {
            token_delta: -300,
            refund_request: true
        }
    );
    assert_eq!(res.failed(0), res.refund());
    assert_eq!(res.failed(50), res.reconcile(50));
    assert!(res.reconcile(300).is_noop());
    assert!(res.windows[0].is_live(NOW));
    assert!(!res.windows[0].is_live(datetime!(2026-11-25 13:46:00 UTC)));
    let json = serde_json::to_value(res).expect("serializes");
    assert_eq!(json["windows"][0]["scope"], json!("connection"));
    let back: Reservation = serde_json::from_value(json).expect("round trip");
    assert_eq!(&back, res);
}

#[test]
fn window_key_end_matches_every_period() {
    for at in [
        NOW,
        datetime!(2026-12-31 23:59:59 UTC),
        datetime!(2027-01-01 00:00:00 UTC),
        datetime!(1970-01-01 00:00:00 UTC),
        datetime!(2028-02-29 12:00:00 UTC),
    ] {
        for (_, p) in Period::ALL {
            let w = p.window(at);
            assert_eq!(window_key_end(&w.key), Some(w.end), "{p:?} at {at}");
            if let Some(prev) = previous_window_key(p, at) {
                assert_eq!(window_key_end(&prev), Some(Some(w.start)), "{p:?} at {at}");
            } else {
                assert_eq!(p, Period::Lifetime);
            }
        }
    }
    assert_eq!(window_key_end("x12"), None);
    assert_eq!(window_key_end("m"), None);
    assert_eq!(window_key_end("expiresAt"), None);
}

#[test]
fn prompt_estimates() {
    assert_eq!(estimate_text_tokens(""), 0);
    assert_eq!(estimate_text_tokens("abcd"), 1);
    assert_eq!(estimate_text_tokens("abcde"), 2);
    assert_eq!(
        estimate_prompt_tokens(["abcd", "abcdefgh"]),
        3 + 4 + 1 + 4 + 2
    );
    let body = json!({
        "model": "gpt-4o-mini-with-a-long-model-name-that-is-not-prompt",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "abcdefgh"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}}
            ]}
        ]
    });
    let n = estimate_request_tokens(&body);
    assert!(
        n >= ATTACHMENT_TOKENS + 2 + 2 * MESSAGE_OVERHEAD_TOKENS,
        "{n}"
    );
    assert!(
        n < ATTACHMENT_TOKENS + 100,
        "the image is not counted by size: {n}"
    );
    let anthropic = json!({"system": "be brief", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}]}]});
    assert!(estimate_request_tokens(&anthropic) > ATTACHMENT_TOKENS);
    assert_eq!(estimate_request_tokens(&json!("x")), REPLY_PRIMING_TOKENS);
}

#[test]
fn usage_view_and_top_ips() {
    let mut per_ip = entry(Period::Minute, Some(10), None);
    per_ip.dimension = Some(Dimension::SourceIp);
    let mut off = entry(Period::Day, Some(1), None);
    off.enabled = false;
    let req = UsageRequest::new(
        "c1",
        &[per_ip, entry(Period::Lifetime, None, Some(100)), off],
        500,
        NOW,
    );
    assert_eq!(req.top_n, MAX_TOP_IPS);
    assert_eq!(req.windows.len(), 2);
    assert_eq!(req.windows[0].period, Period::Lifetime);
    let ips = vec![
        IpUsage {
            ip: "10.0.0.1".into(),
            used: Counters {
                requests: 2,
                tokens: 0,
            },
        },
        IpUsage {
            ip: "10.0.0.2".into(),
            used: Counters {
                requests: 7,
                tokens: 0,
            },
        },
    ];
    let top = top_ips(ips, &req.windows[1], 1);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].ip, "10.0.0.2");
    let usage = CapacityUsage {
        connection_id: "c1".into(),
        at: NOW,
        windows: vec![
            WindowUsage {
                window: req.windows[0].clone(),
                used: Counters {
                    requests: 4,
                    tokens: 40,
                },
                top_ips: vec![],
                ip_count: 0,
                pools: vec![],
            },
            WindowUsage {
                window: req.windows[1].clone(),
                used: Counters::default(),
                top_ips: top,
                ip_count: 2,
                pools: vec![],
            },
        ],
    };
    let v = usage.view();
    assert_eq!(v["windows"][0]["scope"], json!("connection"));
    assert_eq!(v["windows"][0]["resetAt"], Value::Null);
    assert_eq!(
        v["windows"][0]["tokens"],
        json!({"limit": 100, "used": 40, "remaining": 60})
    );
    assert_eq!(
        v["windows"][0]["requests"],
        json!({"limit": null, "used": 4})
    );
    assert_eq!(v["windows"][1]["scope"], json!("source-ip"));
    assert_eq!(v["windows"][1]["resetAt"], json!("2026-11-25T13:46:00Z"));
    assert_eq!(v["windows"][1]["resetInSecs"], json!(30));
    assert_eq!(v["windows"][1]["sourceIpCount"], json!(2));
    assert_eq!(
        v["windows"][1]["topSourceIps"][0],
        json!({"ip": "10.0.0.2", "requests": {"limit": 10, "used": 7, "remaining": 3},
               "tokens": {"limit": null, "used": 0}})
    );
}

#[test]
fn key_windows_follow_the_connection_and_name_the_key() {
    let now = datetime!(2026-11-25 13:45:30 UTC);
    let conn = [CapacityEntry {
        period: Period::Minute,
        requests: Some(100),
        tokens: None,
        enabled: true,
        dimension: None,
    }];
    let own = [CapacityEntry {
        period: Period::Hour,
        requests: Some(2),
        tokens: None,
        enabled: true,
        dimension: None,
    }];
    let key = KeyCapacity {
        id: "k1",
        entries: &own,
    };
    let ip = "10.0.0.1".parse().expect("ip");
    let est = TokenEstimate {
        prompt: 1,
        max_output: 0,
    };
    let req = plan_keyed("c", "conn", &conn, ip, Some(key), est, now).expect("plan");
    assert_eq!(req.windows.len(), 2);
    let w = &req.windows[1];
    assert_eq!(w.scope, Scope::ApiKey);
    let hour = Period::Hour.window(now);
    assert_eq!(w.window.key, format!("{}~k1", hour.key));
    assert_eq!(window_key_end(&w.window.key), Some(hour.end));
    let prev = previous_window_key(Period::Hour, now).expect("prev");
    assert_eq!(w.previous_key(now), Some(format!("{prev}~k1")));
    let r = rejected(req.decide(&[
        Counters::default(),
        Counters {
            requests: 2,
            tokens: 0,
        },
    ]));
    assert_eq!(r.scope, Scope::ApiKey);
    assert_eq!(r.api_key_id.as_deref(), Some("k1"));
    let body = r.body();
    assert_eq!(body["error"]["limit"]["scope"], "apiKey");
    assert_eq!(body["error"]["limit"]["apiKeyId"], "k1");
    assert!(
        r.message()
            .contains("API key 'k1' reached its own limit of 2 requests per hour")
    );
    // A key without enabled entries adds no window.
    let none = KeyCapacity {
        id: "k2",
        entries: &[],
    };
    let req = plan_keyed("c", "conn", &conn, ip, Some(none), est, now).expect("plan");
    assert_eq!(req.windows.len(), 1);
    assert!(req.api_key_id.is_none());
}

#[test]
fn usage_view_shows_each_pool_with_the_allocation_a_429_reports() {
    use crate::prioritization::Prioritization;
    let def = Prioritization::parse(
        &json!({"pools": [
            {"name": "web", "rank": 1, "apiKeys": ["kw"], "minReservation": 40, "maxReservation": 100},
            {"name": "batch", "rank": 2, "apiKeys": ["kb"], "minReservation": 0, "maxReservation": 30}]}),
        |_| true,
    )
    .expect("definition");
    let mut per_ip = entry(Period::Minute, Some(5), None);
    per_ip.dimension = Some(Dimension::SourceIp);
    let entries = [entry(Period::Minute, Some(10), None), per_ip];
    let req = UsageRequest::new("c1", &entries, 10, NOW).with_pools(&def);
    assert!(req.is_pooled(&req.windows[0]) && !req.is_pooled(&req.windows[1]));
    let key = req.windows[0].window.key.clone();
    let prev = previous_window_key(Period::Minute, NOW).expect("previous");
    // web: 1 request now; batch: 3 now; default: one request in the previous window only.
    let counters = |pool: &str, k: &str| -> crate::Result<Option<Counters>> {
        let c = |requests| {
            Some(Counters {
                requests,
                tokens: requests * 10,
            })
        };
        Ok(match (pool, k == key, k == prev) {
            ("web", true, _) => c(1),
            ("batch", true, _) => c(3),
            ("default", _, true) => c(1),
            _ => None,
        })
    };
    let pools = req.pool_usage(&req.windows[0], counters).expect("pools");
    assert_eq!(
        req.pool_usage(&req.windows[1], counters)
            .expect("ip window"),
        vec![]
    );
    let names: Vec<(&str, bool)> = pools
        .iter()
        .map(|p| (p.share.name.as_str(), p.active))
        .collect();
    assert_eq!(names, [("web", true), ("batch", true), ("default", true)]);
    assert_eq!(pools[2].used, Counters::default());
    let usage = CapacityUsage {
        connection_id: "c1".into(),
        at: NOW,
        windows: vec![WindowUsage {
            window: req.windows[0].clone(),
            used: Counters {
                requests: 4,
                tokens: 40,
            },
            top_ips: vec![],
            ip_count: 0,
            pools: pools.clone(),
        }],
    };
    let v = usage.view();
    let p = &v["windows"][0]["pools"];
    assert_eq!(
        p[0],
        json!({"name": "web", "rank": 1, "minReservation": 40, "maxReservation": 100, "active": true,
               "requests": {"min": 4, "max": 10, "used": 1, "allocation": 7, "remaining": 6},
               "tokens": {"min": null, "max": null, "used": 10, "allocation": null, "remaining": null}})
    );
    // batch is at its maximum: what it may add is 0, its allocation 3, as its 429 says.
    assert_eq!(
        p[1]["requests"],
        json!({"min": 0, "max": 3, "used": 3, "allocation": 3, "remaining": 0})
    );
    assert_eq!(p[2]["name"], "default");
    assert_eq!(p[2]["rank"], Value::Null);
    let batch = planned(&entries[..1], est(1, 0)).with_pools(def.admission(Some("kb")));
    let snapshot = PoolWindow {
        own: pools[1].used,
        others: vec![OtherPool {
            active: true,
            used: pools[0].used,
        }],
    };
    match batch.decide_pooled(&[usage.windows[0].used], &[snapshot]) {
        Decision::Reject(r) => assert_eq!(
            r.pool.map(|p| (p.name, p.allocation)),
            Some(("batch".to_owned(), 3))
        ),
        other => panic!("batch is full: {other:?}"),
    }
    // Every pool's allocation is what its next request's decision rests on: for default,
    // 10 - 4 used - 3 held for web's minimum - 1 for web's rank = 2 more.
    assert_eq!(
        p[2]["requests"],
        json!({"min": 0, "max": 10, "used": 0, "allocation": 2, "remaining": 2})
    );
}
