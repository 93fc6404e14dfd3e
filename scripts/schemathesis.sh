#!/usr/bin/env bash
# Runs schemathesis (property-based API testing, PyPI) against the local server and its own
# OpenAPI document (GET /openapi.json): the real `vmx` binary in front of `vmx-stub` (stub
# providers), with a known admin token, on free loopback ports. Every generated request must
# get no 5xx, a documented status code, a documented content type and a body matching the
# documented schema.
#
#   scripts/schemathesis.sh              # CI: 50 examples per operation (about a minute)
#   scripts/schemathesis.sh 500          # longer: 500 examples per operation
#   VMX_SCHEMATHESIS_SEED=42 scripts/schemathesis.sh   # reproduce a run (the seed is printed)
#
# The server gets a clean environment (no AWS region, so no AWS SDK; AWS_EC2_METADATA_DISABLED
# besides): nothing here leaves loopback. VMX_BIN_DIR uses binaries built elsewhere;
# VMX_SCHEMATHESIS_PHASES and VMX_SCHEMATHESIS_ARGS change the phases and add options.
#
# Installs schemathesis if missing, builds both binaries (debug), stops what it started by
# PID, and exits non-zero on any failure. Reports (JUnit, NDJSON events) go to
# target/schemathesis/.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[schemathesis.sh] %s\n' "$*" >&2; }

MAX_EXAMPLES=${1:-${VMX_SCHEMATHESIS_EXAMPLES:-50}}
SEED=${VMX_SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}
PY=${PYTHON:-python3}
ADMIN_TOKEN="schemathesis-admin-token-4c1e7b-0123456789"

if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis"
  "$PY" -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
log "$(schemathesis --version 2>&1 | head -1)"

# VMX_BIN_DIR: use binaries built elsewhere (as tests/e2e does) instead of building here.
if [ -z "${VMX_BIN_DIR:-}" ]; then
  cargo build --quiet -p vmx-server -p vmx-providers --features vmx-providers/stub --bins
fi
BIN_DIR="${VMX_BIN_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/debug}"

WORK=$(mktemp -d -t vmx-schemathesis.XXXXXX)
REPORTS="${CARGO_TARGET_DIR:-$PWD/target}/schemathesis"
mkdir -p "$REPORTS"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Stub providers: the first line of stdout is a JSON object of base URLs.
"$BIN_DIR/vmx-stub" >"$WORK/stub.json" 2>"$WORK/stub.log" &
PIDS+=("$!")
for _ in $(seq 1 200); do
  [ -s "$WORK/stub.json" ] && break
  sleep 0.05
done
url() { "$PY" -c "import json,sys; print(json.load(open('$WORK/stub.json'))['$1'])"; }

PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
env -i PATH="$PATH" HOME="${HOME:-/root}" \
  VMX_LISTEN="127.0.0.1:$PORT" \
  VMX_DATA_DIR="$WORK/data" \
  VMX_ADMIN_TOKEN="$ADMIN_TOKEN" \
  VMX_LOG=warn \
  AWS_EC2_METADATA_DISABLED=true \
  VMX_PROVIDER_TIMEOUT_SECS=5 \
  VMX_PROVIDER_STREAM_IDLE_SECS=5 \
  VMX_OPENAI_BASE_URL="$(url openai)" \
  VMX_ANTHROPIC_BASE_URL="$(url anthropic)" \
  VMX_GEMINI_BASE_URL="$(url gemini)" \
  VMX_GROQ_BASE_URL="$(url groq)" \
  VMX_PERPLEXITY_BASE_URL="$(url perplexity)" \
  "$BIN_DIR/vmx" >"$WORK/vmx.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 300); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('$BASE/healthz', timeout=1)" >/dev/null 2>&1; then
    break
  fi
  sleep 0.05
done
log "vmx on $BASE (pid ${PIDS[1]}), stubs (pid ${PIDS[0]})"

# The connections the document's examples name, so the examples reach the stub providers.
admin() {
  "$PY" - "$BASE" "$ADMIN_TOKEN" "$1" <<'PYEOF'
import json, sys, urllib.request
base, token, body = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(base + "/v1/connections", data=body.encode(), method="POST",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=10).close()
PYEOF
}
admin '{"name": "prod-openai", "provider": "openai", "config": {"apiKey": "sk-schemathesis"}}'
admin '{"name": "prod-claude", "provider": "anthropic", "config": {"apiKey": "sk-schemathesis"}}'

log "schemathesis: $MAX_EXAMPLES examples per operation, seed $SEED"
set +e
schemathesis run "$BASE/openapi.json" \
  --header "Authorization: Bearer $ADMIN_TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases "${VMX_SCHEMATHESIS_PHASES:-examples,coverage,fuzzing,stateful}" \
  --max-examples "$MAX_EXAMPLES" \
  --seed "$SEED" \
  --workers 1 \
  --request-timeout 20 \
  --suppress-health-check all \
  --report junit,ndjson --report-dir "$REPORTS" \
  ${VMX_SCHEMATHESIS_ARGS:-} \
  2>&1 | tee "$WORK/run.log"
status=${PIPESTATUS[0]}
set -e

# The counts, from schemathesis's summary (ANSI colours stripped).
summary=$(sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/run.log")
cases=$(printf '%s\n' "$summary" | grep -oE '[0-9]+ generated' | tail -1 | grep -oE '[0-9]+' || true)
ops=$(printf '%s\n' "$summary" | grep -oE 'Tested: [0-9]+' | tail -1 | grep -oE '[0-9]+' || true)
log "${cases:-?} generated test cases over ${ops:-?} operations (seed $SEED)"

if [ "$status" -ne 0 ]; then
  log "FAILED (exit $status); server log follows"
  tail -n 50 "$WORK/vmx.log" >&2 || true
fi
exit "$status"
