#!/usr/bin/env bash
# Architecture checks on the dependency graph (called by .ci/run; offline, a few seconds):
#   1. vmx-api knows no AWS: no `aws-*` crate among its normal dependencies, direct or not
#      (which adapters exist is decided by the binaries: lib/vmx-server, functions/*)
#   2. only functions/* know Lambda: no crate under lib/ depends on lambda_http or
#      lambda_runtime (normal dependencies, direct or not)
#   3. the domain is pure: vmx-domain depends on no AWS, HTTP, web framework or storage crate
#   4. configuration is read in one place: no Rust source under lib/*/src or functions/*/src
#      reads the environment except lib/vmx-api/src/config.rs (and vmx-conformance, the test
#      support that finds moto)
#   5. the code map is complete: ARCHITECTURE.md names every tracked .rs file over 150 lines
# Each failure names the crate, the rule and the dependency path (`cargo tree -i`).
set -euo pipefail
cd "$(dirname "$0")/.."

FAILED=0
fail() {
  printf '\n[arch-checks] FAILED: %s\n' "$1" >&2
  shift
  printf '%s\n' "$@" >&2
  FAILED=1
}

# The normal dependencies of package $1, one crate name a line.
deps() {
  cargo tree --offline --quiet -p "$1" -e normal --prefix none --format '{p}' |
    awk '{print $1}' | sort -u
}

# Why package $1 depends on crate $2 (the inverted tree, shortened).
why() {
  cargo tree --offline --quiet -p "$1" -e normal -i "$2" 2>/dev/null | head -15
}

# check PACKAGE RULE REGEX: fails when a normal dependency of PACKAGE matches REGEX.
check() {
  local package=$1 rule=$2 pattern=$3 bad
  bad=$(deps "$package" | grep -E "$pattern" || true)
  if [ -n "$bad" ]; then
    local first
    first=$(head -1 <<<"$bad")
    fail "$package: $rule; it depends on: $(tr '\n' ' ' <<<"$bad")" \
      "how $package reaches $first:" "$(why "$package" "$first")"
  else
    echo "ok: $package: $rule"
  fi
}

echo "== vmx-api knows no AWS"
check vmx-api "no aws-* crate among its normal dependencies (the binaries choose the AWS adapters)" '^aws-'

echo "== only functions/* know Lambda"
for manifest in lib/*/Cargo.toml; do
  package=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -1)
  check "$package" "a lib/ crate never depends on lambda_http or lambda_runtime" '^lambda_(http|runtime)$'
done

echo "== the domain is pure"
check vmx-domain "no AWS, HTTP, web framework or storage dependency" \
  '^(aws-.*|http|http-body|hyper|axum|tower|tower-http|reqwest|redb|lambda_http|lambda_runtime)$'

echo "== configuration is read in one place"
readers=$(grep -rlE 'std::env::var|env::vars?\(' lib/*/src functions/*/src --include='*.rs' |
  grep -vE '^lib/vmx-api/src/config\.rs$|^lib/vmx-conformance/' || true)
if [ -n "$readers" ]; then
  fail "the environment is read outside vmx_api::config::Config::from_env" "$readers"
else
  echo "ok: only lib/vmx-api/src/config.rs reads the environment"
fi

echo "== the code map names every source file over 150 lines"
unnamed=""
while read -r lines file; do
  [ "$file" = total ] && continue
  [ "$lines" -gt 150 ] || continue
  name=$(basename "$file")
  # Named means: the file's name, or its folder/name for mod.rs and same-named files.
  grep -qF "$name" ARCHITECTURE.md || unnamed+="$file ($lines lines)"$'\n'
done < <(git ls-files '*.rs' | grep -v '^fuzz/' | xargs wc -l)
if [ -n "$unnamed" ]; then
  fail "ARCHITECTURE.md's code map does not name these files over 150 lines" "$unnamed"
else
  echo "ok: ARCHITECTURE.md names every source file over 150 lines"
fi

if [ "$FAILED" -ne 0 ]; then
  printf '\n[arch-checks] architecture invariants broken (see ARCHITECTURE.md, "Invariants"): move the dependency to the binary or adapter crate that needs it\n' >&2
  exit 1
fi
echo "arch-checks: every invariant holds"
