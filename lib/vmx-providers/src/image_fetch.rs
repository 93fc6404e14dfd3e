//! Fetching image URLs for providers that take only bytes (Bedrock).
//!
//! vmx never fetches a URL a caller gives it, with one exception: an image in a message sent
//! to a provider that accepts images only as bytes. Then, and only then, the image is
//! fetched under this policy:
//!
//! - `https` only, on the default port or any other; no proxy from the environment;
//! - every address the host resolves to must be public (no loopback, private, link-local,
//!   CGNAT, multicast, documentation or reserved range, IPv4-mapped forms included). The
//!   check runs in the DNS resolver the client connects with, so a name that resolves to a
//!   public address for a check and to a private one for the connection (DNS rebinding)
//!   cannot slip through, and IP literals in the URL are checked before any connection;
//! - at most [`ImagePolicy::max_redirects`] redirects, each re-checked the same way;
//! - a whole-fetch timeout, a byte cap enforced while reading (a lying or absent
//!   Content-Length does not matter), at most [`ImagePolicy::max_images`] per request;
//! - the body must be a png, jpeg, gif or webp image (by Content-Type, or by its magic bytes
//!   when the server says `application/octet-stream`).
//!
//! Every refusal is the caller's 400 naming `messages`, with a reason that says which image.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Map, Value, json};
use vmx_domain::inference::ProviderError;

/// Bounds of image fetching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImagePolicy {
    /// Largest image, in bytes (Bedrock's own limit is 3.75 MB).
    pub max_bytes: usize,
    /// Most image URLs fetched for one request.
    pub max_images: usize,
    /// One fetch, redirects and body included.
    pub timeout: Duration,
    pub max_redirects: usize,
    /// Tests only: also allow `http` and loopback addresses (stubs listen on 127.0.0.1).
    /// Never set from configuration.
    pub allow_loopback_http: bool,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        Self {
            max_bytes: 3_750_000,
            max_images: 20,
            timeout: Duration::from_secs(10),
            max_redirects: 3,
            allow_loopback_http: false,
        }
    }
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // Global unicast is 2000::/3; inside it, documentation (2001:db8::/32), NAT64
            // (64:ff9b::/96 is outside 2000::/3 anyway), 6to4 (2002::/16, which embeds an
            // IPv4 address) and Teredo (2001::/32) are refused.
            (s[0] & 0xe000) == 0x2000
                && !(s[0] == 0x2001 && s[1] == 0x0db8)
                && s[0] != 0x2002
                && !(s[0] == 0x2001 && s[1] == 0)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn allowed(ip: IpAddr, loopback_too: bool) -> bool {
    is_public(ip) || (loopback_too && ip.is_loopback())
}

