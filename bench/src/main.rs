//! `vmx-bench <section> [options]`: one benchmark section, printed as Markdown on stdout
//! (progress on stderr). `scripts/bench.sh` runs every section and writes BENCHMARKS.md.
//!
//! Sections:
//! - `overhead`: open-loop load through the local server and directly against a stub
//!   OpenAI upstream, non-streaming and streaming; with `--litellm <url>` also through a
//!   LiteLLM proxy pointed at the same stub ([`overhead`]);
//! - `aws-calls`: AWS calls per inference request, counted at a proxy in front of moto
//!   ([`aws_calls`]), and the DynamoDB reads of a flood of unknown API keys ([`flood`]);
//! - `coldstart`: each Lambda bootstrap against a Lambda Runtime API emulator, its size
//!   stripped and zipped ([`coldstart`]);
//! - `capacity`: admissions per second per capacity store, with contention ([`capacity`]);
//! - `overload`: the local server at twice its highest sustained rate: shed requests, the
//!   admitted ones' overhead, peak memory, open files ([`overload`]);
//! - `hotpath`: vmx beside nginx as a plain reverse proxy, in front of the same static
//!   nginx upstream: closed-loop throughput and latency (wrk), CPU per request, streaming
//!   time to first byte and per-event overhead ([`hotpath`]).
#![allow(clippy::print_stdout)]

mod aws_calls;
mod capacity;
mod coldstart;
mod flood;
mod hotpath;
mod overhead;
mod overload;
mod report;
mod upstream;

/// Every section's failure: a message for the operator (this is a harness, not a service).
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
pub type BenchResult<T> = Result<T, BenchError>;

const USAGE: &str =
    "usage: vmx-bench <overhead|aws-calls|coldstart|capacity|overload|hotpath> [options]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let section = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match section.as_str() {
        "overhead" => overhead::run(&rest).await,
        "aws-calls" => aws_calls::run(&rest).await,
        "coldstart" => coldstart::run(&rest).await,
        "capacity" => capacity::run(&rest).await,
        "overload" => overload::run(&rest).await,
        "hotpath" => hotpath::run(&rest).await,
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(markdown) => {
            println!("{markdown}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vmx-bench {section}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
