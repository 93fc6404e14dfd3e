//! Section `capacity`: the capacity path on its own, through the [`CapacityLedger`] port:
//! admissions per second for one connection on each store, callers 1, 8 and 64 in closed
//! loops for a fixed time, and contention (64 callers on one connection against a limit that
//! is reached: the admitted count must equal the limit exactly).
//!
//! Stores: the embedded redb ledger synced on every commit, the same with the server's lazy
//! sync (commits with `Durability::None`, one synced commit per 100 ms, as `vmx-server`
//! runs it by default), and the DynamoDB ledger against moto behind the serializing proxy
//! (moto is one Python process: that figure measures moto, and is there for the adapter's
//! call count per operation). A raw redb commit of one key, synced and not, shows what an
//! fsync costs on this disk. With `admit, 3 pools`, the same admissions by a caller in one
//! of three active prioritization pools (see [`vmx_domain::prioritization`]): what pools
//! cost per admission (AWS calls per op: the writes per request with pools on).
//!
//! Options: `--seconds <s>` per redb run (default 3), `--moto-seconds <s>` per DynamoDB run
//! (default 2), `--callers 1,8,64`, `--limit <n>` of the contention case (default 500),
//! `--dir <path>` for the redb databases (default: a temporary directory under the system
//! one), `--no-dynamodb` to skip moto (otherwise `AWS_ENDPOINT_URL` must name it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redb::{Database, Durability, TableDefinition};
use time::OffsetDateTime;
use vmx_aws::dynamo_ledger::DynamoLedger;
use vmx_conformance::capacity::{entry, unique_id};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::admission::{Admission, AdmitRequest, TokenEstimate, UsageRequest, plan};
use vmx_domain::capacity::{CapacityEntry, Period};
use vmx_domain::ports::CapacityLedger;
use vmx_local::LazySync;
use vmx_local::ledger::RedbLedger;

use crate::BenchResult;
use crate::report::{flag, ms, num, opt, table};

type Ledger = Arc<dyn CapacityLedger>;

/// Prompt tokens estimated, output tokens reserved, tokens reported after the call.
const PROMPT: u64 = 10;
const MAX_OUTPUT: u64 = 100;
const ACTUAL: u64 = 15;

/// Minute, hour and day windows, requests and tokens; `minute_requests` on the minute one,
/// the others out of reach.
fn entries(minute_requests: u64) -> Vec<CapacityEntry> {
    vec![
        entry(
            Period::Minute,
            Some(minute_requests),
            Some(1_000_000_000_000),
        ),
        entry(Period::Hour, Some(1_000_000_000), Some(1_000_000_000_000)),
        entry(Period::Day, Some(1_000_000_000), Some(1_000_000_000_000)),
    ]
}

fn admit_request(
    id: &str,
    entries: &[CapacityEntry],
    now: OffsetDateTime,
) -> BenchResult<AdmitRequest> {
    plan(
        id,
        "bench",
        entries,
        "10.0.0.1".parse()?,
        TokenEstimate {
            prompt: PROMPT,
            max_output: MAX_OUTPUT,
        },
        now,
    )
    .map_err(|r| r.message().into())
}

fn histogram() -> BenchResult<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

/// A store under test.
struct Store {
    name: &'static str,
    ledger: Ledger,
    /// The proxy in front of moto, for the call counts.
    proxy: Option<Arc<SerialProxy>>,
    /// How long each throughput run lasts.
    seconds: f64,
}

/// One throughput run's result.
struct Run {
    ops: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    errors: u64,
    rejected: u64,
    calls: Vec<String>,
}

