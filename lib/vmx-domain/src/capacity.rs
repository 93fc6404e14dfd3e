//! Capacity entries and their windows.
//!
//! Windows are calendar windows in UTC: `minute`, `hour`, `day`, `week` (ISO week, Monday
//! 00:00 UTC), `month` (calendar month) and `lifetime` (never resets).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, Month, OffsetDateTime, Time};

use crate::json::{Obj, type_name};
use crate::{Error, Result};

/// Most capacity entries one connection may carry.
pub const MAX_ENTRIES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Lifetime,
}

impl Period {
    pub const ALL: [(&'static str, Period); 6] = [
        ("minute", Period::Minute),
        ("hour", Period::Hour),
        ("day", Period::Day),
        ("week", Period::Week),
        ("month", Period::Month),
        ("lifetime", Period::Lifetime),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Lifetime => "lifetime",
        }
    }

    /// The window of this period that contains `now`.
    pub fn window(self, now: OffsetDateTime) -> Window {
        let secs = now.unix_timestamp();
        let fixed = |len: i64, tag: char| {
            let idx = secs.div_euclid(len);
            Window {
                key: format!("{tag}{idx}"),
                start: idx * len,
                end: Some((idx + 1) * len),
            }
        };
        match self {
            Self::Minute => fixed(60, 'm'),
            Self::Hour => fixed(3_600, 'h'),
            Self::Day => fixed(86_400, 'd'),
            Self::Week => {
                // 1970-01-01 was a Thursday; ISO weeks start on Monday, 3 days later than
                // the epoch's week would if it started on a Thursday.
                let day = secs.div_euclid(86_400);
                let idx = (day + 3).div_euclid(7);
                let start_day = idx * 7 - 3;
                Window {
                    key: format!("w{idx}"),
                    start: start_day * 86_400,
                    end: Some((start_day + 7) * 86_400),
                }
            }
            Self::Month => {
                let date = now.to_offset(time::UtcOffset::UTC).date();
                let idx = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1;
                let start = month_start(date.year(), date.month());
                let (ny, nm) = if date.month() == Month::December {
                    (date.year() + 1, Month::January)
                } else {
                    (date.year(), date.month().next())
                };
                Window {
                    key: format!("M{idx}"),
                    start,
                    end: Some(month_start(ny, nm)),
                }
            }
            Self::Lifetime => Window {
                key: "L".to_owned(),
                start: 0,
                end: None,
            },
        }
    }
}

fn month_start(year: i32, month: Month) -> i64 {
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp())
        .unwrap_or(0)
}

/// One window of a period: a stable key (the window id is part of the counter's name, so a
/// roll-over never has to reset anything), and its bounds in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub key: String,
    pub start: i64,
    /// `None` for lifetime.
    pub end: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dimension {
    #[serde(rename = "source-ip")]
    SourceIp,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceIp => "source-ip",
        }
    }
}

/// One capacity limit of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityEntry {
    pub period: Period,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Defaults to true: an entry without `enabled` is enforced.
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<Dimension>,
}

