//! Image URLs fetched for byte-only providers: the policy against a real HTTP host on
//! loopback (the test policy allows loopback and http; the default policy refuses both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;
use vmx_providers::image_fetch::{ImageFetcher, ImagePolicy};
use vmx_providers::testing::images::{ImageHost, PNG};

fn loopback_policy() -> ImagePolicy {
    ImagePolicy {
        max_bytes: 100_000,
        max_images: 3,
        timeout: Duration::from_millis(700),
        max_redirects: 3,
        allow_loopback_http: true,
    }
}

fn fetcher(policy: ImagePolicy) -> ImageFetcher {
    ImageFetcher::new(policy).unwrap()
}

fn chat_with(urls: &[String]) -> Map<String, Value> {
    let mut parts = vec![json!({"type": "text", "text": "What is this?"})];
    parts.extend(
        urls.iter()
            .map(|u| json!({"type": "image_url", "image_url": {"url": u, "detail": "low"}})),
    );
    match json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": parts}
    ]}) {
        Value::Object(o) => o,
        _ => unreachable!(),
    }
}

fn refusal(e: ProviderError) -> String {
    match e {
        ProviderError::BadRequest {
            status: 400,
            message,
            param,
            ..
        } => {
            assert_eq!(param.as_deref(), Some("messages"));
            message
        }
        other => panic!("expected a 400 naming messages, got {other:?}"),
    }
}

fn data_url(media: &str, bytes: &[u8]) -> String {
    format!(
        "data:{media};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[tokio::test]
async fn remote_images_become_data_urls_and_data_urls_stay() {
    let host = ImageHost::start().await;
    let already = data_url("image/gif", b"GIF89a-inline");
    let mut body = chat_with(&[host.url("/cat.png"), already.clone(), host.url("/octet")]);
    fetcher(loopback_policy())
        .inline_chat_images(&mut body)
        .await
        .unwrap();
    let parts = &body["messages"][1]["content"];
    assert_eq!(parts[1]["image_url"]["url"], data_url("image/png", PNG));
    assert_eq!(parts[1]["image_url"]["detail"], "low", "other fields kept");
    assert_eq!(parts[2]["image_url"]["url"], already);
    assert_eq!(
        parts[3]["image_url"]["url"],
        data_url("image/png", PNG),
        "octet-stream recognised by its bytes"
    );
    assert_eq!(host.requests(), 2);
}

#[tokio::test]
async fn anthropic_url_sources_become_base64_sources_also_in_tool_results() {
    let host = ImageHost::start().await;
    let mut body = match json!({"max_tokens": 10, "messages": [
        {"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": host.url("/to-cat")}},
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "image", "source": {"type": "url", "url": host.url("/cat.png")}}
            ]}
        ]}
    ]}) {
        Value::Object(o) => o,
        _ => unreachable!(),
    };
    fetcher(loopback_policy())
        .inline_message_images(&mut body)
        .await
        .unwrap();
    let expected = json!({
        "type": "base64",
        "media_type": "image/png",
        "data": base64::engine::general_purpose::STANDARD.encode(PNG),
    });
    let blocks = &body["messages"][0]["content"];
    assert_eq!(blocks[0]["source"], expected, "a redirect is followed");
    assert_eq!(blocks[1]["content"][0]["source"], expected);
}

#[tokio::test]
async fn hostile_answers_are_refused_with_the_image_named() {
    let host = ImageHost::start().await;
    let f = fetcher(loopback_policy());
    for (path, why) in [
        ("/page.html", "not return a png, jpeg, gif or webp"),
        ("/missing.png", "HTTP 404"),
        ("/big?n=100001", "larger than 100000 bytes"),
        ("/lying-length", "larger than 100000 bytes"),
        ("/slow", "timed out"),
        (
            "/to-metadata",
            "redirects too often or to a refused address",
        ),
        ("/loop", "redirects too often"),
    ] {
        let mut body = chat_with(&[host.url(path)]);
        let message = refusal(f.inline_chat_images(&mut body).await.unwrap_err());
        assert!(message.starts_with("messages[1].content[1]: "), "{message}");
        assert!(message.contains(why), "{path}: {message}");
        assert_eq!(
            body["messages"][1]["content"][1]["image_url"]["url"],
            host.url(path),
            "nothing replaced on failure"
        );
    }
    // Exactly at the cap is fine.
    let mut body = chat_with(&[host.url("/big?n=100000")]);
    f.inline_chat_images(&mut body).await.unwrap();
}

#[tokio::test]
async fn at_most_max_images_are_fetched() {
    let host = ImageHost::start().await;
    let urls: Vec<String> = (0..4).map(|_| host.url("/cat.png")).collect();
    let mut body = chat_with(&urls);
    let message = refusal(
        fetcher(loopback_policy())
            .inline_chat_images(&mut body)
            .await
            .unwrap_err(),
    );
    assert!(message.contains("at most 3 image URLs"), "{message}");
    assert!(message.starts_with("messages[1].content[4]"), "{message}");
}

#[tokio::test]
async fn the_default_policy_never_connects_to_loopback_or_plain_http() {
    // A listener that would see any connection attempt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = fetcher(ImagePolicy {
        timeout: Duration::from_secs(2),
        ..ImagePolicy::default()
    });
    for (url, why) in [
        (
            format!("https://127.0.0.1:{port}/a.png"),
            "non-public address",
        ),
        (
            format!("https://localhost:{port}/a.png"),
            "could not be fetched",
        ),
        (
            format!("https://[::ffff:127.0.0.1]:{port}/a.png"),
            "non-public address",
        ),
        (
            format!("https://0x7f000001:{port}/a.png"),
            "non-public address",
        ),
        (format!("http://127.0.0.1:{port}/a.png"), "only https"),
        (
            "https://169.254.169.254/latest/meta-data/".to_owned(),
            "non-public address",
        ),
    ] {
        let mut body = chat_with(std::slice::from_ref(&url));
        let message = refusal(f.inline_chat_images(&mut body).await.unwrap_err());
        assert!(message.contains(why), "{url}: {message}");
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "no connection reached the loopback listener"
    );
}
