//! A lean HTTP/1.1 client for the load generator, for rates that reqwest cannot send from
//! one core next to the stub (measured here: reqwest plus the stub use about 80 µs of CPU per
//! request, so one core tops out near 9,000 requests/s, less than twice what the local
//! server sustains on the other core). Each request is one prepared byte string written on
//! a keep-alive connection taken from a pool (a new connection when none is idle); the
//! answer is read up to the end of its body (`Content-Length` or chunked) and the
//! connection goes back to the pool unless the server said `Connection: close`.
//! Plain `http://` only, no pipelining, no redirects: what a benchmark needs, no more.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer: status, whether `Retry-After` was set, the decoded body and when the head
/// arrived.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: bool,
    pub(crate) body: Vec<u8>,
    pub(crate) head_at: Instant,
}

/// Why no answer came.
pub(crate) enum RawError {
    /// Connect, write or read failed, or the server closed before a whole answer.
    Connection(String),
    /// The answer is not HTTP/1.1 as this client reads it.
    Malformed(String),
}

/// Keep-alive connections to one address and the request sent on them.
pub(crate) struct RawPool {
    addr: SocketAddr,
    request: Vec<u8>,
    idle: Mutex<Vec<TcpStream>>,
}

impl RawPool {
    /// A pool for `POST url` with a bearer `auth` and a JSON `body`.
    pub(crate) fn new(url: &str, auth: &str, body: &[u8]) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("'{url}': the raw client speaks plain http only"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| format!("'{authority}': the raw client needs an IP address and port"))?;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {authority}\r\nauthorization: Bearer {auth}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Ok(Self {
            addr,
            request,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends the request once and reads the answer. A pooled connection that the server
    /// closed while it was idle is replaced by a new one once (as HTTP clients do).
    pub(crate) async fn send(&self) -> Result<Answer, RawError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(stream) = pooled {
            match self.exchange(stream).await {
                Err(RawError::Connection(_)) => {}
                done => return done,
            }
        }
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| RawError::Connection(format!("connect: {e}")))?;
        let _ = stream.set_nodelay(true);
        self.exchange(stream).await
    }

    async fn exchange(&self, mut stream: TcpStream) -> Result<Answer, RawError> {
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| RawError::Connection(format!("write: {e}")))?;
        let mut buf = BytesMut::with_capacity(4096);
        let (head, head_at) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = buf.split_to(end + 4);
                break (head, Instant::now());
            }
            read_more(&mut stream, &mut buf).await?;
        };
        let head = std::str::from_utf8(&head)
            .map_err(|_| RawError::Malformed("a head that is not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| RawError::Malformed(format!("status line of '{head}'")))?;
        let (mut length, mut chunked, mut retry_after, mut close) = (None, false, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "retry-after" => retry_after = true,
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            loop {
                if let Some(body) = dechunk(&buf)? {
                    break body;
                }
                read_more(&mut stream, &mut buf).await?;
            }
        } else {
            let length = length.unwrap_or(0);
            while buf.len() < length {
                read_more(&mut stream, &mut buf).await?;
            }
            buf.split_to(length).to_vec()
        };
        if !close && let Ok(mut idle) = self.idle.lock() {
            idle.push(stream);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
            head_at,
        })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), RawError> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err(RawError::Connection(
            "the server closed the connection before the whole answer".into(),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(RawError::Connection(format!("read: {e}"))),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of a whole chunked message in `buf` (trailers skipped), or `None` while it is
/// incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<Vec<u8>>, RawError> {
    let mut rest = buf;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..line_end])
            .ok()
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .ok_or_else(|| RawError::Malformed("a chunk size that is not text".into()))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| RawError::Malformed(format!("chunk size '{size_text}'")))?;
        rest.advance(line_end + 2);
        if size == 0 {
            // Trailers, then an empty line.
            return Ok(
                (rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some()).then_some(body),
            );
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest.advance(size + 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: Result<Option<Vec<u8>>, RawError>) -> Option<String> {
        match r {
            Ok(b) => b.map(|b| String::from_utf8(b).expect("utf-8")),
            Err(_) => Some("error".into()),
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_once_whole() {
        let whole = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        assert_eq!(text(dechunk(whole)).as_deref(), Some("hello world"));
        for cut in 0..whole.len() {
            assert_eq!(text(dechunk(&whole[..cut])), None, "cut at {cut}");
        }
        let trailers = b"2\r\nok\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(text(dechunk(trailers)).as_deref(), Some("ok"));
        assert_eq!(text(dechunk(b"zz\r\n")).as_deref(), Some("error"));
    }
}
