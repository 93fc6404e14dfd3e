//! The capacity ledger on redb.
//!
//! One table of `u64` counters, keyed `<connectionId>|<scope>|<windowKey>|<r|t>`, where the
//! scope is `c` (connection-wide) or `ip:<canonical ip>` and the last part says requests or
//! tokens. The window key is part of the counter's name, so a new window starts from zero
//! without any reset.
//!
//! With prioritization pools, the connection-wide windows also count per pool, under the
//! scope `p:<pool>`; those counters are kept one window longer (a pool with a counter in the
//! previous window is still active, see [`vmx_domain::prioritization`]).
//!
//! Each admission is one serializable write transaction: it reads the counters of every
//! window, decides ([`AdmitRequest::decide`]) and writes the charge to all of them, or
//! nothing. The same transaction removes the counters of ended windows under the scopes it
//! touches (a range scan of a few keys), so stale counters disappear on the next admission
//! of their connection or IP; `sweep` (the port's, per connection, run by the limit refresh)
//! and [`RedbLedger::sweep_all`] (every connection, e.g. at start-up) remove the rest (IPs
//! that never come back, connections without traffic).
//!
//! With [`RedbLedger::with_lazy_sync`] (the local server) the counters are served from
//! memory: loaded once from the table, changed under a mutex (microseconds, no transaction,
//! no thread hop), and written back to the table by the [`LazySync`] task, which syncs
//! every change since its last run in one transaction. An admission then never waits for
//! the disk, not even while that transaction's fsync runs. The logic is the same code over
//! both places ([`CounterTable`]); the memory copy is the only ledger on its database.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use time::OffsetDateTime;
use vmx_domain::admission::{
    Adjustment, Admission, AdmitRequest, CapacityUsage, Counters, Decision, IpUsage, Reservation,
    Scope, UsageRequest, WindowUsage, previous_window_key, top_ips, window_key_end,
};
use vmx_domain::capacity::Dimension;
use vmx_domain::ports::CapacityLedger;
use vmx_domain::prioritization::{OtherPool, PoolWindow, pool_counter_stale};
use vmx_domain::{Error, Result};

use crate::sync::{LazySync, WriteBehind};

/// `<connectionId>|<scope>|<windowKey>|<r|t>` -> counter.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("capacity_counters");

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("embedded capacity ledger: {e}"))
}

/// The capacity ledger of the embedded deployment.
#[derive(Clone)]
pub struct RedbLedger {
    db: Arc<Database>,
    /// The counters in memory, when changes are written back lazily.
    memory: Option<Arc<Memory>>,
}

fn scope_prefix(connection_id: &str, scope: Scope) -> String {
    match scope {
        Scope::Connection => format!("{connection_id}|c|"),
        Scope::SourceIp(ip) => format!("{connection_id}|ip:{ip}|"),
        // The key id is part of the window key (`<windowKey>~<keyId>`).
        Scope::ApiKey => format!("{connection_id}|k|"),
    }
}

