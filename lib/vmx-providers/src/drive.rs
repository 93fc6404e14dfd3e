//! The stream driver every streaming adapter uses: pulls events from a [`Source`] (an SSE
//! response body, an AWS event stream), each read bounded by the idle timeout and the whole
//! stream by a total deadline, hands each event to the adapter's [`Translate`], and ends with
//! exactly one `Err` item when anything goes wrong (a cut connection, a stream that ends
//! before its terminator, silence, a malformed event), so a consumer never hangs and never
//! mistakes a broken stream for a complete one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use futures_util::future::BoxFuture;
use vmx_domain::inference::ProviderError;

use crate::ProviderOptions;

/// The items an event yields, in order.
pub type Out<I> = VecDeque<Result<I, ProviderError>>;

/// A driven stream of items.
pub type Items<I> = Pin<Box<dyn Stream<Item = Result<I, ProviderError>> + Send>>;

/// What the translator says after an event.
pub enum Flow {
    Continue,
    /// The provider's terminator arrived; stop reading.
    Done,
}

/// Where a stream's events come from.
pub trait Source: Send + 'static {
    type Event: Send + 'static;

    /// Reads one piece from the wire (within the idle timeout) and appends the events it
    /// completes to `events` (possibly none: a keep-alive); `Ok(false)` at the end.
    fn read<'a>(
        &'a mut self,
        events: &'a mut VecDeque<Self::Event>,
    ) -> BoxFuture<'a, Result<bool, ProviderError>>;

    /// The error as it leaves the stream (the SSE source scrubs the API key from it).
    fn fail(&self, e: ProviderError) -> ProviderError {
        e
    }

    /// Called once after [`Flow::Done`] (the SSE source reads the rest of the body so the
    /// connection goes back to the pool).
    fn done(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// One provider's stream format: events of type `E` in, items out.
pub trait Translate<E>: Send + 'static {
    type Item: Send + 'static;

    /// One event: push the items it yields into `out`.
    fn on_event(&mut self, event: E, out: &mut Out<Self::Item>) -> Result<Flow, ProviderError>;

    /// The source ended before [`Flow::Done`]: push final items and return `Ok` if that is a
    /// clean end for this provider, else the error that makes it a broken stream.
    fn on_end(&mut self, out: &mut Out<Self::Item>) -> Result<(), ProviderError>;
}

struct State<S: Source, T: Translate<S::Event>> {
    source: S,
    translator: T,
    events: VecDeque<S::Event>,
    out: Out<T::Item>,
    finished: bool,
    /// The terminator arrived: [`Source::done`] runs before the stream ends.
    done: bool,
    idle: Duration,
    deadline: tokio::time::Instant,
}

impl<S: Source, T: Translate<S::Event>> State<S, T> {
    fn fail(&mut self, e: ProviderError) {
        self.finished = true;
        self.events.clear();
        let e = self.source.fail(e);
        self.out.push_back(Err(e));
    }

    fn on_event(&mut self, event: S::Event) {
        match self.translator.on_event(event, &mut self.out) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Done) => {
                self.finished = true;
                self.done = true;
                self.events.clear();
            }
            Err(e) => self.fail(e),
        }
    }

    fn on_end(&mut self) {
        self.finished = true;
        if let Err(e) = self.translator.on_end(&mut self.out) {
            self.fail(e);
        }
    }
}

/// The item stream of `source` translated by `translator`, bounded by the idle timeout and
/// total duration of `opts`.
pub fn drive<S, T>(source: S, translator: T, opts: &ProviderOptions) -> Items<T::Item>
where
    S: Source,
    T: Translate<S::Event>,
{
    let state = State {
        source,
        translator,
        events: VecDeque::new(),
        out: VecDeque::new(),
        finished: false,
        done: false,
        idle: opts.stream_idle_timeout,
        deadline: tokio::time::Instant::now() + opts.stream_max_duration,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.out.pop_front() {
                return Some((item, st));
            }
            if st.finished {
                if std::mem::take(&mut st.done) {
                    st.source.done().await;
                }
                return None;
            }
            if let Some(event) = st.events.pop_front() {
                st.on_event(event);
                continue;
            }
            let left = st
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                st.fail(ProviderError::Timeout);
                continue;
            }
            match tokio::time::timeout(st.idle.min(left), st.source.read(&mut st.events)).await {
                Err(_) => st.fail(ProviderError::Timeout),
                Ok(Err(e)) => st.fail(e),
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    // Events completed by the last read come first.
                    while let Some(event) = st.events.pop_front() {
                        st.on_event(event);
                        if st.finished {
                            break;
                        }
                    }
                    if !st.finished {
                        st.on_end();
                    }
                }
            }
        }
    }))
}
