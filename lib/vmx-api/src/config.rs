//! Configuration, read from the environment in exactly one place.
//!
//! Every knob is an environment variable; `Config::from_env` is the only reader. AWS
//! endpoints are not here: the AWS SDK reads the standard `AWS_ENDPOINT_URL_*` variables.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::client_ip::TrustedProxies;
use vmx_domain::{Error, Result};

/// Everything vmx can be configured with. Fields irrelevant to a runtime are ignored there
/// (the Lambda functions do not listen on a socket; the local server has no table name).
pub struct Config {
    /// `VMX_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `VMX_DATA_DIR`, default `.vmx-data` under the working directory.
    pub data_dir: PathBuf,
    /// `VMX_ADMIN_TOKEN`: the local admin bearer token, at least [`MIN_ADMIN_TOKEN_CHARS`]
    /// characters; generated on first start if unset.
    pub admin_token: Option<SecretString>,
    /// `VMX_MASTER_KEY`: base64 of the 32-byte local master key; generated into the data dir
    /// if unset.
    pub master_key: Option<SecretString>,
    /// `VMX_PREVIOUS_MASTER_KEYS`: comma-separated base64 keys still accepted for unwrapping.
    pub previous_master_keys: Vec<SecretString>,
    /// `VMX_MAX_BODY_BYTES`, default 262144 (256 KiB).
    pub max_body_bytes: usize,
    /// `VMX_KEY_CACHE_TTL_SECS` (default 300) and `VMX_KEY_CACHE_SIZE` (default 1000): the
    /// decrypted data-key cache.
    pub key_cache_ttl: Duration,
    pub key_cache_capacity: usize,
    /// `VMX_TABLE_NAME`: the DynamoDB table (Lambda).
    pub table_name: Option<String>,
    /// `VMX_KMS_KEY_ID`: KMS key id, ARN or alias (Lambda).
    pub kms_key_id: Option<String>,
    /// `VMX_LOG_FORMAT`: `json` or `text` (default: json in Lambda, text locally).
    pub log_json: Option<bool>,
    /// `VMX_TRUSTED_PROXIES`: IPs/CIDRs whose `X-Forwarded-For` is believed (the local
    /// server's peers; in Lambda, the source IPs API Gateway or the function URL saw).
    pub trusted_proxies: TrustedProxies,
    /// `VMX_IPV6_PREFIX_LEN` (1-128, default 64): IPv6 callers share a `source-ip` capacity
    /// window per network of this many bits (a /64 is what one subscriber usually holds).
    pub ipv6_prefix_len: u8,
    /// `VMX_CONNECTION_CACHE_TTL_SECS` (default 30): how long a process reuses a connection
    /// and its decrypted credentials; where the ledger keeps configuration versions
    /// (DynamoDB) a rotation reaches the process sooner, at its next admission (`gateway`).
    pub connection_cache_ttl: Duration,
    /// `VMX_DEFAULT_OUTPUT_TOKENS` (default 4096): output reserved when a request states no
    /// `max_tokens`.
    pub default_output_tokens: u64,
    /// Provider base URLs: `VMX_OPENAI_BASE_URL`, `VMX_ANTHROPIC_BASE_URL`,
    /// `VMX_GEMINI_BASE_URL`, `VMX_GROQ_BASE_URL`, `VMX_PERPLEXITY_BASE_URL` (deployment
    /// configuration only; never a caller's choice).
    pub provider_base_urls: ProviderBaseUrls,
    /// `VMX_PROVIDER_TIMEOUT_SECS`: one non-streaming provider call (default 600).
    pub provider_timeout: Option<Duration>,
    /// `VMX_PROVIDER_STREAM_IDLE_SECS`: the longest silence inside a stream (default 300).
    pub provider_stream_idle: Option<Duration>,
    /// `VMX_PROVIDER_CONNECT_TIMEOUT_SECS` (default 10).
    pub provider_connect_timeout: Option<Duration>,
    /// `VMX_REFRESH_PROBE` (`true`/`false`, default false): the scheduled limit refresh
    /// probes API-key providers (a small call per allowed model).
    pub refresh_probe: bool,
    /// Whether an AWS region is configured (`AWS_REGION` or `AWS_DEFAULT_REGION`): the local
    /// server loads the AWS SDK (for Bedrock connections) only then, so that it never probes
    /// the instance-metadata endpoint on a laptop.
    pub aws_region_set: bool,
    /// `VMX_SHUTDOWN_GRACE_SECS` (default 30): after SIGTERM/Ctrl-C the local server stops
    /// accepting connections and lets in-flight requests and streams finish for this long.
    pub shutdown_grace: Duration,
    /// Local server: how often capacity counters and usage records, committed without an
    /// fsync each, are made durable (`VMX_SYNC_INTERVAL_MS`; zero syncs every commit).
    pub local_sync_interval: Duration,
    /// `VMX_LOG` (default `info`): the log filter, in `tracing-subscriber`'s `EnvFilter`
    /// syntax (`warn`, `info,vmx_api=debug`). An unparseable filter falls back to `info`.
    pub log_filter: String,
    /// `AWS_MAX_ATTEMPTS` (1-10; the AWS SDK's standard variable): attempts per AWS call,
    /// the first included. Unset: vmx's default (3).
    pub aws_max_attempts: Option<u32>,
    /// `VMX_CONSOLE_DIR`: serve the console's files from this directory, read at request
    /// time, instead of the copies compiled in (development).
    pub console_dir: Option<PathBuf>,
    /// `VMX_CONSOLE_SESSION_TTL_SECS` (default 28800, 8 h): a local console session's life.
    pub console_session_ttl: Duration,
    /// `VMX_COGNITO_DOMAIN` (the hosted UI's https URL) and `VMX_COGNITO_CLIENT_ID`: the
    /// user pool the deployed console signs in with (both or neither).
    pub cognito_domain: Option<String>,
    pub cognito_client_id: Option<String>,
    /// `VMX_STACK_NAME`: the name the console shows (default `local`).
    pub stack_name: Option<String>,
    /// `VMX_BEDROCK_PRINCIPAL_ARN`: the role that assumes Bedrock connection roles, shown
    /// in the console's trust-policy snippet.
    pub bedrock_principal_arn: Option<String>,

