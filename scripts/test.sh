#!/usr/bin/env bash
# Runs every test. Installs what the tests need (moto server for DynamoDB/KMS/STS on
# loopback; the openai and anthropic SDKs and pytest; schemathesis), starts moto on a free
# port, runs the Rust tests, the end-to-end tests through the official SDKs and schemathesis
# against the OpenAPI document, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The official SDKs drive the end-to-end tests.
if ! "$PY" -c 'import openai, anthropic, pytest' >/dev/null 2>&1; then
  log "installing openai, anthropic, pytest"
  "$PY" -m pip install --quiet --disable-pip-version-check openai anthropic pytest
fi
start_moto
# Tests that need moto fail (rather than skip) when it is missing.
export VMX_REQUIRE_AWS_TESTS=1

cargo test --workspace --all-targets "$@"

# End to end: the real binaries, driven by the official Python SDKs.
cargo build --quiet -p vmx-server -p vmx-providers -p vmx-conformance --features vmx-providers/stub --bins
export VMX_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug"
"$PY" -m pytest -q tests/e2e

# The API against its own OpenAPI document, with the binaries just built (VMX_BIN_DIR).
./scripts/schemathesis.sh
