#!/usr/bin/env bash
# Fuzzes vmx's parsers of hostile input with libFuzzer (cargo-fuzz): connection create/patch
# bodies and the config merge patch, capacity entries, API-key bodies, usage ranges, the
# provider request/response translations, the SSE decoder and the rate-limit header parsers.
# Every target runs for a fixed time; a crash (a panic, a broken invariant) fails the script
# and leaves the input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh               # CI: 10 s per target (about 1.5 min, plus a cold build of
#                                 # about 4-5 min on two cores)
#   scripts/fuzz.sh 600           # longer: 10 minutes per target
#   scripts/fuzz.sh 600 --api     # also chat_body and router (Chat Completions and Messages
#                                 # bodies through the whole router); builds vmx-api with the
#                                 # AWS SDKs instrumented: budget 20-30 minutes for that build
#   VMX_FUZZ_TARGETS="sse_decoder ratelimit" scripts/fuzz.sh 60   # some targets only
#
# Installs cargo-fuzz if missing (cargo install cargo-fuzz --locked). Uses the stable
# toolchain with `--sanitizer none` by default: the workspace forbids unsafe code, so what
# fuzzing finds here are panics and broken invariants, which need no sanitizer, and stable
# needs nothing installed by hand. VMX_FUZZ_TOOLCHAIN=nightly VMX_FUZZ_SANITIZER=address
# runs under AddressSanitizer instead. Corpora grow in target/fuzz-corpus/<target> (seeded
# from fuzz/seeds/<target>); JSON targets use fuzz/dicts/json.dict. Prints the executions of
# every target (libFuzzer's stat::number_of_executed_units) and their total.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[fuzz.sh] %s\n' "$*" >&2; }

SECONDS_PER_TARGET=${1:-10}
API=""
[ "${2:-}" = "--api" ] && API=1
TOOLCHAIN=${VMX_FUZZ_TOOLCHAIN:-stable}
SANITIZER=${VMX_FUZZ_SANITIZER:-none}
ROOT=$PWD
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz"
CORPORA="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz-corpus"

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

LIGHT="connection_body capacity api_key_body usage_range translation sse_decoder ratelimit"
TARGETS=${VMX_FUZZ_TARGETS:-$LIGHT${API:+ chat_body router}}
FEATURES=()
if [ -n "$API" ] || [[ " $TARGETS " == *" chat_body "* ]] || [[ " $TARGETS " == *" router "* ]]; then
  FEATURES=(--features api)
fi
BUILD=(-O -a -s "$SANITIZER" --codegen-units 16 --target-dir "$TARGET_DIR" "${FEATURES[@]}")

log "building the targets ($TOOLCHAIN, sanitizer $SANITIZER)"
started=$(date +%s)
cargo "+$TOOLCHAIN" fuzz build "${BUILD[@]}"
log "built in $(( $(date +%s) - started )) s"

dict_for() {
  case "$1" in
    sse_decoder | ratelimit | usage_range) echo "" ;;
    *) echo "-dict=$ROOT/fuzz/dicts/json.dict" ;;
  esac
}

total=0
failed=()
for t in $TARGETS; do
  corpus="$CORPORA/$t"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("$ROOT/fuzz/seeds/$t")
  out=$(mktemp -t "fuzz-$t.XXXXXX.log")
  set +e
  # -rss_limit_mb: a target that holds more than 2 GiB is a finding too.
  cargo "+$TOOLCHAIN" fuzz run "${BUILD[@]}" "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -rss_limit_mb=2048 \
    -max_len=65536 $(dict_for "$t") >"$out" 2>&1
  status=$?
  set -e
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$out" | grep -oE '[0-9]+$' | tail -1 || true)
  runs=${runs:-0}
  total=$(( total + runs ))
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    log "$t: FAILED after $runs executions; libFuzzer's report:"
    grep -vE '^#[0-9]+' "$out" | tail -n 60 >&2
  else
    printf '[fuzz.sh] %-16s %10d executions in %s s, corpus %d inputs\n' \
      "$t" "$runs" "$SECONDS_PER_TARGET" "$(find "$corpus" -type f | wc -l)" >&2
  fi
  rm -f "$out"
done
log "total: $total executions over $(wc -w <<<"$TARGETS") targets"
if [ "${#failed[@]}" -ne 0 ]; then
  log "crashed: ${failed[*]} (inputs in fuzz/artifacts/; replay: cargo +$TOOLCHAIN fuzz run ${BUILD[*]} <target> <file>)"
  exit 1
fi
