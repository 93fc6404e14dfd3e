//! An incremental Server-Sent Events decoder (the WHATWG `text/event-stream` format), used for
//! every provider's stream.
//!
//! Feed it the body's bytes as they arrive, in chunks cut anywhere (inside a line, between
//! `\r` and `\n`, inside a multi-byte character); take complete events out. It handles the
//! three line endings (`\n`, `\r\n`, `\r`), comments (`:` lines), multi-line `data` (joined
//! with `\n`), a leading byte-order mark, and `event`/`id` fields. Complete lines are parsed
//! straight from the pushed chunk; only a partial line at the end of a chunk is copied, so a
//! typical event costs one allocation (its data).
//!
//! Two deliberate departures from a browser's `EventSource`: invalid UTF-8 is an error rather
//! than replaced (a provider's JSON is UTF-8; a corrupt stream must not turn into silently
//! wrong text), and an event or line larger than `max_event_bytes` is an error (a provider
//! cannot make the gateway buffer without bound).

use std::collections::VecDeque;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if the event had one (`None` means the default type, `message`).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` field seen so far in the stream, if any.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// A line or an event's data grew past the decoder's bound.
    TooLarge { limit: usize },
    /// A line was not valid UTF-8.
    InvalidUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "an event is larger than {limit} bytes"),
            Self::InvalidUtf8 => f.write_str("the event stream is not valid UTF-8"),
        }
    }
}

impl std::error::Error for SseError {}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The decoder. See the module documentation.
#[derive(Debug)]
pub struct SseDecoder {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The previous chunk ended with `\r`: a `\n` starting the next chunk belongs to it.
    skip_lf: bool,
    /// No line has been completed yet (a BOM may start the stream).
    at_start: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    ready: VecDeque<SseEvent>,
    max_event_bytes: usize,
    failed: Option<SseError>,
}

impl SseDecoder {
    /// A decoder that rejects lines and events larger than `max_event_bytes`.
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            skip_lf: false,
            at_start: true,
            event: None,
            data: String::new(),
            has_data: false,
            last_id: None,
            ready: VecDeque::new(),
            max_event_bytes,
            failed: None,
        }
    }

    /// Feeds the next bytes of the stream. Complete events become available to
    /// [`next_event`](Self::next_event). After an error the decoder stays failed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<(), SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.skip_lf {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
                self.skip_lf = false;
            } else if !chunk.is_empty() {
                self.skip_lf = false;
            }
        }
        while !chunk.is_empty() {
            let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.partial.len() + chunk.len() > self.max_event_bytes {
                    return self.fail(SseError::TooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                self.partial.extend_from_slice(chunk);
                return Ok(());
            };
            let terminator = chunk[end];
            let mut next = end + 1;
            if terminator == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The `\n` of a `\r\n` may start the next chunk.
                    None => self.skip_lf = true,
                }
            }
            let result = if self.partial.is_empty() {
                self.line(&chunk[..end])
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                let r = self.line(&line);
                line.clear();
                self.partial = line;
                r
            };
            if let Err(e) = result {
                return self.fail(e);
            }
            chunk = &chunk[next..];
        }
        Ok(())
    }

    /// The next complete event, if any.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// The end of the stream. As the format requires, an event that was not terminated by a
    /// blank line is discarded; returns whether anything (a partial line or an undispatched
    /// event) was pending, i.e. whether the stream was cut inside an event.
    pub fn finish(&mut self) -> bool {
        let pending = !self.partial.is_empty() || self.has_data || self.event.is_some();
        self.partial.clear();
        self.data.clear();
        self.has_data = false;
        self.event = None;
        pending
    }

    fn fail(&mut self, e: SseError) -> Result<(), SseError> {
        self.failed = Some(e.clone());
        Err(e)
    }

    fn line(&mut self, mut line: &[u8]) -> Result<(), SseError> {
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(BOM) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment (often a keep-alive)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value).map_err(|_| SseError::InvalidUtf8)?;
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    return Err(SseError::TooLarge {
                        limit: self.max_event_bytes,
                    });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.to_owned()),
            b"id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
        Ok(())
    }

    fn dispatch(&mut self) {
        if !self.has_data {
            // No data field: the event is dropped (its type is reset).
            self.event = None;
            return;
        }
        self.has_data = false;
        self.ready.push_back(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        });
    }
}
