#!/usr/bin/env bash
# Runs every test. Installs what the tests need (moto server for DynamoDB/KMS/STS on
# loopback; the openai and anthropic SDKs and pytest; schemathesis; for the console's
# browser tests Debian's chromium, Playwright for Python and axe-core), starts moto on a free
# port, runs the Rust tests, the end-to-end tests through the official SDKs, the browser
# tests and schemathesis against the OpenAPI document, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
# The official SDKs drive the end-to-end tests; prometheus_client parses `GET /metrics`;
# jsonschema checks responses against the OpenAPI document's schemas in the browser tests.
if ! "$PY" -c 'import openai, anthropic, pytest, prometheus_client, jsonschema' >/dev/null 2>&1; then
  log "installing openai, anthropic, pytest, prometheus_client, jsonschema"
  "$PY" -m pip install --quiet --disable-pip-version-check openai anthropic pytest prometheus_client jsonschema
fi
# The browser tests (tests/browser): Debian's chromium (Playwright never downloads a browser
# here), Playwright for Python (its wheel carries its driver) and axe-core from npm.
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}
if [ -z "${VMX_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi
if ! command -v npm >/dev/null 2>&1; then apt_install npm; fi
if ! "$PY" -c 'import playwright.sync_api' >/dev/null 2>&1; then
  log "installing playwright"
  "$PY" -m pip install --quiet --disable-pip-version-check playwright
fi
AXE_DIR=${VMX_AXE_DIR:-$HOME/.cache/vmx-axe}
export VMX_AXE_JS="$AXE_DIR/node_modules/axe-core/axe.min.js"
if [ ! -f "$VMX_AXE_JS" ]; then
  log "installing axe-core into $AXE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$AXE_DIR" axe-core@4 >/dev/null
fi
start_moto
# Tests that need moto fail (rather than skip) when it is missing.
export VMX_REQUIRE_AWS_TESTS=1

cargo test --workspace --all-targets "$@"

# End to end: the real binaries, driven by the official Python SDKs.
cargo build --quiet -p vmx-server -p vmx-providers -p vmx-conformance --features vmx-providers/stub --bins
export VMX_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/debug"
"$PY" -m pytest -q tests/e2e

# The web console in headless Chromium, against the same binaries and stubs.
"$PY" -m pytest -q tests/browser

# The API against its own OpenAPI document, with the binaries just built (VMX_BIN_DIR).
./scripts/schemathesis.sh