fn pool_prefix(connection_id: &str, pool: &str) -> String {
    format!("{connection_id}|p:{pool}|")
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

/// The window key of a whole key `<conn>|<scope>|<windowKey>|<metric>`.
fn window_key_of(key: &str) -> &str {
    key.rsplit('|').nth(1).unwrap_or_default()
}

/// The window key of lifetime counters.
const LIFETIME_KEY: &str = "L";

/// A whole key of a window that ended at or before `now` (for a pool counter: whose next
/// window did).
fn is_stale_key(key: &str, now: i64) -> bool {
    if key.split('|').nth(1).is_some_and(|s| s.starts_with("p:")) {
        return pool_counter_stale(window_key_of(key), now);
    }
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

/// Where the ledger's logic reads and writes counters: a redb table, or [`Memory`].
trait CounterRead {
    /// The counter at `key` (0 when absent).
    fn get(&self, key: &str) -> Result<u64>;
    /// Whether a counter exists at `key`.
    fn contains(&self, key: &str) -> Result<bool>;
    /// Calls `f` with every counter whose key is in `lo..hi`, in key order.
    fn scan(&self, lo: &str, hi: &str, f: &mut dyn FnMut(&str, u64)) -> Result<()>;
}

trait CounterTable: CounterRead {
    fn set(&mut self, key: &str, value: u64) -> Result<()>;
    /// Removes the counters in `range` (every one if `None`) for which `remove` is true;
    /// returns how many.
    fn remove_if(
        &mut self,
        range: Option<(&str, &str)>,
        remove: &mut dyn FnMut(&str) -> bool,
    ) -> Result<u64>;
}

/// A redb table of counters, read-only or writable.
struct Redb<T>(T);

impl<T: ReadableTable<&'static str, u64>> CounterRead for Redb<T> {
    fn get(&self, key: &str) -> Result<u64> {
        Ok(self.0.get(key).map_err(db_err)?.map_or(0, |v| v.value()))
    }

    fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.0.get(key).map_err(db_err)?.is_some())
    }

    fn scan(&self, lo: &str, hi: &str, f: &mut dyn FnMut(&str, u64)) -> Result<()> {
        for item in self.0.range::<&str>(lo..hi).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            f(k.value(), v.value());
        }
        Ok(())
    }
}

impl CounterTable for Redb<redb::Table<'_, &'static str, u64>> {
    fn set(&mut self, key: &str, value: u64) -> Result<()> {
        self.0.insert(key, value).map_err(db_err).map(|_| ())
    }

    fn remove_if(
        &mut self,
        range: Option<(&str, &str)>,
        remove: &mut dyn FnMut(&str) -> bool,
    ) -> Result<u64> {
        let mut removed = 0u64;
        let mut keep = |k: &str| {
            let gone = remove(k);
            removed += u64::from(gone);
            !gone
        };
        match range {
            Some((lo, hi)) => self.0.retain_in(lo..hi, |k, _| keep(k)),
            None => self.0.retain(|k, _| keep(k)),
        }
        .map_err(db_err)?;
        Ok(removed)
    }
}

/// The counters of a lazily synced ledger, and what changed since they were last written
/// back (`None`: removed).
#[derive(Default)]
struct Counts {
    counters: BTreeMap<String, u64>,
    dirty: BTreeMap<String, Option<u64>>,
}

impl CounterRead for Counts {
    fn get(&self, key: &str) -> Result<u64> {
        Ok(self.counters.get(key).copied().unwrap_or(0))
    }

    fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.counters.contains_key(key))
    }

    fn scan(&self, lo: &str, hi: &str, f: &mut dyn FnMut(&str, u64)) -> Result<()> {
        for (k, v) in self
            .counters
            .range::<str, _>((Bound::Included(lo), Bound::Excluded(hi)))
        {
            f(k, *v);
        }
        Ok(())
    }
}

impl CounterTable for Counts {
    fn set(&mut self, key: &str, value: u64) -> Result<()> {
        self.counters.insert(key.to_owned(), value);
        self.dirty.insert(key.to_owned(), Some(value));
        Ok(())
    }

    fn remove_if(
        &mut self,
        range: Option<(&str, &str)>,
        remove: &mut dyn FnMut(&str) -> bool,
    ) -> Result<u64> {
        let gone: Vec<String> = match range {
            Some((lo, hi)) => self
                .counters
                .range::<str, _>((Bound::Included(lo), Bound::Excluded(hi)))
                .map(|(k, _)| k)
                .filter(|k| remove(k))
                .cloned()
                .collect(),
            None => self
                .counters
                .keys()
                .filter(|k| remove(k))
                .cloned()
                .collect(),
        };
        for k in &gone {
            self.counters.remove(k);
            self.dirty.insert(k.clone(), None);
        }
        Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
    }
}

/// [`Counts`] shared by the ledger and its [`LazySync`]; `writing` holds the changes of a
/// write-back in progress, put back into `dirty` if it fails.
struct Memory {
    counts: Mutex<Counts>,
    writing: Mutex<BTreeMap<String, Option<u64>>>,
    /// Weak: the sync holds this memory (to write it back even after the ledger is gone).
    sync: Weak<LazySync>,
}