/// Validates a `capacity` array: known periods, positive limits (at least one of requests
/// and tokens), `enabled` defaulting to true, `dimension` only `source-ip`, and no two
/// entries for the same (period, dimension).
pub fn parse_capacity(value: &Value, path: &str) -> Result<Vec<CapacityEntry>> {
    let Value::Array(items) = value else {
        return Err(Error::invalid(
            path,
            format!("must be an array, got {}", type_name(value)),
        ));
    };
    if items.len() > MAX_ENTRIES {
        return Err(Error::invalid(
            path,
            format!("at most {MAX_ENTRIES} entries are allowed"),
        ));
    }
    let mut out: Vec<CapacityEntry> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let o = Obj::new(item, &item_path)?;
        o.deny_unknown(&["period", "requests", "tokens", "enabled", "dimension"])?;
        let period = o
            .enum_opt("period", &Period::ALL)?
            .ok_or_else(|| Error::invalid(o.path("period"), "is required"))?;
        let requests = o.positive_int_opt("requests")?;
        let tokens = o.positive_int_opt("tokens")?;
        if requests.is_none() && tokens.is_none() {
            return Err(Error::invalid(
                item_path,
                "needs at least one of requests and tokens",
            ));
        }
        let enabled = o.bool_opt("enabled")?.unwrap_or(true);
        let dimension = o.enum_opt("dimension", &[("source-ip", Dimension::SourceIp)])?;
        if let Some(prev) = out
            .iter()
            .position(|e| e.period == period && e.dimension == dimension)
        {
            return Err(Error::invalid(
                item_path,
                format!(
                    "duplicates {path}[{prev}]: only one entry per period and dimension (period '{}'{})",
                    period.as_str(),
                    dimension
                        .map(|d| format!(", dimension '{}'", d.as_str()))
                        .unwrap_or_default()
                ),
            ));
        }
        out.push(CapacityEntry {
            period,
            requests,
            tokens,
            enabled,
            dimension,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn field_of(r: Result<Vec<CapacityEntry>>) -> String {
        match r {
            Err(Error::Invalid { field, .. }) => field,
            other => format!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn enabled_defaults_to_true_and_fields_round_trip() {
        let v = json!([{"period": "minute", "requests": 100, "tokens": 100000},
                       {"period": "day", "tokens": 5, "enabled": false, "dimension": "source-ip"}]);
        let e = parse_capacity(&v, "capacity").expect("valid");
        assert!(e[0].enabled);
        assert!(!e[1].enabled);
        assert_eq!(e[1].dimension, Some(Dimension::SourceIp));
        assert_eq!(
            serde_json::to_value(&e[0]).expect("serializes"),
            json!({"period": "minute", "requests": 100, "tokens": 100000, "enabled": true})
        );
    }

    #[test]
    fn rejects_bad_entries_naming_the_field() {
        let cases = [
            (
                json!([{"period": "Minute", "requests": 1}]),
                "capacity[0].period",
            ),
            (
                json!([{"period": "fortnight", "requests": 1}]),
                "capacity[0].period",
            ),
            (json!([{"requests": 1}]), "capacity[0].period"),
            (json!([{"period": "minute"}]), "capacity[0]"),
            (
                json!([{"period": "minute", "requests": 0}]),
                "capacity[0].requests",
            ),
            (
                json!([{"period": "minute", "requests": -5}]),
                "capacity[0].requests",
            ),
            (
                json!([{"period": "minute", "requests": 1.5}]),
                "capacity[0].requests",
            ),
            (
                json!([{"period": "minute", "tokens": "10"}]),
                "capacity[0].tokens",
            ),
            (
                json!([{"period": "minute", "tokens": 10, "enabled": "yes"}]),
                "capacity[0].enabled",
            ),
            (
                json!([{"period": "minute", "tokens": 10, "dimension": "user"}]),
                "capacity[0].dimension",
            ),
            (
                json!([{"period": "minute", "tokens": 10, "burst": 3}]),
                "capacity[0].burst",
            ),
            (
                json!([{"period": "hour", "tokens": 1}, {"period": "hour", "requests": 2}]),
                "capacity[1]",
            ),
            (json!({"period": "hour"}), "capacity"),
            (json!(["minute"]), "capacity[0]"),
        ];
        for (v, field) in cases {
            assert_eq!(field_of(parse_capacity(&v, "capacity")), field, "input {v}");
        }
        // Same period with and without a dimension is fine.
        let ok = json!([{"period": "hour", "tokens": 1}, {"period": "hour", "requests": 2, "dimension": "source-ip"}]);
        assert!(parse_capacity(&ok, "capacity").is_ok());
    }

    #[test]
    fn windows_are_utc_calendar_windows() {
        // Wednesday 2026-11-25 13:45:30 UTC.
        let now = datetime!(2026-11-25 13:45:30 UTC);
        let m = Period::Minute.window(now);
        assert_eq!(m.start, datetime!(2026-11-25 13:45:00 UTC).unix_timestamp());
        assert_eq!(
            m.end,
            Some(datetime!(2026-11-25 13:46:00 UTC).unix_timestamp())
        );
        let h = Period::Hour.window(now);
        assert_eq!(h.start, datetime!(2026-11-25 13:00:00 UTC).unix_timestamp());
        let d = Period::Day.window(now);
        assert_eq!(
            d.end,
            Some(datetime!(2026-11-26 00:00:00 UTC).unix_timestamp())
        );
        let w = Period::Week.window(now);
        assert_eq!(
            w.start,
            datetime!(2026-11-23 00:00:00 UTC).unix_timestamp(),
            "Monday"
        );
        assert_eq!(
            w.end,
            Some(datetime!(2026-11-30 00:00:00 UTC).unix_timestamp())
        );
        let mo = Period::Month.window(now);
        assert_eq!(
            mo.start,
            datetime!(2026-11-01 00:00:00 UTC).unix_timestamp()
        );
        assert_eq!(
            mo.end,
            Some(datetime!(2026-12-01 00:00:00 UTC).unix_timestamp())
        );
        let dec = Period::Month.window(datetime!(2026-12-31 23:59:59 UTC));
        assert_eq!(
            dec.end,
            Some(datetime!(2027-01-01 00:00:00 UTC).unix_timestamp())
        );
        assert_ne!(dec.key, mo.key);
        let l = Period::Lifetime.window(now);
        assert_eq!(l.end, None);
        assert_eq!(
            l.key,
            Period::Lifetime
                .window(datetime!(2030-01-01 00:00:00 UTC))
                .key
        );
        // Sunday night is still the same ISO week as Monday morning.
        let sun = Period::Week.window(datetime!(2026-11-29 23:59:59 UTC));
        assert_eq!(sun.key, w.key);
        let mon = Period::Week.window(datetime!(2026-11-30 00:00:00 UTC));
        assert_ne!(mon.key, w.key);
    }
}
