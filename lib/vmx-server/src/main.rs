//! `vmx`: the whole API on 127.0.0.1 with the embedded store and local encryption.
//! No AWS account, no Docker. Configuration: see `vmx_api::config` (environment variables
//! only; the command line chooses what to do, never how it is configured).

use std::process::ExitCode;

use axum::serve::ListenerExt as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use vmx_api::config::Config;

/// mimalloc instead of glibc's allocator: a request allocates and frees many small objects
/// on both runtime threads (measured in BENCHMARKS.md, section 6).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod connections;
mod rewrap;
mod shed;

/// vmx: the AI Connections gateway. Configured with VMX_* environment variables (see the
/// README); with no command it serves.
#[derive(Parser)]
#[command(name = "vmx", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the local server on VMX_LISTEN (the default).
    Serve,
    /// Seal every stored secret again under the current key, so that older keys can be
    /// retired. Safe to interrupt and rerun: what is already under the current key is skipped.
    Rewrap {
        /// Which store to re-wrap.
        #[arg(long, value_enum, default_value_t = app::StoreKind::Local)]
        store: app::StoreKind,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmx: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    app::init_tracing(config.log_json.unwrap_or(false), &config.log_filter);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config).await,
        Command::Rewrap { store } => run_rewrap(&config, store).await,
    }
}

async fn run_rewrap(config: &Config, store: app::StoreKind) -> ExitCode {
    let (store, sealer) = match app::rewrap_ports(config, store).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vmx rewrap: {e}");
            return ExitCode::FAILURE;
        }
    };
    let current = match rewrap::current_key_id(&*sealer).await {
        Ok(k) => k,
        Err(e) => {
            eprintln!("vmx rewrap: the current key cannot seal: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("vmx rewrap: re-wrapping under {current}");
    // One progress line, rewritten after each secret.
    let mut any = false;
    let result = rewrap::rewrap_all(store, sealer, &current, |s| {
        any = true;
        eprint!("\rvmx rewrap: {s} ...");
    })
    .await;
    if any {
        eprintln!();
    }
    match result {
        Ok(summary) => {
            eprintln!("vmx rewrap: {summary}");
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vmx rewrap: stopped: {e} (rerun to finish; every record still opens)");
            ExitCode::FAILURE
        }
    }
}

/// Descriptors reserved beyond `VMX_MAX_CONNECTIONS`: upstream connections, the store.
const FILE_TABLE_HEADROOM: u64 = 1024;
/// Descriptors reserved when connections are not bounded.
const FILE_TABLE_UNBOUNDED: u64 = 16_384;

async fn serve(config: &Config) -> ExitCode {
    let open_files = shed::raise_open_files_limit();
    // Room for every connection the listener admits, plus upstream connections and the
    // store's files, so the descriptor table never grows (and stalls) while serving.
    let file_table = open_files.and_then(|limit| {
        let wanted = match config.max_connections {
            0 => FILE_TABLE_UNBOUNDED,
            n => (n as u64).saturating_add(FILE_TABLE_HEADROOM),
        };
        shed::reserve_file_table(wanted.min(limit))
    });
    let built = match app::build(config).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            return ExitCode::FAILURE;
        }
    };
    if let Some(token) = &built.generated_token {
        // Printed once, at the first start, so the operator can copy it; it is stored in
        // the data directory with mode 0600 and never printed again.
        eprintln!(
            "vmx: generated admin token (saved in {}): {}",
            built.token_path.display(),
            vmx_domain::secret::ExposeSecret::expose_secret(token)
        );
    }
    // SIGTERM and SIGINT are caught from before the port accepts connections: whoever
    // sees it open may stop the server, gracefully.
    let shutdown = app::shutdown_signal();
    // TCP_NODELAY on every accepted connection: the events of a stream go out as they come,
    // not held back by Nagle's algorithm until the caller's delayed ACK (40 ms per stream).
    let listener = match TcpListener::bind(config.listen).await {
        Ok(l) => built.connection_limit.listener(l).tap_io(|conn| {
            if let Err(e) = conn.stream().set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
            }
        }),
        Err(e) => {
            tracing::error!(error = %e, listen = %config.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = axum::serve::Listener::local_addr(&listener)
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %addr,
        data_dir = %config.data_dir.display(),
        max_in_flight = config.max_in_flight,
        max_connections = config.max_connections,
        shed_lag_us = config.shed_lag.as_micros() as u64,
        open_files_limit = open_files,
        file_table = file_table,
        "vmx listening"
    );
    tracing::info!("web console: http://{addr}/ (sign in with the admin token)");
    let sync = built.sync.clone();
    let service = built
        .router
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    // After the signal the server stops accepting and lets in-flight requests (streams
    // included) finish; past the grace period whatever is left is cut.
    let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = signalled.send(true);
    });
    let grace = config.shutdown_grace;
    let deadline = async move {
        if on_signal.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    let code = tokio::select! {
        result = server => match result {
            Ok(()) => {
                tracing::info!("vmx stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "server error");
                ExitCode::FAILURE
            }
        },
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests outlived the shutdown grace period; cut");
            ExitCode::FAILURE
        }
    };
    // The counters committed since the last background sync.
    if let Some(sync) = sync
        && let Err(e) = sync.flush()
    {
        tracing::error!(error = %e, "syncing the last capacity and usage commits failed");
        return ExitCode::FAILURE;
    }
    code
}
