//! What a window is to admission: metrics, scopes, counters, the planned windows, the
//! token estimate of a request, and window keys.

use super::*;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Requests,
    Tokens,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// Whose counter a window is: the connection's, one source IP's, or the caller's API key's
/// on this connection (the key's id is part of the window key, see [`key_window_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "scope", content = "ip", rename_all = "kebab-case")]
pub enum Scope {
    Connection,
    SourceIp(IpAddr),
    #[serde(rename = "apiKey")]
    ApiKey,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::SourceIp(_) => "source-ip",
            Self::ApiKey => "apiKey",
        }
    }

    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Self::Connection | Self::ApiKey => None,
            Self::SourceIp(ip) => Some(ip),
        }
    }
}

/// The form of an IP that counters are keyed by: IPv4-mapped IPv6 addresses become IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Request and token counters of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub tokens: u64,
}

impl Counters {
    pub fn get(self, metric: Metric) -> u64 {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
        }
    }
}

/// One window an admission must fit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedWindow {
    pub period: Period,
    pub scope: Scope,
    pub window: Window,
    /// Requests limit, if the entry sets one.
    pub requests: Option<u64>,
    /// Tokens limit, if the entry sets one.
    pub tokens: Option<u64>,
}

impl PlannedWindow {
    pub fn limit(&self, metric: Metric) -> Option<u64> {
        match metric {
            Metric::Requests => self.requests,
            Metric::Tokens => self.tokens,
        }
    }

    /// The key of the window just before this one (with the same API key suffix, see
    /// [`key_window_key`]); `None` for lifetime.
    pub fn previous_key(&self, now: OffsetDateTime) -> Option<String> {
        let prev = previous_window_key(self.period, now)?;
        Some(match self.window.key.split_once(KEY_WINDOW_SEPARATOR) {
            Some((_, key_id)) => key_window_key(&prev, key_id),
            None => prev,
        })
    }

    /// Seconds until the window ends (at least 1), `None` for lifetime.
    pub fn reset_secs(&self, now: OffsetDateTime) -> Option<u64> {
        self.window.end.map(|end| secs_until(end, now))
    }
}

pub(super) fn secs_until(end: i64, now: OffsetDateTime) -> u64 {
    u64::try_from(end.saturating_sub(now.unix_timestamp()))
        .unwrap_or(0)
        .max(1)
}

/// The token estimate of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenEstimate {
    /// Estimated prompt tokens: must fit in every token window.
    pub prompt: u64,
    /// Most output tokens to reserve; capped at what the windows have left.
    pub max_output: u64,
}

impl TokenEstimate {
    /// `requested_max_output` is the request's own output limit, if it states one;
    /// `default_output` is reserved otherwise (see [`DEFAULT_OUTPUT_RESERVATION`]).
    pub fn new(prompt: u64, requested_max_output: Option<u64>, default_output: u64) -> Self {
        Self {
            prompt,
            max_output: requested_max_output.unwrap_or(default_output),
        }
    }

    /// The estimate of a request of `prompt` tokens that may produce `output`
    /// ([`crate::output::output_limit`]): one output token per choice must fit with the
    /// prompt (so that every admitted request can be sent with a limit of at least 1), the
    /// rest of the output is capped at what the windows have left. The output the request
    /// may then be sent with is [`Reservation::sendable_output`].
    pub fn for_output(prompt: u64, output: crate::output::OutputLimit) -> Self {
        let first = output.choices.max(1);
        Self {
            prompt: prompt.saturating_add(first),
            max_output: output.total().saturating_sub(first),
        }
    }
}

/// What separates a window key from the API key id in the key of an API key's window.
pub const KEY_WINDOW_SEPARATOR: char = '~';

/// The window key of an API key's window on a connection: `<windowKey>~<keyId>` (e.g.
/// `m29481234~0193...`), so that the ledgers keep one counter per (key, connection, window)
/// next to the connection's own, under names that never collide with them.
pub fn key_window_key(window_key: &str, key_id: &str) -> String {
    format!("{window_key}{KEY_WINDOW_SEPARATOR}{key_id}")
}

/// The end (Unix seconds) of the window named `key` ([`Window::key`], or an API key's
/// window, [`key_window_key`]): `Some(None)` for lifetime, `None` when the key is not a
/// window key. Ledgers use it to recognise counters of ended windows and remove them.
pub fn window_key_end(key: &str) -> Option<Option<i64>> {
    let key = key
        .split_once(KEY_WINDOW_SEPARATOR)
        .map_or(key, |(window, _)| window);
    if key == "L" {
        return Some(None);
    }
    let mut chars = key.chars();
    let tag = chars.next()?;
    let idx: i64 = chars.as_str().parse().ok()?;
    let fixed = |len: i64| idx.checked_add(1)?.checked_mul(len);
    let end = match tag {
        'm' => fixed(60)?,
        'h' => fixed(3_600)?,
        'd' => fixed(86_400)?,
        'w' => idx.checked_mul(7)?.checked_add(4)?.checked_mul(86_400)?,
        'M' => {
            let next = idx.checked_add(1)?;
            let year = i32::try_from(next.div_euclid(12)).ok()?;
            let month = time::Month::try_from(u8::try_from(next.rem_euclid(12) + 1).ok()?).ok()?;
            time::Date::from_calendar_date(year, month, 1)
                .ok()?
                .with_time(time::Time::MIDNIGHT)
                .assume_utc()
                .unix_timestamp()
        }
        _ => return None,
    };
    Some(Some(end))
}

/// The key of the window of `period` just before the one containing `now`; `None` for
/// lifetime.
pub fn previous_window_key(period: Period, now: OffsetDateTime) -> Option<String> {
    let current = period.window(now);
    current.end?;
    let before = OffsetDateTime::from_unix_timestamp(current.start - 1).ok()?;
    Some(period.window(before).key)
}