impl Memory {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> Result<T>) -> Result<T> {
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| db_err("in-memory counters poisoned"))?;
        let out = f(&mut counts);
        if !counts.dirty.is_empty()
            && let Some(sync) = self.sync.upgrade()
        {
            sync.mark();
        }
        out
    }
}

impl WriteBehind for Memory {
    fn write_into(&self, txn: &WriteTransaction) -> std::result::Result<(), String> {
        let changes = match self.counts.lock() {
            Ok(mut c) => std::mem::take(&mut c.dirty),
            Err(_) => return Err("in-memory counters poisoned".into()),
        };
        let mut table = txn.open_table(COUNTERS).map_err(|e| e.to_string())?;
        for (k, v) in &changes {
            match v {
                Some(v) => table.insert(k.as_str(), *v).map(|_| ()),
                None => table.remove(k.as_str()).map(|_| ()),
            }
            .map_err(|e| e.to_string())?;
        }
        if let Ok(mut w) = self.writing.lock() {
            *w = changes;
        }
        Ok(())
    }

    fn done(&self, committed: bool) {
        let changes = match self.writing.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => return,
        };
        if !committed && let Ok(mut c) = self.counts.lock() {
            // What changed again since is newer than what failed to be written.
            for (k, v) in changes {
                c.dirty.entry(k).or_insert(v);
            }
        }
    }
}

fn remove_stale(table: &mut dyn CounterTable, prefix: &str, now: i64) -> Result<()> {
    let end = prefix_end(prefix);
    table.remove_if(Some((prefix, end.as_str())), &mut |k| is_stale_key(k, now))?;
    Ok(())
}

/// The pool counters of `request`'s connection-wide windows (empty without pools).
fn pool_windows(table: &dyn CounterTable, request: &AdmitRequest) -> Result<Vec<PoolWindow>> {
    let Some(pools) = &request.pools else {
        return Ok(Vec::new());
    };
    let conn = &request.connection_id;
    let counters = |prefix: &str, key: &str| -> Result<Counters> {
        Ok(Counters {
            requests: table.get(&counter_key(prefix, key, 'r'))?,
            tokens: table.get(&counter_key(prefix, key, 't'))?,
        })
    };
    let mut out = Vec::with_capacity(request.windows.len());
    for w in &request.windows {
        if w.scope != Scope::Connection {
            out.push(PoolWindow::default());
            continue;
        }
        let key = &w.window.key;
        let prev = previous_window_key(w.period, request.now);
        let mut others = Vec::with_capacity(pools.others.len());
        for q in &pools.others {
            let prefix = pool_prefix(conn, &q.name);
            let mut active = table.contains(&counter_key(&prefix, key, 'r'))?;
            if let Some(prev) = &prev {
                active |= table.contains(&counter_key(&prefix, prev, 'r'))?;
            }
            others.push(OtherPool {
                active,
                used: counters(&prefix, key)?,
            });
        }
        out.push(PoolWindow {
            own: counters(&pool_prefix(conn, &pools.pool.name), key)?,
            others,
        });
    }
    Ok(out)
}

