//! An image host on `127.0.0.1:0` for the image-fetch tests: well-behaved and hostile
//! answers by path, every request counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

/// A tiny valid PNG header followed by filler: what `/cat.png` serves.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRvmx-test-image";

/// Paths:
/// - `/cat.png`: 200 `image/png`; `/octet`: the same bytes as `application/octet-stream`
/// - `/page.html`: 200 `text/html`; `/missing.png`: 404
/// - `/big?n=N`: N bytes of PNG-prefixed filler, streamed without a Content-Length
/// - `/lying-length`: declares 100 MB, sends a few bytes, then stalls
/// - `/slow`: answers after 5 s
/// - `/to-metadata`: 302 to `http://169.254.169.254/latest/meta-data/`
/// - `/to-cat`: 302 to `/cat.png`; `/loop`: 302 to itself
pub struct ImageHost {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl ImageHost {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind image host");
        let addr = listener.local_addr().expect("image host address");
        let requests = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&requests));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// HTTP requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(State(requests): State<Arc<AtomicUsize>>, req: Request) -> Response {
    requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let reply = |status: StatusCode, kind: &str, body: Body| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, kind)
            .body(body)
            .expect("response")
    };
    let redirect = |to: &str| {
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .expect("response")
    };
    match path.as_str() {
        "/cat.png" => reply(StatusCode::OK, "image/png", Body::from(PNG)),
        "/octet" => reply(StatusCode::OK, "application/octet-stream", Body::from(PNG)),
        "/page.html" => reply(StatusCode::OK, "text/html", Body::from("<html></html>")),
        "/missing.png" => reply(StatusCode::NOT_FOUND, "text/plain", Body::from("no")),
        "/big" => {
            let n: usize = query
                .strip_prefix("n=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1 << 20);
            let mut first = PNG.to_vec();
            first.resize(n.min(64 * 1024), b'x');
            let rest = n.saturating_sub(first.len());
            let chunks = std::iter::once(Bytes::from(first)).chain(
                (0..rest.div_ceil(64 * 1024))
                    .map(move |i| Bytes::from(vec![b'x'; (rest - i * 64 * 1024).min(64 * 1024)])),
            );
            let stream = futures_util::stream::iter(chunks.map(Ok::<_, std::convert::Infallible>));
            reply(StatusCode::OK, "image/png", Body::from_stream(stream))
        }
        "/lying-length" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "image/png")
            .header(header::CONTENT_LENGTH, "100000000")
            .body(Body::from_stream(
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                    Bytes::from_static(PNG),
                )])
                .chain(futures_util::stream::pending()),
            ))
            .expect("response"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply(StatusCode::OK, "image/png", Body::from(PNG))
        }
        "/to-metadata" => redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-cat" => redirect("/cat.png"),
        "/loop" => redirect("/loop"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Body::from("no")),
    }
}
