//! A loopback HTTP server that answers AWS JSON-protocol requests: with one canned AWS error
//! (how tests inject throttling, disabled keys or access denied where moto cannot), or with
//! what a handler makes of each request (services moto does not model, e.g. Bedrock's
//! Service Quotas: [`crate::service_quotas_stub`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One recorded request of the stub.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The `X-Amz-Target` header, e.g. `DynamoDB_20120810.GetItem`.
    pub target: String,
    /// The `Authorization` header (SigV4: names the signing access key id and region).
    pub authorization: String,
    /// The request body (JSON for these protocols).
    pub body: String,
}

/// What the stub answers a request with: status and JSON body.
pub type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// A loopback HTTP server answering every request with `status` and a JSON `body`, counting
/// the requests. Stops when dropped.
pub struct Stub {
    pub url: String,
    count: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    pub async fn start(status: u16, content_type: &'static str, body: String) -> Self {
        Self::with_handler(content_type, Arc::new(move |_| (status, body.clone()))).await
    }

    /// A stub answering each request with what `handler` returns for it.
    pub async fn with_handler(content_type: &'static str, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, s) = (Arc::clone(&count), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (c, s, h) = (Arc::clone(&c), Arc::clone(&s), Arc::clone(&handler));
                tokio::spawn(async move {
                    let _ = serve(stream, content_type, &*h, &c, &s).await;
                });
            }
        });
        Self {
            url,
            count,
            seen,
            task,
        }
    }

    /// DynamoDB (awsJson 1.0) error `code`, status 400.
    pub async fn dynamodb_error(code: &str) -> Self {
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"stubbed {code}"}}"#
        );
        Self::start(400, "application/x-amz-json-1.0", body).await
    }

    /// KMS (awsJson 1.1) error `code` with `status`.
    pub async fn kms_error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "__type": code, "message": message }).to_string();
        Self::start(status, "application/x-amz-json-1.1", body).await
    }

    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    content_type: &str,
    handler: &(dyn Fn(&Seen) -> (u16, String) + Send + Sync),
    count: &AtomicUsize,
    seen: &std::sync::Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    // Read the head, then the body by Content-Length; one request per connection.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    count.fetch_add(1, Ordering::SeqCst);
    let request = Seen {
        target: header("x-amz-target").unwrap_or_default(),
        authorization: header("authorization").unwrap_or_default(),
        body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
    };
    let (status, body) = handler(&request);
    seen.lock().expect("lock").push(request);
    let reason = match status {
        200..=299 => "OK",
        500.. => "Server Error",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nx-amzn-RequestId: stub-request\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
