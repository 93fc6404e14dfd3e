//! Part of section `aws-calls`: a flood of unknown API keys at the inference router (issue
//! 16), with DynamoDB (moto) behind the section's counting proxy. What
//! `functions/vmx-fn-inference/tests/flood.rs` proves, measured: the DynamoDB reads a flood
//! costs, and how fast the router answers it in-process.
//!
//! A fresh inference instance on the section's table receives, `--concurrency` requests at a
//! time, (a) `--flood` forged keys (a key's shape, not its checksum), (b) as many well-formed
//! keys with a valid checksum that the table does not hold, each once, (c) the same keys
//! again; and, after every `--valid-every` of those requests, one with the section's valid
//! key, in a task of its own (d).
//!
//! Options: `--flood <n>` keys (default 10000), `--concurrency <n>` (default 64),
//! `--valid-every <n>` (default 100).

use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use futures_util::stream::{self, StreamExt};
use http_body_util::BodyExt;
use tower::ServiceExt;
use vmx_aws::table::{API_KEY_PK_PREFIX, API_KEYS_PK};
use vmx_conformance::moto_proxy::SerialProxy;
use vmx_domain::api_key::{
    KEY_CHECKSUM_CHARS, KEY_PREFIX, KEY_RANDOM_CHARS, generate_key, hash_key, key_shape,
};
use vmx_domain::secret::ExposeSecret;

use crate::BenchResult;
use crate::aws_calls::{READS, Setup, chat_request, inference, is_read};
use crate::report::{num, table};

/// The lifetime of the flood instance's caches: longer than the run, so that no entry
/// expires during it.
const CACHE_TTL: Duration = Duration::from_secs(3600);

/// The flood instance and what the phases need.
struct Flood<'a> {
    proxy: &'a SerialProxy,
    app: Router,
    valid: &'a str,
    /// The partition key of the valid key's item (`APIKEY#<hash>`).
    valid_pk: String,
    concurrency: usize,
    valid_every: usize,
}

/// What one pass over a list of flood keys gave.
#[derive(Default)]
struct Tally {
    sent: usize,
    /// Flood answers other than 401.
    not_401: usize,
    /// DynamoDB reads naming an API key item other than the valid key's.
    reads: usize,
    valid_sent: usize,
    /// The valid key's answers other than 200.
    valid_not_200: usize,
    /// Every other DynamoDB read.
    valid_reads: usize,
    /// Of those, reads of an API key's listing item (`APIKEYS`): `lastUsedAt` being
    /// refreshed after a request, not a lookup.
    valid_listing_reads: usize,
    wall: Duration,
}

/// SplitMix64: a reproducible stream of well-mixed 64-bit values.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `KEY_PREFIX` and `KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS` random base62 characters whose
/// checksum does not match (the rare token whose does is drawn again).
fn forged_key(state: &mut u64) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    loop {
        let token: String = KEY_PREFIX
            .chars()
            .chain((0..KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS).map(|_| {
                let i = usize::try_from(next_random(state) % 62).unwrap_or(0);
                char::from(ALPHABET[i])
            }))
            .collect();
        if key_shape(&token).is_none() {
            return token;
        }
    }
}

