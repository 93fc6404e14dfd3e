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
# Builds the targets the way `cargo fuzz build -O -a -s none` does (the same rustc flags:
# SanitizerCoverage instrumentation, `--cfg fuzzing`, debug assertions and overflow checks)
# with plain cargo, so nothing has to be installed (cargo-fuzz would cost a 3-minute
# `cargo install` on a fresh machine); the targets are cargo-fuzz compatible, and
# `cargo fuzz run <target>` works too where cargo-fuzz is installed. Stable toolchain and no
# sanitizer by default: the workspace forbids unsafe code, so what fuzzing finds here are
# panics and broken invariants, which need no sanitizer. VMX_FUZZ_TOOLCHAIN=nightly
# VMX_FUZZ_SANITIZER=address runs under AddressSanitizer instead. Corpora grow in target/fuzz-corpus/<target> (seeded
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

LIGHT="connection_body capacity api_key_body usage_range translation sse_decoder ratelimit"
TARGETS=${VMX_FUZZ_TARGETS:-$LIGHT${API:+ chat_body router}}
FEATURES=()
if [ -n "$API" ] || [[ " $TARGETS " == *" chat_body "* ]] || [[ " $TARGETS " == *" router "* ]]; then
  FEATURES=(--features api)
fi
TRIPLE=$(rustc "+$TOOLCHAIN" -vV | sed -n 's/^host: //p')
FLAGS=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  --cfg fuzzing
  -Cdebug-assertions
  -Coverflow-checks
  -Ccodegen-units=16
)
[ "$SANITIZER" != none ] && FLAGS+=("-Zsanitizer=$SANITIZER")

log "building the targets ($TOOLCHAIN, sanitizer $SANITIZER)"
started=$(date +%s)
# --target: the flags apply to the targets and their dependencies, not to build scripts and
# proc macros (as cargo-fuzz does it).
RUSTFLAGS="${FLAGS[*]}" cargo "+$TOOLCHAIN" build --release --bins \
  --manifest-path fuzz/Cargo.toml --target "$TRIPLE" --target-dir "$TARGET_DIR" "${FEATURES[@]}"
log "built in $(( $(date +%s) - started )) s"
BIN_DIR="$TARGET_DIR/$TRIPLE/release"
ARTIFACTS="$ROOT/fuzz/artifacts"

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
  mkdir -p "$ARTIFACTS/$t"
  "$BIN_DIR/$t" "$corpus" "${seeds[@]}" -artifact_prefix="$ARTIFACTS/$t/" \
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
  log "crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/; replay: $BIN_DIR/<target> <file>)"
  exit 1
fi