    // --- Caches and load shedding (issue 16) ---
    /// `VMX_API_KEY_CACHE_SIZE` (default 10000): API keys a process keeps after finding
    /// them, each for `connection_cache_ttl`.
    pub api_key_cache_size: usize,
    /// `VMX_CONNECTION_CACHE_SIZE` (default 1000): resolved connections a process keeps.
    pub connection_cache_size: usize,
    /// `VMX_UNKNOWN_CACHE_SIZE` (default 10000) and `VMX_UNKNOWN_CACHE_SECS` (default 10):
    /// API keys and connection names the store did not hold, answered as unknown without
    /// another lookup for that long (a key or connection created meanwhile in another
    /// process is seen after it; in this process at once).
    pub unknown_cache_size: usize,
    pub unknown_cache_ttl: Duration,
    /// `VMX_MAX_IN_FLIGHT` (local server, default [`DEFAULT_MAX_IN_FLIGHT`]; 0: no bound):
    /// requests served at once, streams included; past it a request is answered 503 with
    /// `Retry-After` at once.
    pub max_in_flight: usize,
    /// `VMX_MAX_CONNECTIONS` (local server, default [`DEFAULT_MAX_CONNECTIONS`]; 0: no
    /// bound): open client connections; at the bound the next ones wait in the kernel's
    /// listen queue until one closes, and from 90 % of it responses close their connection.
    pub max_connections: usize,
    /// `VMX_SHED_LAG_MS` (local server, default [`DEFAULT_SHED_LAG`]; 0: never; fractions
    /// allowed, `0.5`): a request that arrives with 8 or more in flight and then waits
    /// longer than this for a core (the runtime's scheduling lag as it meets it), while the
    /// mean wait of the last requests is longer too, is answered 503 with `Retry-After`.
    pub shed_lag: Duration,
    /// `VMX_MAX_PENDING_ACCOUNTING` (local server, default
    /// [`DEFAULT_MAX_PENDING_ACCOUNTING`]): after-response accounting tasks waiting at
    /// once; past it a request does its accounting before it completes (so it keeps its
    /// in-flight slot meanwhile).
    pub max_pending_accounting: usize,
    // Operations (metrics, request ids, log level).
    /// `AWS_LAMBDA_LOG_LEVEL` (Lambda sets it from the function's `LoggingConfig`
    /// `ApplicationLogLevel`): in Lambda the log level, as a `tracing` level (`FATAL` is
    /// `error`), taking precedence over `VMX_LOG`. Unset or unknown: `None`.
    pub lambda_log_level: Option<&'static str>,
    // Discovered-capacity history (ops-history).
    /// `VMX_EVENT_BUS_NAME`: the EventBridge bus that gets a `DiscoveredCapacityChanged`
    /// event per discovered-limit change (AWS functions; none when unset).
    pub event_bus_name: Option<String>,
}