/// The resolver the fetch client connects with: it drops every address that is not allowed.
struct PublicOnly {
    loopback_too: bool,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let loopback_too = self.loopback_too;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allowed(a.ip(), loopback_too))
                .collect();
            if found.is_empty() {
                return Err("the image host resolves to no public address".into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// Why a URL is refused before any connection, if it is.
fn refusal(url: &reqwest::Url, policy: &ImagePolicy) -> Option<&'static str> {
    let scheme_ok =
        url.scheme() == "https" || (policy.allow_loopback_http && url.scheme() == "http");
    if !scheme_ok {
        return Some("only https image URLs are fetched");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("image URLs must not carry credentials");
    }
    let Some(host) = url.host_str() else {
        return Some("the image URL has no host");
    };
    // The URL parser has already normalised IPv4 spellings (`2130706433`, `0x7f.1`);
    // IPv6 literals come bracketed.
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    match literal {
        Some(ip) if !allowed(ip, policy.allow_loopback_http) => {
            Some("the image URL points to a non-public address")
        }
        _ => None,
    }
}

/// Fetches images under an [`ImagePolicy`]; built once per process.
#[derive(Clone)]
pub struct ImageFetcher {
    client: reqwest::Client,
    policy: ImagePolicy,
}

impl ImageFetcher {
    pub fn new(policy: ImagePolicy) -> Result<Self, reqwest::Error> {
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > policy.max_redirects {
                attempt.error("too many redirects")
            } else if let Some(why) = refusal(attempt.url(), &policy) {
                attempt.error(why)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .https_only(!policy.allow_loopback_http)
            .dns_resolver(Arc::new(PublicOnly {
                loopback_too: policy.allow_loopback_http,
            }))
            .redirect(redirect)
            .connect_timeout(policy.timeout)
            .timeout(policy.timeout)
            .user_agent(concat!("vmx/", env!("CARGO_PKG_VERSION"), " (image fetch)"))
            .build()?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &ImagePolicy {
        &self.policy
    }

    /// Fetches one image: its media type and bytes. `what` names it in errors
    /// (`messages[2].content[1]`).
    pub async fn fetch(&self, url: &str, what: &str) -> Result<(String, Vec<u8>), ProviderError> {
        let refuse = |why: &str| refused(format!("{what}: {why}"));
        let parsed = reqwest::Url::parse(url).map_err(|_| refuse("the image URL is not a URL"))?;
        if let Some(why) = refusal(&parsed, &self.policy) {
            return Err(refuse(why));
        }
        let response = self.client.get(parsed).send().await.map_err(|e| {
            refuse(if e.is_timeout() {
                "fetching the image timed out"
            } else if e.is_redirect() {
                "the image URL redirects too often or to a refused address"
            } else {
                "the image could not be fetched (refused address, DNS, connection or TLS failure)"
            })
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(refuse(&format!(
                "fetching the image answered HTTP {}",
                status.as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.policy.max_bytes as u64)
        {
            return Err(refuse(&self.too_large()));
        }
        let declared = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                refuse(if e.is_timeout() {
                    "fetching the image timed out"
                } else {
                    "the image download broke off"
                })
            })?;
            if bytes.len() + chunk.len() > self.policy.max_bytes {
                return Err(refuse(&self.too_large()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let media = match declared.as_str() {
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" => declared,
            "image/jpg" => "image/jpeg".to_owned(),
            "" | "application/octet-stream" | "binary/octet-stream" => sniff(&bytes)
                .ok_or_else(|| refuse("the image is not png, jpeg, gif or webp"))?
                .to_owned(),
            _ => {
                return Err(refuse(
                    "the URL did not return a png, jpeg, gif or webp image",
                ));
            }
        };
        Ok((media, bytes))
    }

    fn too_large(&self) -> String {
        format!("the image is larger than {} bytes", self.policy.max_bytes)
    }

    /// Replaces every remote image in an OpenAI Chat Completions body
    /// (`messages[].content[]` parts `{"type":"image_url","image_url":{"url":"https://..."}}`)
    /// by a base64 `data:` URL, fetching under the policy.
    pub async fn inline_chat_images(
        &self,
        body: &mut Map<String, Value>,
    ) -> Result<(), ProviderError> {
        let mut budget = self.policy.max_images;
        for (what, part) in content_parts(body) {
            if part.get("type").and_then(Value::as_str) != Some("image_url") {
                continue;
            }
            let url = match part.get_mut("image_url") {
                Some(Value::Object(o)) => o.get_mut("url"),
                Some(v @ Value::String(_)) => Some(v),
                _ => None,
            };
            let Some(url) = url else { continue };
            let Some(remote) = url.as_str().filter(|u| !u.starts_with("data:")) else {
                continue;
            };
            let (media, bytes) = self.fetch_counted(remote, &what, &mut budget).await?;
            *url = Value::String(format!(
                "data:{media};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ));
        }
        Ok(())
    }

    /// Replaces every URL image source in an Anthropic Messages body
    /// (`{"type":"image","source":{"type":"url","url":"https://..."}}`, also inside
    /// `tool_result` content) by a base64 source, fetching under the policy.
    pub async fn inline_message_images(
        &self,
        body: &mut Map<String, Value>,
    ) -> Result<(), ProviderError> {
        let mut budget = self.policy.max_images;
        for (what, block) in content_parts(body) {
            self.inline_block(block, &what, &mut budget).await?;
            if let Some(Value::Array(inner)) = block.get_mut("content") {
                for (k, b) in inner.iter_mut().enumerate() {
                    self.inline_block(b, &format!("{what}.content[{k}]"), &mut budget)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn inline_block(
        &self,
        block: &mut Value,
        what: &str,
        budget: &mut usize,
    ) -> Result<(), ProviderError> {
        if block.get("type").and_then(Value::as_str) != Some("image")
            || block.pointer("/source/type").and_then(Value::as_str) != Some("url")
        {
            return Ok(());
        }
        let Some(url) = block.pointer("/source/url").and_then(Value::as_str) else {
            return Err(refused(format!("{what}: source.url is required")));
        };
        let url = url.to_owned();
        let (media, bytes) = self.fetch_counted(&url, what, budget).await?;
        if let Some(b) = block.as_object_mut() {
            b.insert(
                "source".into(),
                json!({
                    "type": "base64",
                    "media_type": media,
                    "data": base64::engine::general_purpose::STANDARD.encode(bytes),
                }),
            );
        }
        Ok(())
    }

    async fn fetch_counted(
        &self,
        url: &str,
        what: &str,
        budget: &mut usize,
    ) -> Result<(String, Vec<u8>), ProviderError> {
        if *budget == 0 {
            return Err(refused(format!(
                "{what}: at most {} image URLs are fetched per request; send the rest as data: URLs",
                self.policy.max_images
            )));
        }
        *budget -= 1;
        self.fetch(url, what).await
    }
}

/// Every `messages[i].content[j]` part of a body, with its path.
fn content_parts(body: &mut Map<String, Value>) -> Vec<(String, &mut Value)> {
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return Vec::new();
    };
    messages
        .iter_mut()
        .enumerate()
        .filter_map(|(i, m)| match m.get_mut("content") {
            Some(Value::Array(parts)) => Some((i, parts)),
            _ => None,
        })
        .flat_map(|(i, parts)| {
            parts
                .iter_mut()
                .enumerate()
                .map(move |(j, p)| (format!("messages[{i}].content[{j}]"), p))
        })
        .collect()
}

/// The media type of an image by its first bytes.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn refused(message: String) -> ProviderError {
    ProviderError::BadRequest {
        status: 400,
        message,
        param: Some("messages".into()),
        code: Some("invalid_image_url".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn public_and_non_public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2002:7f00:1::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn literal_and_scheme_refusals_need_no_network() {
        let policy = ImagePolicy::default();
        for (url, why) in [
            ("http://example.com/a.png", "https"),
            ("https://127.0.0.1/a.png", "non-public"),
            ("https://[::1]:8443/a.png", "non-public"),
            ("https://169.254.169.254/latest/meta-data", "non-public"),
            ("https://[::ffff:a9fe:a9fe]/x", "non-public"),
            ("https://user:pw@example.com/a.png", "credentials"),
            ("file:///etc/passwd", "https"),
        ] {
            let got = refusal(&reqwest::Url::parse(url).unwrap(), &policy).unwrap_or("accepted");
            assert!(got.contains(why), "{url}: {got}");
        }
        let ok = reqwest::Url::parse("https://example.com/cat.png").unwrap();
        assert_eq!(refusal(&ok, &policy), None);
        let decimal = reqwest::Url::parse("https://2130706433/a.png").unwrap();
        assert!(refusal(&decimal, &policy).is_some(), "{decimal}");
    }

    #[test]
    fn sniffs_the_four_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<html>"), None);
    }
}
