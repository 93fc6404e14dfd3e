//! Wiring of the local server (embedded store, local key provider, admin token) and of
//! `vmx rewrap`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmx_api::auth::AdminAuth;
use vmx_api::config::Config;
use vmx_api::gateway::{Gateway, GatewayOptions, GatewayPorts, Providers};
use vmx_api::service::ConnectionService;
use vmx_api::{AppState, router};
use vmx_aws::{DynamoStore, KmsKeyProvider};
use vmx_bedrock::{BedrockOptions, BedrockProviders};
use vmx_crypto::local::decode_master_key;
use vmx_crypto::{EnvelopeSealer, LocalKeyProvider};
use vmx_domain::clock::SystemClock;
use vmx_domain::ports::{ConnectionStore, SecretSealer};
use vmx_domain::secret::SecretString;
use vmx_domain::{Error, Result};
use vmx_local::ledger::RedbLedger;
use vmx_local::{LazySync, LocalApiKeyStore, LocalStore, LocalUsageStore, open_database};

pub struct Built {
    pub router: axum::Router,
    /// Set when this start generated the admin token.
    pub generated_token: Option<SecretString>,
    pub token_path: PathBuf,
    /// Makes the lazily committed counters durable; flush it once more at exit.
    pub sync: Option<Arc<LazySync>>,
    /// The bound on open connections: its listener and the router's layer share it.
    pub connection_limit: crate::connections::ConnectionLimit,
}

pub fn init_tracing(json: bool, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn build(config: &Config) -> Result<Built> {
    // The AWS SDK configuration, for Bedrock connections only, when a region is configured
    // (credentials then come from the usual places). Without one, Bedrock connections are
    // refused with a clear error and nothing probes the instance-metadata endpoint.
    let sdk = if config.aws_region_set {
        Some(
            vmx_aws::load_sdk_config(&vmx_aws::AwsOptions::with_max_attempts(
                config.aws_max_attempts,
            ))
            .await,
        )
    } else {
        None
    };
    let db = open_database(&config.data_dir)?;
    let store = Arc::new(LocalStore::new(db.clone())?);
    let (mut ledger, mut usage) = (
        RedbLedger::new(db.clone())?,
        LocalUsageStore::new(db.clone())?,
    );
    let api_keys = Arc::new(LocalApiKeyStore::new(db.clone())?);
    // Capacity counters in memory and usage records committed without an fsync each, made
    // durable together in the background (see vmx_local::sync).
    let mut sync = None;
    if !config.local_sync_interval.is_zero() {
        let s = LazySync::new(db);
        ledger = ledger.with_lazy_sync(s.clone())?;
        usage = usage.with_lazy_sync(s.clone());
        tokio::spawn(s.clone().run(config.local_sync_interval));
        sync = Some(s);
    }
    let (ledger, usage) = (Arc::new(ledger), Arc::new(usage));
    let sealer = Arc::new(local_sealer(config)?);
    let clock = Arc::new(SystemClock);
    let connections = Arc::new(ConnectionService::new(store.clone(), sealer, clock.clone()));
    let gateway = Arc::new(Gateway::new(
        GatewayPorts {
            connections: connections.clone(),
            ledger,
            api_keys,
            usage,
            discovered: store,
            providers: providers(config, sdk.as_ref())?,
            clock,
        },
        GatewayOptions {
            connection_cache_ttl: config.connection_cache_ttl,
            default_output_tokens: config.default_output_tokens,
            ipv6_prefix_len: config.ipv6_prefix_len,
            // A long-lived process: accounting runs off the response path.
            background_accounting: true,
            caches: vmx_api::gateway::CacheOptions::from_config(config),
            max_pending_accounting: config.max_pending_accounting,
            // Served by the admin route `GET /metrics`.
            metrics: Arc::new(vmx_api::metrics::Metrics::prometheus()),
            ..GatewayOptions::default()
        },
    ));
    let token_path = config.data_dir.join("admin.token");
    let (token, generated) = match &config.admin_token {
        Some(t) => (t.clone(), false),
        None => load_or_create_token(&token_path)?,
    };
    let connection_limit = crate::connections::ConnectionLimit::new(config.max_connections);
    let state = AppState {
        connections,
        gateway,
        admin: AdminAuth::bearer(&token),
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        max_body_bytes: config.max_body_bytes,
        console: Arc::new(vmx_api::console::Console::new(
            vmx_api::console::ConsoleSettings::from_config(config),
            Arc::new(SystemClock),
        )),
    };
    Ok(Built {
        router: connection_limit.close_when_crowded(crate::shed::limit_load(
            router(state),
            config.max_in_flight,
            config.shed_lag,
        )),
        connection_limit,
        generated_token: generated.then_some(token),
        token_path,
        sync,
    })
}

/// The sealer over the local master key (`VMX_MASTER_KEY`, else the key file in the data
/// directory) and the previous keys still accepted for unwrapping.
fn local_sealer(config: &Config) -> Result<EnvelopeSealer> {
    let master = match &config.master_key {
        Some(k) => decode_master_key(k)?,
        None => LocalKeyProvider::load_or_create(&config.data_dir)?,
    };
    let previous = config
        .previous_master_keys
        .iter()
        .map(decode_master_key)
        .collect::<Result<Vec<_>>>()?;
    let keys = Arc::new(LocalKeyProvider::new(master).with_previous(previous));
    Ok(EnvelopeSealer::new(
        keys,
        config.key_cache_ttl,
        config.key_cache_capacity,
    ))
}

/// Where `vmx rewrap` works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded store in `VMX_DATA_DIR` with the master key `VMX_MASTER_KEY` (or the
    /// data directory's key file) and the old ones in `VMX_PREVIOUS_MASTER_KEYS`; stop the
    /// server first.
    Local,
    /// The DynamoDB table `VMX_TABLE_NAME`, with the KMS key `VMX_KMS_KEY_ID` (the variables
    /// the Lambda functions read; AWS credentials and region from the usual places).
    Dynamodb,
}