/// The status of one chat completion sent as `key` (the body is read to its end).
async fn answer(app: &Router, key: &str) -> BenchResult<StatusCode> {
    let resp = app.clone().oneshot(chat_request(key, false)?).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

/// The DynamoDB reads the proxy relayed since it was last cleared: `(flood, other,
/// listing)`, where the flood's name an API key item other than the valid key's, and
/// `listing` counts the others that read an API key's listing item.
fn reads(f: &Flood<'_>) -> (usize, usize, usize) {
    let all = f.proxy.calls().iter().filter(|c| is_read(c)).count();
    let count =
        |needle: &str| -> usize { READS.iter().map(|op| f.proxy.count_with(op, needle)).sum() };
    let flood = count(API_KEY_PK_PREFIX).saturating_sub(count(&f.valid_pk));
    let listing = count(&format!("\"{API_KEYS_PK}\""));
    (flood, all.saturating_sub(flood), listing)
}

/// One pass over `keys`, `concurrency` requests in flight; after every `valid_every` of
/// them, a request with the valid key starts in a task of its own (outside the
/// `concurrency`: its writes at the serialized moto must not hold the flood's slots). The
/// wall time ends at the last flood answer; the valid requests are then awaited.
async fn phase(f: &Flood<'_>, keys: &[String]) -> BenchResult<Tally> {
    f.proxy.clear();
    let mut valid = Vec::new();
    let start = Instant::now();
    let answers: Vec<BenchResult<StatusCode>> = stream::iter(keys.iter().enumerate())
        .map(|(i, key)| {
            if i % f.valid_every == f.valid_every - 1 {
                let (app, key) = (f.app.clone(), f.valid.to_owned());
                valid.push(tokio::spawn(async move { answer(&app, &key).await }));
            }
            answer(&f.app, key)
        })
        .buffer_unordered(f.concurrency)
        .collect()
        .await;
    let mut t = Tally {
        wall: start.elapsed(),
        sent: answers.len(),
        valid_sent: valid.len(),
        ..Tally::default()
    };
    for status in answers {
        t.not_401 += usize::from(status? != StatusCode::UNAUTHORIZED);
    }
    for request in valid {
        t.valid_not_200 += usize::from(request.await?? != StatusCode::OK);
    }
    (t.reads, t.valid_reads, t.valid_listing_reads) = reads(f);
    Ok(t)
}

fn yes_no(all: bool) -> String {
    (if all { "yes" } else { "no" }).to_owned()
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// One table row: requests, whether every answer was the expected one, reads, reads per
/// request, and the wall time and rate when the row has its own.
fn row(
    label: &str,
    sent: usize,
    all_ok: bool,
    reads: usize,
    wall: Option<Duration>,
) -> Vec<String> {
    let per = reads as f64 / sent.max(1) as f64;
    let (secs, rate) = match wall {
        Some(w) => (
            format!("{:.3}", w.as_secs_f64()),
            format!("{:.0}", sent as f64 / w.as_secs_f64().max(1e-9)),
        ),
        None => ("— (within a–c)".to_owned(), "—".to_owned()),
    };
    vec![
        label.to_owned(),
        sent.to_string(),
        yes_no(all_ok),
        reads.to_string(),
        format!("{per:.4}"),
        secs,
        rate,
    ]
}

pub async fn run(s: &mut Setup, args: &[String]) -> BenchResult<String> {
    let n: usize = num(args, "--flood", 10_000)?;
    let concurrency: usize = num(args, "--concurrency", 64)?;
    let valid_every: usize = num(args, "--valid-every", 100)?;
    if n == 0 || concurrency == 0 || valid_every == 0 {
        return Err("--flood, --concurrency and --valid-every must be positive".into());
    }
    // The first instance was built already: the lifetimes apply to the flood's only.
    s.config.connection_cache_ttl = CACHE_TTL;
    s.config.unknown_cache_ttl = CACHE_TTL;
    let f = Flood {
        proxy: &s.proxy,
        app: inference(&s.config, s.sdk.clone())?,
        valid: &s.key,
        valid_pk: format!("{API_KEY_PK_PREFIX}{}", hash_key(&s.key)),
        concurrency,
        valid_every,
    };

    eprintln!("aws-calls: flood instance, the valid key's first request");
    f.proxy.clear();
    let first = answer(&f.app, f.valid).await?;
    if first != StatusCode::OK {
        return Err(format!("the valid key's first request answered {first}").into());
    }
    let first_reads = f.proxy.calls().iter().filter(|c| is_read(c)).count();

    let mut seed = 0x5EED_F100_D000_0016;
    let forged: Vec<String> = (0..n).map(|_| forged_key(&mut seed)).collect();
    let unknown = (0..n)
        .map(|_| {
            generate_key()
                .map(|g| g.key.expose_secret().to_owned())
                .map_err(|e| format!("generate_key: {e:?}"))
        })
        .collect::<Result<Vec<String>, String>>()?;

    let mut tallies = Vec::new();
    for (label, keys) in [
        ("forged keys", &forged),
        ("well-formed unknown keys", &unknown),
        ("well-formed unknown keys, again", &unknown),
    ] {
        eprintln!("aws-calls: flood of {n} {label}");
        tallies.push(phase(&f, keys).await?);
    }
    let [a, b, c] = &tallies[..] else {
        return Err("three flood phases expected".into());
    };
    let valid_sent: usize = tallies.iter().map(|t| t.valid_sent).sum();
    let valid_ok = tallies.iter().all(|t| t.valid_not_200 == 0);
    let valid_reads: usize = tallies.iter().map(|t| t.valid_reads).sum();
    let listing_reads: usize = tallies.iter().map(|t| t.valid_listing_reads).sum();
    let lookup_reads = valid_reads.saturating_sub(listing_reads);

    let header = [
        "requests of",
        "requests",
        "every answer 401 (valid key: 200)",
        "DynamoDB reads",
        "reads per request",
        "wall time (s)",
        "requests/s",
    ];
    let body = vec![
        row(
            "(a) forged keys (checksum fails), each once",
            a.sent,
            a.not_401 == 0,
            a.reads,
            Some(a.wall),
        ),
        row(
            "(b) well-formed unknown keys (checksum valid, not in the table), each once",
            b.sent,
            b.not_401 == 0,
            b.reads,
            Some(b.wall),
        ),
        row(
            "(c) the same well-formed unknown keys again",
            c.sent,
            c.not_401 == 0,
            c.reads,
            Some(c.wall),
        ),
        row(
            &format!("(d) the valid key, one request every {valid_every} of a–c"),
            valid_sent,
            valid_ok,
            valid_reads,
            None,
        ),
    ];
    let cores = std::thread::available_parallelism().map_or(0, usize::from);

    let mut out = String::from("\n### A flood of unknown API keys\n\n");
    out.push_str(&format!(
        "A second, fresh inference instance on the same table (same router in its Lambda \
         wrapping, same connection and valid key as above, its own empty caches) receives \
         `POST /v1/chat/completions` with a one-line body, {concurrency} requests in flight \
         at a time (`buffer_unordered`), each with a bearer key: (a) {n} forged keys \
         (`{KEY_PREFIX}` and {} random base62 characters, redrawn when the checksum happens \
         to match); (b) {n} well-formed keys from `generate_key` (valid checksum) that the \
         table does not hold, each once; (c) the same {n} keys again. After every \
         {valid_every} of those requests, one with the valid key starts alongside, in a task \
         of its own so that its DynamoDB writes do not hold the flood's slots (d). Before the flood, \
         the valid key's first request on this instance made {first_reads} DynamoDB reads \
         (its first lookup; not counted below). `VMX_CONNECTION_CACHE_TTL_SECS` and \
         `VMX_UNKNOWN_CACHE_SECS` are {} s on this instance, so that no entry expires during \
         the run (defaults 30 s and 10 s: a key sent again after its entry expired is read \
         again); the cache sizes keep their defaults: {} unknown keys \
         (`VMX_UNKNOWN_CACHE_SIZE`), {} found keys (`VMX_API_KEY_CACHE_SIZE`).\n\n",
        KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS,
        CACHE_TTL.as_secs(),
        s.config.unknown_cache_size,
        s.config.api_key_cache_size,
    ));
    out.push_str(
        "DynamoDB reads (GetItem, Query, BatchGetItem, Scan) are counted at the proxy per \
         phase: a read naming an API key item (`APIKEY#<hash>`) other than the valid key's \
         is the flood's (rows a–c), every other read is the valid key's (row d). Wall time \
         and requests/s are the router's, called in-process (tower `oneshot`, no HTTP \
         server), against moto on loopback behind the serializing proxy, ",
    );
    out.push_str(&format!(
        "on a shared {cores}-core machine, from the phase's first request to its last flood \
         answer (the valid key's requests ran alongside). The proxy lets one call at a time \
         through to moto, so row b's rate is that of moto's `GetItem`s one after the other, \
         not the router's.\n\n"
    ));
    out.push_str(&table(&header, &body));
    out.push_str(&format!(
        "\nOf the valid key's {valid_reads} reads, {lookup_reads} are lookups and \
         {listing_reads} read its listing item (`{API_KEYS_PK}`) to refresh its `lastUsedAt` \
         after a request, which a process does at most once a minute per key.\n"
    ));
    let distinct = unknown
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    out.push_str(&format!(
        "\nTarget (forged keys: 0 DynamoDB reads; well-formed unknown keys: at most one read \
         per distinct key the first time; the valid key: 0 lookup reads after its first \
         lookup): forged keys **{}** ({} reads), well-formed unknown keys **{}** ({} reads \
         for {distinct} distinct keys), the valid key **{}** ({lookup_reads} lookup reads; \
         {listing_reads} `lastUsedAt` reads besides). Sent again (row c), {} of the \
         {distinct} unknown keys were read again: the negative cache is bounded \
         (`VMX_UNKNOWN_CACHE_SIZE`, {} entries here) and evicts per entry, so a flood of \
         about as many distinct keys as it holds, or more, costs some reads again rather \
         than memory.\n",
        met(a.reads == 0),
        a.reads,
        met(b.reads <= distinct),
        b.reads,
        met(lookup_reads == 0),
        c.reads,
        s.config.unknown_cache_size,
    ));
    Ok(out)
}
