//! The capacity ledger on redb.
//!
//! One table of `u64` counters, keyed `<connectionId>|<scope>|<windowKey>|<r|t>`, where the
//! scope is `c` (connection-wide) or `ip:<canonical ip>` and the last part says requests or
//! tokens. The window key is part of the counter's name, so a new window starts from zero
//! without any reset.
//!
//! Each admission is one serializable write transaction: it reads the counters of every
//! window, decides ([`AdmitRequest::decide`]) and writes the charge to all of them, or
//! nothing. The same transaction removes the counters of ended windows under the scopes it
//! touches (a range scan of a few keys), so stale counters disappear on the next admission
//! of their connection or IP; `sweep` (the port's, per connection, run by the limit refresh)
//! and [`RedbLedger::sweep_all`] (every connection, e.g. at start-up) remove the rest (IPs
//! that never come back, connections without traffic).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use time::OffsetDateTime;
use vmx_domain::admission::{
    Adjustment, Admission, AdmitRequest, CapacityUsage, Counters, Decision, IpUsage, Reservation,
    Scope, UsageRequest, WindowUsage, top_ips, window_key_end,
};
use vmx_domain::capacity::Dimension;
use vmx_domain::ports::CapacityLedger;
use vmx_domain::{Error, Result};

use crate::sync::{LazySync, commit};

/// `<connectionId>|<scope>|<windowKey>|<r|t>` -> counter.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("capacity_counters");

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded capacity ledger: {e}"))
}

/// The capacity ledger of the embedded deployment.
#[derive(Clone)]
pub struct RedbLedger {
    db: Arc<Database>,
    sync: Option<Arc<LazySync>>,
}

fn scope_prefix(connection_id: &str, scope: Scope) -> String {
    match scope {
        Scope::Connection => format!("{connection_id}|c|"),
        Scope::SourceIp(ip) => format!("{connection_id}|ip:{ip}|"),
    }
}

/// The first key after every key starting with `prefix` (which ends with `|`).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.trim_end_matches('|').to_owned();
    end.push('}');
    end
}

fn counter_key(prefix: &str, window_key: &str, metric: char) -> String {
    format!("{prefix}{window_key}|{metric}")
}

/// `<windowKey>|<r|t>`, the part of a key after its scope prefix.
fn is_stale(rest: &str, now: i64) -> bool {
    let window_key = rest.split('|').next().unwrap_or_default();
    matches!(window_key_end(window_key), Some(Some(end)) if end <= now)
}

/// The window key of a whole key `<conn>|<scope>|<windowKey>|<metric>`.
fn window_key_of(key: &str) -> &str {
    key.rsplit('|').nth(1).unwrap_or_default()
}

/// The window key of lifetime counters.
const LIFETIME_KEY: &str = "L";

/// A whole key of a window that ended at or before `now`.
fn is_stale_key(key: &str, now: i64) -> bool {
    matches!(window_key_end(window_key_of(key)), Some(Some(end)) if end <= now)
}

fn check_id(connection_id: &str) -> Result<()> {
    if connection_id.is_empty() || connection_id.contains('|') {
        return Err(Error::invalid(
            "connectionId",
            "must be non-empty and must not contain '|'",
        ));
    }
    Ok(())
}

fn read(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    Ok(table.get(key).map_err(db_err)?.map_or(0, |v| v.value()))
}

fn remove_stale(table: &mut Table<'_, &'static str, u64>, prefix: &str, now: i64) -> Result<()> {
    let end = prefix_end(prefix);
    let len = prefix.len();
    table
        .retain_in(prefix..end.as_str(), |k, _| {
            !k.get(len..).is_some_and(|rest| is_stale(rest, now))
        })
        .map_err(db_err)
}