impl RedbLedger {
    /// Uses (and creates if needed) the ledger's table in `db`, the database the
    /// connection store also uses.
    pub fn new(db: Arc<Database>) -> Result<Self> {
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(COUNTERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db, memory: None })
    }

    /// Serves the counters from memory (loaded now from the table) and leaves writing them
    /// back, and syncing, to `sync` (see [`crate::sync`]). Without this, every admission
    /// and reconciliation is a transaction synced on commit. The database must have no
    /// other ledger.
    pub fn with_lazy_sync(mut self, sync: Arc<LazySync>) -> Result<Self> {
        let mut counts = Counts::default();
        {
            let txn = self.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(COUNTERS).map_err(db_err)?;
            for item in table.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                counts.counters.insert(k.value().to_owned(), v.value());
            }
        }
        let memory = Arc::new(Memory {
            counts: Mutex::new(counts),
            writing: Mutex::new(BTreeMap::new()),
            sync: Arc::downgrade(&sync),
        });
        sync.register(memory.clone());
        self.memory = Some(memory);
        Ok(self)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(db_err)?
    }

    /// Runs `f` on the counters: in memory, or in a write transaction committed when `f`
    /// returns `Ok(true)` (aborted on `Ok(false)`).
    async fn change<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn CounterTable) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T> {
        if let Some(memory) = &self.memory {
            return memory.with(|c| f(c).map(|(out, _)| out));
        }
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let (out, commit) = {
                let mut table = Redb(txn.open_table(COUNTERS).map_err(db_err)?);
                f(&mut table)?
            };
            if commit {
                txn.commit().map_err(db_err)?;
            } else {
                txn.abort().map_err(db_err)?;
            }
            Ok(out)
        })
        .await
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
        self.change(move |t| {
            let end = prefix.as_deref().map(prefix_end);
            let range = prefix.as_deref().zip(end.as_deref());
            let removed = t.remove_if(range, &mut |k| stale(k))?;
            Ok((removed, true))
        })
        .await
    }
}

/// Reads the counters of every window, decides, and charges all of them or none; removes
/// the ended windows' counters under the scopes it touched. The bool: whether to commit.
fn admit_on(table: &mut dyn CounterTable, request: &AdmitRequest) -> Result<(Admission, bool)> {
    let now = request.now.unix_timestamp();
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
            requests: table.get(r)?,
            tokens: table.get(t)?,
        });
    }
    let pools = pool_windows(table, request)?;
    match request.decide_pooled(&used, &pools) {
        Decision::Reject(rejection) => {
            // A pool with a minimum that is turned away is active from now on: its first
            // rejection marks it (a request counter at 0), so its minimum is protected.
            let mut marked = false;
            if let Some(p) = request.pools.as_ref().filter(|p| p.pool.min > 0) {
                let prefix = pool_prefix(&request.connection_id, &p.pool.name);
                for w in request
                    .windows
                    .iter()
                    .filter(|w| w.scope == Scope::Connection)
                {
                    let key = counter_key(&prefix, &w.window.key, 'r');
                    if !table.contains(&key)? {
                        table.set(&key, 0)?;
                        marked = true;
                    }
                }
            }
            Ok((Admission::Rejected(rejection), marked))
        }
        Decision::Charge { tokens } => {
            let mut after = Vec::with_capacity(used.len());
            for ((r, t), u) in keys.iter().zip(&used) {
                let next = Counters {
                    requests: u.requests.saturating_add(1),
                    tokens: u.tokens.saturating_add(tokens),
                };
                table.set(r, next.requests)?;
                table.set(t, next.tokens)?;
                after.push(next);
            }
            let mut prefixes: Vec<String> = request
                .windows
                .iter()
                .map(|w| scope_prefix(&request.connection_id, w.scope))
                .collect();
            if let Some(p) = &request.pools {
                let prefix = pool_prefix(&request.connection_id, &p.pool.name);
                for (w, own) in request.windows.iter().zip(&pools) {
                    if w.scope != Scope::Connection {
                        continue;
                    }
                    let key = &w.window.key;
                    table.set(
                        &counter_key(&prefix, key, 'r'),
                        own.own.requests.saturating_add(1),
                    )?;
                    table.set(
                        &counter_key(&prefix, key, 't'),
                        own.own.tokens.saturating_add(tokens),
                    )?;
                }
                prefixes.push(prefix);
            }
            prefixes.dedup();
            for prefix in &prefixes {
                remove_stale(table, prefix, now)?;
            }
            Ok((Admission::Admitted(request.admitted(tokens, after)), true))
        }
    }
}

