//! A loopback HTTP/1.1 proxy to moto that lets one request through at a time.
//!
//! DynamoDB serializes the writes to an item: that is what makes `ADD` and conditional writes
//! atomic. moto does not: its `UpdateItem` reads, changes and writes an item in separate
//! Python steps without a lock, so concurrent requests can lose an `ADD` or pass a condition
//! DynamoDB would refuse. Passing moto one request at a time restores DynamoDB's guarantee,
//! so concurrency tests check the adapters' expressions rather than moto's thread safety;
//! the client still sends its requests concurrently.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
pub struct SerialProxy {
    /// `http://127.0.0.1:<port>`: use it as the endpoint.
    pub url: String,
    /// The `X-Amz-Target` of every request relayed (e.g. `DynamoDB_20120810.UpdateItem`,
    /// `TrentService.Decrypt`), or the query action (`Action=AssumeRole`) for query APIs.
    calls: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SerialProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SerialProxy {
    /// Starts a proxy to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (gate, upstream, log) = (gate.clone(), upstream.clone(), log.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, &gate, &log).await;
                });
            }
        });
        Self { url, calls, task }
    }

    /// The AWS operations relayed so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|c| c.iter().map(|(op, _)| op.clone()).collect())
            .unwrap_or_default()
    }

    /// How many relayed operations end with `suffix` and whose body contains `needle`.
    pub fn count_with(&self, suffix: &str, needle: &str) -> usize {
        self.calls
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(op, body)| op.ends_with(suffix) && body.contains(needle))
                    .count()
            })
            .unwrap_or(0)
    }

    /// How many relayed operations end with `suffix` (e.g. `.UpdateItem`).
    pub fn count(&self, suffix: &str) -> usize {
        self.calls().iter().filter(|c| c.ends_with(suffix)).count()
    }

    /// The `(action, partition key)` of every DynamoDB item written so far (`PutItem`,
    /// `UpdateItem`, `DeleteItem`, each item of a `TransactWriteItems`), as IAM authorizes
    /// them: the partition key is what `dynamodb:LeadingKeys` sees.
    pub fn written_items(&self) -> Vec<(String, String)> {
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        let mut out = Vec::new();
        for (op, body) in calls {
            let Some(action) = op.strip_prefix("DynamoDB_20120810.") else {
                continue;
            };
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            let pk = |item: &serde_json::Value| item["pk"]["S"].as_str().map(str::to_owned);
            match action {
                "PutItem" => out.extend(pk(&body["Item"]).map(|k| ("PutItem".to_owned(), k))),
                "UpdateItem" | "DeleteItem" => {
                    out.extend(pk(&body["Key"]).map(|k| (action.to_owned(), k)));
                }
                "TransactWriteItems" => {
                    for item in body["TransactItems"].as_array().into_iter().flatten() {
                        for (kind, field) in [
                            ("Put", "Item"),
                            ("Update", "Key"),
                            ("Delete", "Key"),
                            ("ConditionCheck", "Key"),
                        ] {
                            let action = if kind == "ConditionCheck" {
                                "ConditionCheckItem".to_owned()
                            } else {
                                format!("{kind}Item")
                            };
                            out.extend(pk(&item[kind][field]).map(|k| (action, k)));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Forgets the operations relayed so far.
    pub fn clear(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }
}

/// The operation a request names: its `X-Amz-Target`, else its form `Action`.
fn operation(head: &str, body: &[u8]) -> String {
    let target = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-amz-target")
            .then(|| v.trim().to_owned())
    });
    target.unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(|a| format!("Action={a}"))
            .unwrap_or_else(|| "unknown".to_owned())
    })
}

/// Forwards one request of `client` (then closes it), holding `gate` while moto works.
async fn relay(
    mut client: TcpStream,
    upstream: &str,
    gate: &tokio::sync::Mutex<()>,
    log: &std::sync::Mutex<Vec<(String, String)>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if let Ok(mut l) = log.lock() {
        let body = &buf[head_end..];
        l.push((
            operation(&head, body),
            String::from_utf8_lossy(body).into_owned(),
        ));
    }
    let request = closing(&buf);
    let response = {
        let _one_at_a_time = gate.lock().await;
        let mut up = TcpStream::connect(upstream).await?;
        up.write_all(&request).await?;
        let mut response = Vec::new();
        up.read_to_end(&mut response).await?;
        response
    };
    client.write_all(&closing(&response)).await?;
    client.shutdown().await
}

/// The HTTP message with its `Connection` header set to `close`.
fn closing(message: &[u8]) -> Vec<u8> {
    let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
        return message.to_vec();
    };
    let head = String::from_utf8_lossy(&message[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|l| {
            !l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes();
    out.extend_from_slice(b"\r\nConnection: close");
    out.extend_from_slice(&message[end..]);
    out
}