/// Base URL overrides per provider, in the form each official SDK takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderBaseUrls {
    pub openai: Option<String>,
    pub anthropic: Option<String>,
    pub gemini: Option<String>,
    pub groq: Option<String>,
    pub perplexity: Option<String>,
}

/// A count from the environment as a `usize` (`fallback` if it does not fit).
fn size(n: u64, fallback: usize) -> usize {
    usize::try_from(n).unwrap_or(fallback)
}

fn url(value: Option<&str>, var: &str) -> Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.starts_with("http://") || v.starts_with("https://") => {
            Ok(Some(v.trim_end_matches('/').to_owned()))
        }
        Some(_) => Err(Error::invalid(var, "must be an http(s) URL")),
    }
}

/// Lambda's log level names (`TRACE` ... `FATAL`, any case) as `tracing` levels.
fn tracing_level(level: &str) -> Option<&'static str> {
    match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some("trace"),
        "DEBUG" => Some("debug"),
        "INFO" => Some("info"),
        "WARN" => Some("warn"),
        "ERROR" | "FATAL" => Some("error"),
        _ => None,
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;
pub const DEFAULT_API_KEY_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_CONNECTION_CACHE_SIZE: usize = 1000;
pub const DEFAULT_UNKNOWN_CACHE_SIZE: usize = 10_000;
pub const DEFAULT_UNKNOWN_CACHE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// About 120 MiB of connection state at the bound (an idle keep-alive connection costs the
/// local server about 29 KiB: 3,000 of them raised its RSS by 85 MiB, measured by hand on
/// 2026-12-07), far below the open-file limit. A bound below the connections an overload
/// makes clients open turns keep-alive into a reconnect per request (1,024 under twice the
/// sustained rate, measured the same day: 40 % of the requests failed to connect), so this one is
/// for floods, not for shedding.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Chosen by runs of the overload benchmark (BENCHMARKS.md section 5) on the 2-core
/// development machine at 0.25, 0.5, 1 and 2 ms: from 2 ms up the admitted requests queue
/// (p99 overhead 5 ms at twice the sustained rate), below 1 ms more requests are shed at
/// the sustained rate itself, during the machine's own pauses.
pub const DEFAULT_SHED_LAG: Duration = Duration::from_millis(1);
pub const DEFAULT_MAX_PENDING_ACCOUNTING: usize = 4096;
/// The shortest admin token accepted, from `VMX_ADMIN_TOKEN` or the token file.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