impl RedbLedger {
    /// Uses (and creates if needed) the ledger's table in `db`, the database the
    /// connection store also uses.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(COUNTERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db, sync: None })
    }

    /// Commits admissions and reconciliations lazily, made durable by `sync` (see
    /// [`crate::sync`]); without this, each is synced on commit.
    pub fn with_lazy_sync(mut self, sync: Arc<LazySync>) -> Self {
        self.sync = Some(sync);
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database, Option<&LazySync>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (db, sync) = (self.db.clone(), self.sync.clone());
        tokio::task::spawn_blocking(move || f(&db, sync.as_deref()))
            .await
            .map_err(db_err)?
    }

    /// Removes the counters of every window that ended before `now`; returns how many.
    pub async fn sweep_all(&self, now: OffsetDateTime) -> Result<u64> {
        let now = now.unix_timestamp();
        self.remove_where(None, move |k| is_stale_key(k, now)).await
    }

    /// Removes the counters whose key is under `prefix` (all if `None`) and `stale`, in one
    /// write transaction; returns how many.
    async fn remove_where(
        &self,
        prefix: Option<String>,
        stale: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<u64> {
        self.blocking(move |db, _| {
            let txn = db.begin_write().map_err(db_err)?;
            let mut removed = 0u64;
            {
                let mut table = txn.open_table(COUNTERS).map_err(db_err)?;
                let mut keep = |k: &str| {
                    let gone = stale(k);
                    removed += u64::from(gone);
                    !gone
                };
                match &prefix {
                    Some(p) => table.retain_in(p.as_str()..prefix_end(p).as_str(), |k, _| keep(k)),
                    None => table.retain(|k, _| keep(k)),
                }
                .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(removed)
        })
        .await
    }
}

fn admit_in(db: &Database, sync: Option<&LazySync>, request: &AdmitRequest) -> Result<Admission> {
    let now = request.now.unix_timestamp();
    let txn = db.begin_write().map_err(db_err)?;
    let outcome = {
        let mut table = txn.open_table(COUNTERS).map_err(db_err)?;
        let keys: Vec<(String, String)> = request
            .windows
            .iter()
            .map(|w| {
                let prefix = scope_prefix(&request.connection_id, w.scope);
                (
                    counter_key(&prefix, &w.window.key, 'r'),
                    counter_key(&prefix, &w.window.key, 't'),
                )
            })
            .collect();
        let mut used = Vec::with_capacity(keys.len());
        for (r, t) in &keys {
            used.push(Counters {
                requests: read(&table, r)?,
                tokens: read(&table, t)?,
            });
        }
        match request.decide(&used) {
            Decision::Reject(rejection) => Admission::Rejected(rejection),
            Decision::Charge { tokens } => {
                let mut after = Vec::with_capacity(used.len());
                for ((r, t), u) in keys.iter().zip(&used) {
                    let next = Counters {
                        requests: u.requests.saturating_add(1),
                        tokens: u.tokens.saturating_add(tokens),
                    };
                    table.insert(r.as_str(), next.requests).map_err(db_err)?;
                    table.insert(t.as_str(), next.tokens).map_err(db_err)?;
                    after.push(next);
                }
                let mut prefixes: Vec<String> = request
                    .windows
                    .iter()
                    .map(|w| scope_prefix(&request.connection_id, w.scope))
                    .collect();
                prefixes.dedup();
                for prefix in &prefixes {
                    remove_stale(&mut table, prefix, now)?;
                }
                Admission::Admitted(request.admitted(tokens, after))
            }
        }
    };
    match outcome {
        Admission::Rejected(_) => txn.abort().map_err(db_err)?,
        Admission::Admitted(_) => commit(txn, sync).map_err(db_err)?,
    }
    Ok(outcome)
}

fn adjust_in(
    db: &Database,
    sync: Option<&LazySync>,
    reservation: &Reservation,
    adjustment: Adjustment,
    now: OffsetDateTime,
) -> Result<()> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(COUNTERS).map_err(db_err)?;
        for w in reservation.windows.iter().filter(|w| w.is_live(now)) {
            let prefix = scope_prefix(&reservation.connection_id, w.scope);
            if adjustment.refund_request {
                let key = counter_key(&prefix, &w.key, 'r');
                let v = read(&table, &key)?.saturating_sub(1);
                table.insert(key.as_str(), v).map_err(db_err)?;
            }
            if adjustment.token_delta != 0 {
                let key = counter_key(&prefix, &w.key, 't');
                let v = read(&table, &key)?.saturating_add_signed(adjustment.token_delta);
                table.insert(key.as_str(), v).map_err(db_err)?;
            }
        }
    }
    commit(txn, sync).map_err(db_err)
}