fn adjust_on(
    table: &mut dyn CounterTable,
    reservation: &Reservation,
    adjustment: Adjustment,
    now: OffsetDateTime,
) -> Result<((), bool)> {
    let conn = &reservation.connection_id;
    for w in reservation.windows.iter().filter(|w| w.is_live(now)) {
        let mut prefixes = vec![scope_prefix(conn, w.scope)];
        if let (Some(pool), Scope::Connection) = (&reservation.pool, w.scope) {
            prefixes.push(pool_prefix(conn, pool));
        }
        for prefix in &prefixes {
            if adjustment.refund_request {
                let key = counter_key(prefix, &w.key, 'r');
                let v = table.get(&key)?.saturating_sub(1);
                table.set(&key, v)?;
            }
            if adjustment.token_delta != 0 {
                let key = counter_key(prefix, &w.key, 't');
                let v = table
                    .get(&key)?
                    .saturating_add_signed(adjustment.token_delta);
                table.set(&key, v)?;
            }
        }
    }
    Ok(((), true))
}

fn usage_on(table: &dyn CounterRead, request: &UsageRequest) -> Result<CapacityUsage> {
    let conn = &request.connection_id;
    let mut windows = Vec::with_capacity(request.windows.len());
    for w in &request.windows {
        match w.dimension {
            None => {
                let prefix = scope_prefix(conn, Scope::Connection);
                // The pools' counters, from the same snapshot.
                let pools = request.pool_usage(w, |pool, key| {
                    let prefix = pool_prefix(conn, pool);
                    let requests = counter_key(&prefix, key, 'r');
                    if !table.contains(&requests)? {
                        return Ok(None);
                    }
                    Ok(Some(Counters {
                        requests: table.get(&requests)?,
                        tokens: table.get(&counter_key(&prefix, key, 't'))?,
                    }))
                })?;
                windows.push(WindowUsage {
                    window: w.clone(),
                    used: Counters {
                        requests: table.get(&counter_key(&prefix, &w.window.key, 'r'))?,
                        tokens: table.get(&counter_key(&prefix, &w.window.key, 't'))?,
                    },
                    top_ips: Vec::new(),
                    ip_count: 0,
                    pools,
                });
            }
            Some(Dimension::SourceIp) => {
                let prefix = format!("{conn}|ip:");
                let end = format!("{conn}|ip;");
                let mut per_ip: BTreeMap<String, Counters> = BTreeMap::new();
                table.scan(&prefix, &end, &mut |key, value| {
                    let Some(rest) = key.get(prefix.len()..) else {
                        return;
                    };
                    // <ip>|<windowKey>|<metric>; IPv6 addresses contain ':' but no '|'.
                    let mut parts = rest.rsplitn(3, '|');
                    let (Some(metric), Some(window_key), Some(ip)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return;
                    };
                    if window_key != w.window.key {
                        return;
                    }
                    let c = per_ip.entry(ip.to_owned()).or_default();
                    match metric {
                        "r" => c.requests = value,
                        "t" => c.tokens = value,
                        _ => {}
                    }
                })?;
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
                    pools: Vec::new(),
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
        self.change(move |t| admit_on(t, &request)).await
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
        self.change(move |t| adjust_on(t, &reservation, adjustment, now))
            .await
    }

    async fn usage(&self, request: &UsageRequest) -> Result<CapacityUsage> {
        check_id(&request.connection_id)?;
        let request = request.clone();
        if let Some(memory) = &self.memory {
            return memory.with(|c| usage_on(&*c, &request));
        }
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let table = Redb(txn.open_table(COUNTERS).map_err(db_err)?);
            usage_on(&table, &request)
        })
        .await
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
        assert!(is_stale_key("c1|c|m0|r", 60));
        assert!(!is_stale_key("c1|c|m1|r", 60));
        assert!(!is_stale_key("c1|c|L|t", i64::MAX));
        // Pool counters outlive their window by one window.
        assert!(!is_stale_key("c1|p:web|m0|r", 60));
        assert!(is_stale_key("c1|p:web|m0|r", 120));
        assert!(check_id("a|b").is_err());
    }
}