/// `callers` closed loops on one connection for `seconds`, each admitting (and, with
/// `adjust`, reconciling the reservation) as fast as the ledger answers.
async fn throughput(store: &Store, callers: usize, adjust: bool, pools: bool) -> BenchResult<Run> {
    let now = OffsetDateTime::now_utc();
    let id = unique_id("bench");
    let entries = entries(1_000_000_000);
    let mut req = admit_request(&id, &entries, now)?;
    if pools {
        let def = vmx_conformance::pools::definition(&[
            ("web", 1, "kw", 30, 60),
            ("api", 2, "ka", 20, 50),
            ("batch", 3, "kb", 0, 40),
        ]);
        // Every pool active (not part of the run); the run admits as `api`, which has
        // both a pool of lower rank and one with a minimum to respect.
        for key in ["kw", "kb"] {
            let other = admit_request(&id, &entries, now)?.with_pools(def.admission(Some(key)));
            store.ledger.admit(&other).await?;
        }
        req = req.with_pools(def.admission(Some("ka")));
    }
    let req = Arc::new(req);
    // One admission first, so the connection's counters exist (not part of the run).
    store.ledger.admit(&req).await?;
    if let Some(p) = &store.proxy {
        p.clear();
    }
    let (errors, rejected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(store.seconds);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (ledger, req) = (store.ledger.clone(), req.clone());
        let (errors, rejected) = (errors.clone(), rejected.clone());
        let mut h = histogram()?;
        tasks.push(tokio::spawn(async move {
            let mut ops = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match ledger.admit(&req).await {
                    Ok(Admission::Admitted(a)) => {
                        if adjust {
                            let r = &a.reservation;
                            if ledger.adjust(r, r.reconcile(ACTUAL), now).await.is_err() {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(Admission::Rejected(_)) => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                h.saturating_record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                ops += 1;
            }
            (ops, h)
        }));
    }
    let mut latency = histogram()?;
    let mut ops = 0;
    for t in tasks {
        let (n, h) = t.await?;
        ops += n;
        latency.add(&h)?;
    }
    let elapsed = start.elapsed();
    let calls = store.proxy.as_ref().map(|p| p.calls()).unwrap_or_default();
    Ok(Run {
        ops,
        elapsed,
        latency,
        errors: errors.load(Ordering::Relaxed),
        rejected: rejected.load(Ordering::Relaxed),
        calls,
    })
}

/// AWS operations per ledger operation, e.g. `UpdateItem 1.00`.
fn calls_per_op(calls: &[String], ops: u64) -> String {
    if calls.is_empty() {
        return "—".to_owned();
    }
    let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
    for c in calls {
        let op = c.rsplit_once('.').map_or(c.as_str(), |(_, op)| op);
        *by_op.entry(op).or_default() += 1;
    }
    by_op
        .iter()
        .map(|(op, n)| format!("{op} {:.2}", *n as f64 / ops.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The contention case's result.
struct Contention {
    attempts: u64,
    admitted: u64,
    rejected: u64,
    errors: u64,
    counter: u64,
    wall: Duration,
    calls: Vec<String>,
}

/// `callers` callers start together on one connection whose minute window allows `limit`
/// requests, each making `per_caller` admissions.
async fn contention(
    store: &Store,
    callers: usize,
    per_caller: u64,
    limit: u64,
) -> BenchResult<Contention> {
    let now = OffsetDateTime::now_utc();
    let id = unique_id("contention");
    let entries = entries(limit);
    let req = Arc::new(admit_request(&id, &entries, now)?);
    if let Some(p) = &store.proxy {
        p.clear();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(callers));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (ledger, req, barrier) = (store.ledger.clone(), req.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (mut ok, mut no, mut err) = (0u64, 0u64, 0u64);
            for _ in 0..per_caller {
                match ledger.admit(&req).await {
                    Ok(Admission::Admitted(_)) => ok += 1,
                    Ok(Admission::Rejected(_)) => no += 1,
                    Err(_) => err += 1,
                }
            }
            (ok, no, err)
        }));
    }
    let (mut admitted, mut rejected, mut errors) = (0, 0, 0);
    for t in tasks {
        let (ok, no, err) = t.await?;
        admitted += ok;
        rejected += no;
        errors += err;
    }
    let wall = start.elapsed();
    let calls = store.proxy.as_ref().map(|p| p.calls()).unwrap_or_default();
    let usage = store
        .ledger
        .usage(&UsageRequest::new(&id, &entries, 10, now))
        .await?;
    let counter = usage
        .windows
        .iter()
        .find(|w| w.window.period == Period::Minute && w.window.dimension.is_none())
        .map(|w| w.used.requests)
        .ok_or("the minute window is missing from the usage")?;
    Ok(Contention {
        attempts: callers as u64 * per_caller,
        admitted,
        rejected,
        errors,
        counter,
        wall,
        calls,
    })
}

const RAW: TableDefinition<&str, u64> = TableDefinition::new("raw");

/// One redb write transaction of one key, committed with `durability`, `n` times: the
/// latency of each (microseconds).
fn raw_commits(dir: &Path, n: u64, durability: Durability) -> BenchResult<Histogram<u64>> {
    let db = Database::create(dir.join(format!("raw-{durability:?}.redb")))?;
    let mut h = histogram()?;
    // Warm-up (not recorded): the file grows to its working size first.
    for i in 0..(n / 5).max(10) {
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        txn.open_table(RAW)?.insert("warm-up", i)?;
        txn.commit()?;
    }
    for i in 0..n {
        let t = Instant::now();
        let mut txn = db.begin_write()?;
        txn.set_durability(durability)?;
        {
            let mut t = txn.open_table(RAW)?;
            t.insert("counter", i)?;
        }
        txn.commit()?;
        h.saturating_record(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    Ok(h)
}

/// `mean / p50 / p99 ms` of a histogram of microseconds.
fn summary(h: &Histogram<u64>) -> String {
    format!(
        "mean {:.3} / p50 {} / p99 {} ms",
        h.mean() / 1000.0,
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99))
    )
}

async fn dynamo_store(moto: &str, seconds: f64) -> BenchResult<Store> {
    let proxy = Arc::new(SerialProxy::start(moto).await);
    let sdk = crate::aws_calls::sdk(&proxy.url).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("vmx-bench-{}", uuid::Uuid::new_v4().simple());
    vmx_aws::table::ensure_table(&client, &table).await?;
    Ok(Store {
        name: "DynamoDB (moto)",
        ledger: Arc::new(DynamoLedger::new(client, table)),
        proxy: Some(proxy),
        seconds,
    })
}

pub async fn run(args: &[String]) -> BenchResult<String> {
    let seconds: f64 = num(args, "--seconds", 3.0)?;
    let moto_seconds: f64 = num(args, "--moto-seconds", 2.0)?;
    let limit: u64 = num(args, "--limit", 500)?;
    let callers: Vec<usize> = opt(args, "--callers")
        .unwrap_or("1,8,64")
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map_err(|_| format!("--callers: '{c}'"))
        })
        .collect::<Result<_, _>>()?;
    let moto = if flag(args, "--no-dynamodb") {
        None
    } else {
        Some(
            std::env::var("AWS_ENDPOINT_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .ok_or("AWS_ENDPOINT_URL is unset: start moto and export AWS_ENDPOINT_URL=http://127.0.0.1:<port>, or pass --no-dynamodb")?,
        )
    };
    let tmp = match opt(args, "--dir") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };

    eprintln!("capacity: raw redb commits");
    let dir = tmp.path().to_owned();
    let (synced, none) = tokio::task::spawn_blocking(move || -> BenchResult<_> {
        Ok((
            raw_commits(&dir, 500, Durability::Immediate)?,
            raw_commits(&dir, 5000, Durability::None)?,
        ))
    })
    .await??;

    let mut stores = Vec::new();
    let synced_db = vmx_local::open_database(&tmp.path().join("synced"))?;
    stores.push(Store {
        name: "redb, synced per commit",
        ledger: Arc::new(RedbLedger::new(synced_db)?),
        proxy: None,
        seconds,
    });
    let lazy_db = vmx_local::open_database(&tmp.path().join("lazy"))?;
    let sync = LazySync::new(lazy_db.clone());
    let flusher = tokio::spawn(sync.clone().run(Duration::from_millis(100)));
    stores.push(Store {
        name: "redb, in memory, synced every 100 ms (server default)",
        ledger: Arc::new(RedbLedger::new(lazy_db)?.with_lazy_sync(sync)?),
        proxy: None,
        seconds,
    });
    if let Some(moto) = &moto {
        stores.push(dynamo_store(moto, moto_seconds).await?);
    }

    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let mut exact = true;
    for store in &stores {
        let mut runs: Vec<(&str, usize)> = callers.iter().map(|&c| ("admit", c)).collect();
        runs.push(("admit + adjust", 1));
        if let Some(&max) = callers.iter().max().filter(|&&m| m > 1) {
            runs.push(("admit + adjust", max));
        }
        runs.push(("admit, 3 pools", 1));
        if let Some(&max) = callers.iter().max().filter(|&&m| m > 1) {
            runs.push(("admit, 3 pools", max));
        }
        for (operation, n) in runs {
            eprintln!("capacity: {} — {operation}, {n} callers", store.name);
            let adjust = operation == "admit + adjust";
            let r = throughput(store, n, adjust, operation == "admit, 3 pools").await?;
            let errors = if r.rejected > 0 {
                format!("{} (+{} rejected)", r.errors, r.rejected)
            } else {
                r.errors.to_string()
            };
            rows.push(vec![
                store.name.to_owned(),
                operation.to_owned(),
                n.to_string(),
                format!("{:.0}", r.ops as f64 / r.elapsed.as_secs_f64()),
                ms(r.latency.value_at_quantile(0.5)),
                ms(r.latency.value_at_quantile(0.99)),
                errors,
                calls_per_op(&r.calls, r.ops),
            ]);
        }
        let contenders = 64;
        let per_caller = (limit * 2).div_ceil(contenders) + 1;
        eprintln!(
            "capacity: {} — contention, {contenders} callers, limit {limit}",
            store.name
        );
        let c = contention(store, contenders as usize, per_caller, limit).await?;
        let ok = c.admitted == limit && c.counter == limit && c.errors == 0;
        exact &= ok;
        checks.push(format!(
            "- {}: {} callers, {} attempts against a minute limit of {limit}: {} admitted, {} \
             rejected, {} errors, counter {} — **{}**; wall time {} ms{}",
            store.name,
            contenders,
            c.attempts,
            c.admitted,
            c.rejected,
            c.errors,
            c.counter,
            if ok {
                "exact, no overshoot"
            } else {
                "MISMATCH"
            },
            ms(u64::try_from(c.wall.as_micros()).unwrap_or(u64::MAX)),
            if c.calls.is_empty() {
                String::new()
            } else {
                format!(
                    "; AWS calls per attempt: {}",
                    calls_per_op(&c.calls, c.attempts)
                )
            },
        ));
    }
    flusher.abort();

    let mut out = String::from("## Capacity path\n\n");
    out.push_str(&format!(
        "Through the `CapacityLedger` port, one connection with minute, hour and day windows \
         (requests and tokens; {PROMPT} prompt tokens estimated, {MAX_OUTPUT} output tokens \
         reserved, reconciled to {ACTUAL}). Each run: N callers in closed loops for {seconds} s \
         (redb) or {moto_seconds} s (moto); latency per operation (an admit, or an admit and \
         its adjust), HdrHistogram. Errors: failed calls (and, in a throughput run, any \
         rejection: the limits there are out of reach). `admit, 3 pools`: the caller is in \
         one of three active prioritization pools (minimums 30/20/0 %, maximums 60/50/40 %).\n\n"
    ));
    out.push_str(&table(
        &[
            "store",
            "operation",
            "callers",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "AWS calls per op",
        ],
        &rows,
    ));
    out.push_str("\nContention (all callers start together on one connection):\n\n");
    for c in &checks {
        out.push_str(c);
        out.push('\n');
    }
    out.push_str(&format!(
        "\nNo overshoot on every store: **{}**.\n",
        if exact { "yes" } else { "NO" }
    ));
    out.push_str(&format!(
        "\nWhat a commit costs here: a raw redb write transaction of one key takes {} synced \
         (`Durability::Immediate`: an fsync per commit), {} with `Durability::None`. redb \
         has one writer at a time, so synced admissions do not scale with callers: the \
         fsyncs queue (no group commit); the lazy sync takes them off the admission path.\n",
        summary(&synced),
        summary(&none)
    ));
    if moto.is_some() {
        out.push_str(
            "\nThe DynamoDB rows measure moto (one Python process, behind a proxy that \
             relays one request at a time on a new connection, as the conformance tests \
             need for DynamoDB's per-item atomicity), not DynamoDB: they are there for the \
             adapter's calls per operation (one conditional `UpdateItem` per admission, one \
             `UpdateItem` per adjustment). On DynamoDB a conditional `UpdateItem` takes \
             single-digit milliseconds, and writes to one item are serialized by DynamoDB \
             (about 1,000 writes/s per partition).\n",
        );
    }
    Ok(out)
}