/// The connection store and sealer `vmx rewrap` works with.
pub async fn rewrap_ports(
    config: &Config,
    kind: StoreKind,
) -> Result<(Arc<dyn ConnectionStore>, Arc<dyn SecretSealer>)> {
    match kind {
        StoreKind::Local => {
            // Re-wrapping creates nothing: a mistyped directory is an error, not a new store.
            let dir = &config.data_dir;
            if !dir.join("vmx.redb").exists() {
                return Err(Error::invalid(
                    "VMX_DATA_DIR",
                    format!("{} holds no vmx store", dir.display()),
                ));
            }
            if config.master_key.is_none() && !dir.join("master.key").exists() {
                return Err(Error::invalid(
                    "VMX_MASTER_KEY",
                    format!("is unset and {} holds no master.key", dir.display()),
                ));
            }
            let db = open_database(dir).map_err(|e| {
                Error::invalid(
                    "VMX_DATA_DIR",
                    format!(
                        "{} cannot be opened ({e}); a running server holds it: stop it first",
                        dir.display()
                    ),
                )
            })?;
            Ok((
                Arc::new(LocalStore::new(db)?),
                Arc::new(local_sealer(config)?),
            ))
        }
        StoreKind::Dynamodb => {
            let table = config.table_name.clone().ok_or_else(|| {
                Error::invalid("VMX_TABLE_NAME", "is required with --store dynamodb")
            })?;
            let key_id = config.kms_key_id.clone().ok_or_else(|| {
                Error::invalid("VMX_KMS_KEY_ID", "is required with --store dynamodb")
            })?;
            let sdk = vmx_aws::load_sdk_config(&vmx_aws::AwsOptions::with_max_attempts(
                config.aws_max_attempts,
            ))
            .await;
            let keys = Arc::new(KmsKeyProvider::new(aws_sdk_kms::Client::new(&sdk), key_id));
            Ok((
                Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
                Arc::new(EnvelopeSealer::new(
                    keys,
                    config.key_cache_ttl,
                    config.key_cache_capacity,
                )),
            ))
        }
    }
}

/// The API-key providers, plus the two Bedrock ones over `sdk` when there is one.
fn providers(config: &Config, sdk: Option<&aws_config::SdkConfig>) -> Result<Providers> {
    let mut providers = vmx_api::providers::from_config(config)?;
    if let Some(sdk) = sdk {
        let options = BedrockOptions {
            provider: vmx_api::providers::provider_options(config),
            ..Default::default()
        };
        providers.extend(BedrockProviders::new(sdk, options, None).adapters());
    }
    Ok(providers)
}

fn load_or_create_token(path: &Path) -> Result<(SecretString, bool)> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => {
            vmx_api::config::check_admin_token(
                t.trim(),
                &format!(
                    "the admin token in {} (replace it, or delete it to have one generated)",
                    path.display()
                ),
            )?;
            Ok((SecretString::from(t.trim().to_owned()), false))
        }
        Ok(_) => create_token(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_token(path),
        Err(e) => Err(Error::internal(format!("read {}: {e}", path.display()))),
    }
}

fn create_token(path: &Path) -> Result<(SecretString, bool)> {
    let bytes: [u8; 24] = vmx_crypto::random_bytes()?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("vmx_admin_{hex}");
    write_private(path, &token)?;
    Ok((SecretString::from(token), true))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::internal(format!("create {}: {e}", path.display())))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::internal(format!("write {}: {e}", path.display())))
}

/// Completes at SIGTERM or SIGINT (Ctrl-C elsewhere), caught from the call on.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Registered now, not at the first poll: a signal that arrives after the port opens
    // but before the server's first poll is still a graceful shutdown.
    #[cfg(unix)]
    let (term, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; draining in-flight requests");
    }
}