fn usage_in(db: &Database, request: &UsageRequest) -> Result<CapacityUsage> {
    let txn = db.begin_read().map_err(db_err)?;
    let table = txn.open_table(COUNTERS).map_err(db_err)?;
    let conn = &request.connection_id;
    let mut windows = Vec::with_capacity(request.windows.len());
    for w in &request.windows {
        match w.dimension {
            None => {
                let prefix = scope_prefix(conn, Scope::Connection);
                windows.push(WindowUsage {
                    window: w.clone(),
                    used: Counters {
                        requests: read(&table, &counter_key(&prefix, &w.window.key, 'r'))?,
                        tokens: read(&table, &counter_key(&prefix, &w.window.key, 't'))?,
                    },
                    top_ips: Vec::new(),
                    ip_count: 0,
                });
            }
            Some(Dimension::SourceIp) => {
                let prefix = format!("{conn}|ip:");
                let end = format!("{conn}|ip;");
                let mut per_ip: BTreeMap<String, Counters> = BTreeMap::new();
                for item in table
                    .range::<&str>(prefix.as_str()..end.as_str())
                    .map_err(db_err)?
                {
                    let (k, v) = item.map_err(db_err)?;
                    let key = k.value();
                    let Some(rest) = key.get(prefix.len()..) else {
                        continue;
                    };
                    // <ip>|<windowKey>|<metric>; IPv6 addresses contain ':' but no '|'.
                    let mut parts = rest.rsplitn(3, '|');
                    let (Some(metric), Some(window_key), Some(ip)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    if window_key != w.window.key {
                        continue;
                    }
                    let c = per_ip.entry(ip.to_owned()).or_default();
                    match metric {
                        "r" => c.requests = v.value(),
                        "t" => c.tokens = v.value(),
                        _ => {}
                    }
                }
                let ips: Vec<IpUsage> = per_ip
                    .into_iter()
                    .map(|(ip, used)| IpUsage { ip, used })
                    .collect();
                let ip_count = u64::try_from(ips.len()).unwrap_or(u64::MAX);
                windows.push(WindowUsage {
                    window: w.clone(),
                    used: Counters::default(),
                    top_ips: top_ips(ips, w, request.top_n),
                    ip_count,
                });
            }
        }
    }
    Ok(CapacityUsage {
        connection_id: conn.clone(),
        at: request.now,
        windows,
    })
}

#[async_trait]
impl CapacityLedger for RedbLedger {
    async fn sweep(
        &self,
        connection_id: &str,
        keep_lifetime: bool,
        now: OffsetDateTime,
    ) -> Result<u64> {
        check_id(connection_id)?;
        let now = now.unix_timestamp();
        self.remove_where(Some(format!("{connection_id}|")), move |k| {
            is_stale_key(k, now) || (!keep_lifetime && window_key_of(k) == LIFETIME_KEY)
        })
        .await
    }

    async fn admit(&self, request: &AdmitRequest) -> Result<Admission> {
        if request.is_unlimited() {
            return Ok(Admission::Admitted(request.admitted(0, Vec::new())));
        }
        check_id(&request.connection_id)?;
        let request = request.clone();
        self.blocking(move |db, sync| admit_in(db, sync, &request))
            .await
    }

    async fn adjust(
        &self,
        reservation: &Reservation,
        adjustment: Adjustment,
        now: OffsetDateTime,
    ) -> Result<()> {
        if adjustment.is_noop() || !reservation.windows.iter().any(|w| w.is_live(now)) {
            return Ok(());
        }
        check_id(&reservation.connection_id)?;
        let reservation = reservation.clone();
        self.blocking(move |db, sync| adjust_in(db, sync, &reservation, adjustment, now))
            .await
    }

    async fn usage(&self, request: &UsageRequest) -> Result<CapacityUsage> {
        check_id(&request.connection_id)?;
        let request = request.clone();
        self.blocking(move |db, _| usage_in(db, &request)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes() {
        let ip = Scope::SourceIp("2001:db8::1".parse().expect("ip"));
        let p = scope_prefix("c1", ip);
        assert_eq!(p, "c1|ip:2001:db8::1|");
        assert_eq!(counter_key(&p, "m5", 'r'), "c1|ip:2001:db8::1|m5|r");
        assert!(prefix_end(&p).as_str() > counter_key(&p, "m5", 't').as_str());
        assert!(
            "c1|ip:2001:db8::1:5|m5|r" < p.as_str()
                || "c1|ip:2001:db8::1:5|m5|r" >= prefix_end(&p).as_str()
        );
        assert!(is_stale("m0|r", 60));
        assert!(!is_stale("m1|r", 60));
        assert!(!is_stale("L|t", i64::MAX));
        assert!(check_id("a|b").is_err());
    }
}