/// Checks an admin token's length; the error names `VMX_ADMIN_TOKEN`, never the token.
pub fn check_admin_token(token: &str, source: &str) -> Result<()> {
    if token.chars().count() < MIN_ADMIN_TOKEN_CHARS {
        return Err(Error::invalid(
            "VMX_ADMIN_TOKEN",
            format!("{source} must be at least {MIN_ADMIN_TOKEN_CHARS} characters long"),
        ));
    }
    Ok(())
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from the given variables (tests pass their own).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, v)| {
                (k.starts_with("VMX_")
                    || k == "AWS_REGION"
                    || k == "AWS_DEFAULT_REGION"
                    || k == "AWS_MAX_ATTEMPTS"
                    || k == "AWS_LAMBDA_LOG_LEVEL")
                    && !v.is_empty()
            })
            .collect();
        let get = |k: &str| vars.get(k).map(String::as_str);
        let num = |k: &str, default: u64| -> Result<u64> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| Error::invalid(k, "must be a non-negative integer")),
            }
        };
        let secs_opt = |k: &str| -> Result<Option<Duration>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| Some(Duration::from_secs(n)))
                    .ok_or_else(|| Error::invalid(k, "must be a positive number of seconds")),
            }
        };
        let listen = get("VMX_LISTEN")
            .unwrap_or(DEFAULT_LISTEN)
            .parse()
            .map_err(|_| {
                Error::invalid("VMX_LISTEN", "must be an address such as 127.0.0.1:8080")
            })?;
        let log_json = match get("VMX_LOG_FORMAT") {
            None => None,
            Some("json") => Some(true),
            Some("text") => Some(false),
            Some(_) => return Err(Error::invalid("VMX_LOG_FORMAT", "must be json or text")),
        };
        Ok(Self {
            listen,
            data_dir: PathBuf::from(get("VMX_DATA_DIR").unwrap_or(".vmx-data")),
            admin_token: match get("VMX_ADMIN_TOKEN") {
                None => None,
                Some(t) => {
                    check_admin_token(t, "the admin token")?;
                    Some(SecretString::from(t.to_owned()))
                }
            },
            master_key: get("VMX_MASTER_KEY").map(|t| SecretString::from(t.to_owned())),
            previous_master_keys: get("VMX_PREVIOUS_MASTER_KEYS")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| SecretString::from(s.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            max_body_bytes: usize::try_from(num("VMX_MAX_BODY_BYTES", DEFAULT_MAX_BODY as u64)?)
                .unwrap_or(DEFAULT_MAX_BODY),
            key_cache_ttl: Duration::from_secs(num("VMX_KEY_CACHE_TTL_SECS", 300)?),
            key_cache_capacity: usize::try_from(num("VMX_KEY_CACHE_SIZE", 1000)?).unwrap_or(1000),
            table_name: get("VMX_TABLE_NAME").map(str::to_owned),
            kms_key_id: get("VMX_KMS_KEY_ID").map(str::to_owned),
            log_json,
            trusted_proxies: TrustedProxies::parse(get("VMX_TRUSTED_PROXIES").unwrap_or(""))
                .map_err(|bad| {
                    Error::invalid(
                        "VMX_TRUSTED_PROXIES",
                        format!("'{bad}' is not an IP address or CIDR"),
                    )
                })?,
            ipv6_prefix_len: match get("VMX_IPV6_PREFIX_LEN") {
                None => DEFAULT_IPV6_PREFIX_LEN,
                Some(v) => v
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=128).contains(n))
                    .ok_or_else(|| {
                        Error::invalid("VMX_IPV6_PREFIX_LEN", "must be a number from 1 to 128")
                    })?,
            },
            connection_cache_ttl: Duration::from_secs(num("VMX_CONNECTION_CACHE_TTL_SECS", 30)?),
            default_output_tokens: num(
                "VMX_DEFAULT_OUTPUT_TOKENS",
                vmx_domain::admission::DEFAULT_OUTPUT_RESERVATION,
            )?,
            provider_base_urls: ProviderBaseUrls {
                openai: url(get("VMX_OPENAI_BASE_URL"), "VMX_OPENAI_BASE_URL")?,
                anthropic: url(get("VMX_ANTHROPIC_BASE_URL"), "VMX_ANTHROPIC_BASE_URL")?,
                gemini: url(get("VMX_GEMINI_BASE_URL"), "VMX_GEMINI_BASE_URL")?,
                groq: url(get("VMX_GROQ_BASE_URL"), "VMX_GROQ_BASE_URL")?,
                perplexity: url(get("VMX_PERPLEXITY_BASE_URL"), "VMX_PERPLEXITY_BASE_URL")?,
            },
            provider_timeout: secs_opt("VMX_PROVIDER_TIMEOUT_SECS")?,
            provider_stream_idle: secs_opt("VMX_PROVIDER_STREAM_IDLE_SECS")?,
            provider_connect_timeout: secs_opt("VMX_PROVIDER_CONNECT_TIMEOUT_SECS")?,
            aws_region_set: get("AWS_REGION").is_some() || get("AWS_DEFAULT_REGION").is_some(),
            shutdown_grace: Duration::from_secs(num("VMX_SHUTDOWN_GRACE_SECS", 30)?),
            local_sync_interval: Duration::from_millis(num("VMX_SYNC_INTERVAL_MS", 100)?),
            log_filter: get("VMX_LOG").unwrap_or("info").to_owned(),
            aws_max_attempts: match get("AWS_MAX_ATTEMPTS") {
                None => None,
                Some(v) => Some(
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=10).contains(n))
                        .ok_or_else(|| {
                            Error::invalid("AWS_MAX_ATTEMPTS", "must be a number from 1 to 10")
                        })?,
                ),
            },
            console_dir: get("VMX_CONSOLE_DIR").map(PathBuf::from),
            console_session_ttl: secs_opt("VMX_CONSOLE_SESSION_TTL_SECS")?
                .unwrap_or(crate::session::DEFAULT_TTL),
            cognito_domain: match (
                url(get("VMX_COGNITO_DOMAIN"), "VMX_COGNITO_DOMAIN")?,
                get("VMX_COGNITO_CLIENT_ID"),
            ) {
                (Some(d), Some(_)) => Some(d),
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(Error::invalid(
                        "VMX_COGNITO_DOMAIN",
                        "is required with VMX_COGNITO_CLIENT_ID",
                    ));
                }
                (Some(_), None) => {
                    return Err(Error::invalid(
                        "VMX_COGNITO_CLIENT_ID",
                        "is required with VMX_COGNITO_DOMAIN",
                    ));
                }
            },
            cognito_client_id: get("VMX_COGNITO_CLIENT_ID").map(str::to_owned),
            stack_name: get("VMX_STACK_NAME").map(str::to_owned),
            bedrock_principal_arn: get("VMX_BEDROCK_PRINCIPAL_ARN").map(str::to_owned),
            lambda_log_level: get("AWS_LAMBDA_LOG_LEVEL").and_then(tracing_level),
            event_bus_name: get("VMX_EVENT_BUS_NAME")
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            refresh_probe: match get("VMX_REFRESH_PROBE") {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => {
                    return Err(Error::invalid("VMX_REFRESH_PROBE", "must be true or false"));
                }
            },
            api_key_cache_size: size(
                num("VMX_API_KEY_CACHE_SIZE", DEFAULT_API_KEY_CACHE_SIZE as u64)?,
                DEFAULT_API_KEY_CACHE_SIZE,
            ),
            connection_cache_size: size(
                num(
                    "VMX_CONNECTION_CACHE_SIZE",
                    DEFAULT_CONNECTION_CACHE_SIZE as u64,
                )?,
                DEFAULT_CONNECTION_CACHE_SIZE,
            ),
            unknown_cache_size: size(
                num("VMX_UNKNOWN_CACHE_SIZE", DEFAULT_UNKNOWN_CACHE_SIZE as u64)?,
                DEFAULT_UNKNOWN_CACHE_SIZE,
            ),
            unknown_cache_ttl: Duration::from_secs(num(
                "VMX_UNKNOWN_CACHE_SECS",
                DEFAULT_UNKNOWN_CACHE_TTL.as_secs(),
            )?),
            max_in_flight: size(
                num("VMX_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT as u64)?,
                DEFAULT_MAX_IN_FLIGHT,
            ),
            max_connections: size(
                num("VMX_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS as u64)?,
                DEFAULT_MAX_CONNECTIONS,
            ),
            shed_lag: match get("VMX_SHED_LAG_MS") {
                None => DEFAULT_SHED_LAG,
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|ms| ms.is_finite() && (0.0..=60_000.0).contains(ms))
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .ok_or_else(|| {
                        Error::invalid(
                            "VMX_SHED_LAG_MS",
                            "must be a number of milliseconds from 0 to 60000 (0.5: 500 µs)",
                        )
                    })?,
            },
            max_pending_accounting: size(
                num(
                    "VMX_MAX_PENDING_ACCOUNTING",
                    DEFAULT_MAX_PENDING_ACCOUNTING as u64,
                )?,
                DEFAULT_MAX_PENDING_ACCOUNTING,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.max_body_bytes, DEFAULT_MAX_BODY);
        let c = Config::from_vars(vars(&[
            ("VMX_LISTEN", "127.0.0.1:9999"),
            ("VMX_PREVIOUS_MASTER_KEYS", "a, b,,"),
            ("VMX_KEY_CACHE_TTL_SECS", "7"),
            ("VMX_IPV6_PREFIX_LEN", "56"),
        ]))
        .expect("overrides");
        assert_eq!(c.ipv6_prefix_len, 56);
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.previous_master_keys.len(), 2);
        assert_eq!(c.key_cache_ttl, Duration::from_secs(7));
        assert_eq!((c.log_filter.as_str(), c.aws_max_attempts), ("info", None));
        let c = Config::from_vars(vars(&[("VMX_LOG", "warn"), ("AWS_MAX_ATTEMPTS", "5")]))
            .expect("log and attempts");
        assert_eq!(c.ipv6_prefix_len, 64);
        assert_eq!(
            (c.log_filter.as_str(), c.aws_max_attempts),
            ("warn", Some(5))
        );
    }

    #[test]
    fn cache_and_shedding_limits() {
        let c = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(
            (c.api_key_cache_size, c.unknown_cache_ttl, c.max_in_flight),
            (
                DEFAULT_API_KEY_CACHE_SIZE,
                DEFAULT_UNKNOWN_CACHE_TTL,
                DEFAULT_MAX_IN_FLIGHT
            )
        );
        let c = Config::from_vars(vars(&[
            ("VMX_API_KEY_CACHE_SIZE", "5"),
            ("VMX_CONNECTION_CACHE_SIZE", "6"),
            ("VMX_UNKNOWN_CACHE_SIZE", "7"),
            ("VMX_UNKNOWN_CACHE_SECS", "0"),
            ("VMX_MAX_IN_FLIGHT", "8"),
            ("VMX_MAX_PENDING_ACCOUNTING", "9"),
            ("VMX_SHED_LAG_MS", "0"),
        ]))
        .expect("overrides");
        assert_eq!(
            (
                c.api_key_cache_size,
                c.connection_cache_size,
                c.unknown_cache_size,
                c.unknown_cache_ttl,
                c.max_in_flight,
                c.max_pending_accounting
            ),
            (5, 6, 7, Duration::ZERO, 8, 9)
        );
        assert_eq!(c.shed_lag, Duration::ZERO);
        assert_eq!(
            Config::from_vars(vars(&[])).expect("defaults").shed_lag,
            DEFAULT_SHED_LAG
        );
        assert_eq!(
            Config::from_vars(vars(&[("VMX_SHED_LAG_MS", "0.5")]))
                .expect("a fraction of a millisecond")
                .shed_lag,
            Duration::from_micros(500)
        );
        for bad in ["-1", "1ms", "NaN", "60001"] {
            match Config::from_vars(vars(&[("VMX_SHED_LAG_MS", bad)])) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "VMX_SHED_LAG_MS"),
                other => panic!("VMX_SHED_LAG_MS={bad}: {:?}", other.map(|c| c.shed_lag)),
            }
        }
        match Config::from_vars(vars(&[("VMX_MAX_IN_FLIGHT", "-1")])) {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "VMX_MAX_IN_FLIGHT"),
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn lambda_log_level_maps_to_a_tracing_level() {
        let level = |v: &str| {
            Config::from_vars(vars(&[("AWS_LAMBDA_LOG_LEVEL", v)]))
                .expect("config")
                .lambda_log_level
        };
        assert_eq!(level("DEBUG"), Some("debug"));
        assert_eq!(level("warn"), Some("warn"));
        assert_eq!(level("FATAL"), Some("error"));
        assert_eq!(level("loud"), None);
        let unset = Config::from_vars(vars(&[])).expect("config");
        assert_eq!(unset.lambda_log_level, None);
    }

    #[test]
    fn an_admin_token_of_32_characters_is_accepted() {
        let t = "0123456789abcdef0123456789abcdef";
        let c = Config::from_vars(vars(&[("VMX_ADMIN_TOKEN", t)])).expect("32 characters");
        assert!(c.admin_token.is_some());
    }

    #[test]
    fn event_bus_name_is_optional() {
        let c = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(c.event_bus_name, None);
        let c = Config::from_vars(vars(&[("VMX_EVENT_BUS_NAME", "ops")])).expect("a bus");
        assert_eq!(c.event_bus_name.as_deref(), Some("ops"));
    }

    #[test]
    fn console_settings() {
        let c = Config::from_vars(vars(&[])).expect("defaults");
        assert_eq!(c.console_session_ttl, Duration::from_secs(28800));
        assert!(c.console_dir.is_none() && c.cognito_domain.is_none());
        let c = Config::from_vars(vars(&[
            ("VMX_CONSOLE_DIR", "lib/vmx-console/assets"),
            ("VMX_CONSOLE_SESSION_TTL_SECS", "60"),
            (
                "VMX_COGNITO_DOMAIN",
                "https://vmx.auth.eu-west-1.amazoncognito.com/",
            ),
            ("VMX_COGNITO_CLIENT_ID", "client1"),
            ("VMX_STACK_NAME", "vmx-prod"),
        ]))
        .expect("console settings");
        assert_eq!(c.console_session_ttl, Duration::from_secs(60));
        assert_eq!(
            c.cognito_domain.as_deref(),
            Some("https://vmx.auth.eu-west-1.amazoncognito.com")
        );
        assert_eq!(c.cognito_client_id.as_deref(), Some("client1"));
        assert_eq!(c.stack_name.as_deref(), Some("vmx-prod"));
        assert_eq!(
            c.console_dir.as_deref(),
            Some(std::path::Path::new("lib/vmx-console/assets"))
        );
        // The user pool needs both: the error names the missing one.
        for (given, missing) in [
            (("VMX_COGNITO_CLIENT_ID", "client1"), "VMX_COGNITO_DOMAIN"),
            (
                (
                    "VMX_COGNITO_DOMAIN",
                    "https://vmx.auth.eu-west-1.amazoncognito.com",
                ),
                "VMX_COGNITO_CLIENT_ID",
            ),
        ] {
            match Config::from_vars(vars(&[given])) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, missing),
                _ => panic!("{given:?} alone should be rejected"),
            }
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("VMX_LISTEN", "nope"),
            ("VMX_MAX_BODY_BYTES", "-1"),
            ("VMX_LOG_FORMAT", "xml"),
            ("AWS_MAX_ATTEMPTS", "0"),
            ("AWS_MAX_ATTEMPTS", "many"),
            ("VMX_CONSOLE_SESSION_TTL_SECS", "0"),
            ("VMX_COGNITO_DOMAIN", "not-a-url"),
            ("VMX_IPV6_PREFIX_LEN", "0"),
            ("VMX_IPV6_PREFIX_LEN", "129"),
            ("VMX_ADMIN_TOKEN", "hunter2"),
            ("VMX_ADMIN_TOKEN", "0123456789012345678901234567890"),
        ] {
            match Config::from_vars(vars(&[(k, v)])) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, k),
                _ => panic!("{k}={v} should be rejected"),
            }
        }
    }
}
