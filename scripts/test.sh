#!/usr/bin/env bash
# Runs every test. Installs what the tests need (moto server for DynamoDB/KMS/STS on
# loopback; the openai and anthropic SDKs and pytest; schemathesis), starts moto on a free
# port, runs the Rust tests, the end-to-end tests through the official SDKs and schemathesis
# against the OpenAPI document, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

PY=${PYTHON:-python3}
if ! command -v moto_server >/dev/null 2>&1 || ! "$PY" -c 'import flask, flask_cors' >/dev/null 2>&1; then
  log "installing moto[server]"
  "$PY" -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
# The official SDKs drive the end-to-end tests.
if ! "$PY" -c 'import openai, anthropic, pytest' >/dev/null 2>&1; then
  log "installing openai, anthropic, pytest"
  "$PY" -m pip install --quiet --disable-pip-version-check openai anthropic pytest
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT INT TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

MOTO_PORT=$(free_port)
MOTO_LOG=$(mktemp -t moto.XXXXXX.log)
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MOTO_PORT/moto-api/')" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
log "moto_server on 127.0.0.1:$MOTO_PORT (pid ${PIDS[0]})"

export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
# Tests that need moto fail (rather than skip) when it is missing.
export VMX_REQUIRE_AWS_TESTS=1

cargo test --workspace --all-targets "$@"

# End to end: the real binaries, driven by the official Python SDKs.
cargo build --quiet -p vmx-server -p vmx-providers -p vmx-conformance --features vmx-providers/stub --bins
export VMX_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug"
"$PY" -m pytest -q tests/e2e

# The API against its own OpenAPI document, with the binaries just built (VMX_BIN_DIR).
./scripts/schemathesis.sh
