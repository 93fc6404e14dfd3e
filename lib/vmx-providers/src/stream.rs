//! Turns a provider's event-stream response into the gateway's [`ItemStream`]: reads the body
//! with an idle timeout and a total deadline, decodes SSE, hands each event to the
//! provider's [`Translator`], and ends with exactly one `Err` item when anything goes wrong
//! (a cut connection, a stream that ends before its terminator, silence, a malformed event),
//! so a consumer never hangs and never mistakes a broken stream for a complete one.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use vmx_domain::inference::{ItemStream, ProviderError, StreamItem};

use crate::ProviderOptions;
use crate::common::{ApiKey, map_reqwest, remaining};
use crate::sse::{SseDecoder, SseEvent};

pub(crate) type Out = VecDeque<Result<StreamItem, ProviderError>>;

pub(crate) enum Flow {
    Continue,
    /// The provider's terminator arrived; stop reading.
    Done,
}

/// One provider's stream format.
pub(crate) trait Translator: Send + 'static {
    /// One event: push the items it yields into `out`.
    fn on_event(&mut self, event: SseEvent, out: &mut Out) -> Result<Flow, ProviderError>;

    /// The body ended before [`Flow::Done`]: push final items and return `Ok` if that is a
    /// clean end for this provider, else the error.
    fn on_eof(&mut self, out: &mut Out) -> Result<(), ProviderError>;
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct State<T> {
    body: Body,
    decoder: SseDecoder,
    translator: T,
    out: Out,
    finished: bool,
    /// The terminator arrived: read what is left of the body (briefly) before ending, so the
    /// connection goes back to the pool instead of being closed.
    drain: bool,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    key: ApiKey,
}

impl<T: Translator> State<T> {
    fn fail(&mut self, e: ProviderError) {
        self.finished = true;
        self.out.push_back(Err(self.key.scrub_error(e)));
    }

    fn on_bytes(&mut self, bytes: &[u8]) {
        if let Err(e) = self.decoder.push(bytes) {
            self.fail(ProviderError::Malformed(format!("the event stream: {e}")));
            return;
        }
        while let Some(event) = self.decoder.next_event() {
            match self.translator.on_event(event, &mut self.out) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => {
                    self.finished = true;
                    self.drain = true;
                    return;
                }
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    fn on_eof(&mut self) {
        self.finished = true;
        let cut_inside_event = self.decoder.finish();
        match self.translator.on_eof(&mut self.out) {
            Ok(()) => {}
            Err(ProviderError::Malformed(m)) if cut_inside_event => self.fail(
                ProviderError::Malformed(format!("{m} (the connection closed inside an event)")),
            ),
            Err(e) => self.fail(e),
        }
    }
}

/// The item stream of a started streaming response.
pub(crate) fn drive<T: Translator>(
    resp: reqwest::Response,
    translator: T,
    opts: &ProviderOptions,
    key: ApiKey,
) -> ItemStream {
    let state = State {
        body: Box::pin(resp.bytes_stream()),
        decoder: SseDecoder::new(opts.max_response_bytes),
        translator,
        out: VecDeque::new(),
        finished: false,
        drain: false,
        idle: opts.stream_idle_timeout,
        deadline: tokio::time::Instant::now() + opts.stream_max_duration,
        key,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.out.pop_front() {
                return Some((item, st));
            }
            if st.finished {
                if std::mem::take(&mut st.drain) {
                    drain(&mut st.body).await;
                }
                return None;
            }
            let left = remaining(st.deadline);
            if left.is_zero() {
                st.fail(ProviderError::Timeout);
                continue;
            }
            match tokio::time::timeout(st.idle.min(left), st.body.next()).await {
                Err(_) => st.fail(ProviderError::Timeout),
                Ok(None) => st.on_eof(),
                Ok(Some(Err(e))) => {
                    let e = map_reqwest(&e, &st.key);
                    st.fail(e);
                }
                Ok(Some(Ok(bytes))) => st.on_bytes(&bytes),
            }
        }
    }))
}

/// Reads the rest of a finished body for a moment (a provider closes its body right after the
/// terminator); a body that goes on is simply dropped.
async fn drain(body: &mut Body) {
    for _ in 0..4 {
        match tokio::time::timeout(std::time::Duration::from_millis(50), body.next()).await {
            Ok(Some(Ok(_))) => continue,
            _ => return,
        }
    }
}
