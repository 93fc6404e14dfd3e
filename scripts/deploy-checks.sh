#!/usr/bin/env bash
# Deployment checks, offline and without AWS credentials (called by .ci/run):
#   1. cfn-lint on infra/*.yaml
#   2. sam validate --lint on template.yaml
#   3. template.yaml expanded by the SAM transform (scripts/sam_expand.py), then cfn-lint on
#      the result, so a wrong !Ref inside a function's policy or environment fails
#   4. least privilege: no wildcard action, no Resource "*" except where AWS requires it
#      (scripts/iam_policy_check.py), with a self-test proving bad copies are rejected
#   5. template.yaml against the code: table schema, environment variables, crates and bins,
#      and each role's DynamoDB writes (LeadingKeys) against the item kinds its function
#      writes (scripts/template_checks.py mirror, leading-keys), and how inference is exposed:
#      STREAM integrations for every caller route, reserved concurrency, the function URL
#      only under its parameter (scripts/template_checks.py edge)
#   6. cargo lambda build --release (x86_64) of every function, all in one cargo run
#   7. sam build (Architecture=x86_64) with BuildMethod rust-cargolambda, which finds the
#      binaries of step 6 fresh and only copies them (a rebuild is reported)
#   8. each function's bootstrap as sam build leaves it: bytes, stripped, and zipped as
#      `sam deploy` uploads it; FAILS when a zipped bootstrap is 6,000,000 bytes or more
#
# Tools come from PyPI into a venv kept outside the work tree (VMX_DEPLOY_TOOLS, default
# ~/.cache/vmx/deploy-tools), installed only when missing (with uv when it installs, else
# pip). arm64 is not built here: its rustup target cannot be downloaded on this machine.
# Nothing is left running.
#
# Cost on this 2-core machine (docs/deploy.md, "Binary size and build time"): cold, about
# COLD_PLACEHOLDER; warm, WARM_PLACEHOLDER.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)

log() { printf '[deploy-checks] %s\n' "$*" >&2; }
step() { printf '\n== %s (%ds)\n' "$*" "$(($(date +%s) - START))"; }
warn() { printf '\n[deploy-checks] WARNING: %s\n\n' "$*" >&2; }

PY=${PYTHON:-python3}
TOOLS=${VMX_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vmx/deploy-tools}
VENV=$TOOLS/venv
REQUIREMENTS=(
  'cfn-lint>=1.58,<2'
  'aws-sam-cli>=1.170,<2'
  'aws-sam-translator>=1.115,<2'
  'cargo-lambda>=1.9.2,<2'
  'ziglang>=0.13,<1'
)

tools_ready() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" -c 'import cfnlint, samtranslator, samcli, ziglang' >/dev/null 2>&1 &&
    [ -x "$VENV/bin/cargo-lambda" ] && [ -x "$VENV/bin/sam" ] && [ -x "$VENV/bin/cfn-lint" ]
}
if ! tools_ready; then
  # uv (from PyPI too) installs the same packages several times faster than pip on a cold
  # machine (measured here: under a minute against over four); pip stays the fallback.
  log "installing ${REQUIREMENTS[*]} into $VENV"
  mkdir -p "$TOOLS"
  "$PY" -m venv --clear "$VENV"
  if ! { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'uv>=0.5,<1' &&
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --compile-bytecode "${REQUIREMENTS[@]}"; }; then
    log "uv failed; installing with pip"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  fi
fi
tools_ready || { log "tools missing from $VENV after install"; exit 1; }
export PATH="$VENV/bin:$PATH"
VPY=$VENV/bin/python

# Offline and credential-free: no AWS credentials, profiles or instance metadata, a fixed
# region, no telemetry.
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export SAM_CLI_TELEMETRY=0 SAM_CLI_CONTAINER_CONNECTION_TIMEOUT=1

WORK=$(mktemp -d -t vmx-deploy-checks.XXXXXX)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

step "cfn-lint infra/*.yaml"
cfn-lint infra/*.yaml
echo "ok: $(ls infra/*.yaml | tr '\n' ' ')"

step "sam validate --lint"
sam validate --lint --template-file template.yaml

step "SAM transform, then cfn-lint on the expanded template"
EXPANDED=$WORK/template.expanded.json
"$VPY" scripts/sam_expand.py template.yaml "$EXPANDED"
cfn-lint "$EXPANDED"
echo "ok: expanded template passes cfn-lint"

step "IAM least privilege"
"$VPY" scripts/iam_policy_check.py "$EXPANDED" infra/*.yaml
"$VPY" scripts/iam_policy_check.py --self-test "$EXPANDED"

step "template.yaml against the code"
"$VPY" scripts/template_checks.py mirror template.yaml
"$VPY" scripts/template_checks.py leading-keys template.yaml
"$VPY" scripts/template_checks.py edge template.yaml

# Functions of the template whose crate exists; the others are reported, not built.
BUILT=()
while read -r id uri bin package; do
  if [ -d "$uri" ]; then
    BUILT+=("$id:$uri:$bin:$package")
  else
    warn "$id: $uri does not exist yet, binary '$bin' NOT BUILT (create the crate to build it)"
  fi
done < <("$VPY" scripts/template_checks.py functions template.yaml)
[ "${#BUILT[@]}" -gt 0 ] || { log "no function crate exists"; exit 1; }
ALL_FUNCTIONS=$("$VPY" scripts/template_checks.py functions template.yaml | wc -l)

TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# One cargo run builds every function: the dependencies compile once, and the functions'
# LTO links (one thread each with codegen-units = 1) run side by side. A function's
# dependency features are the same built alone (as sam build does it) or with the others,
# so sam build below finds every binary fresh and only copies it (checked there).
step "cargo lambda build --release --target $TRIPLE (every function in one run)"
PACKAGES=()
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin package <<<"$entry"
  PACKAGES+=(-p "$package")
done
cargo lambda build --release --target "$TRIPLE" "${PACKAGES[@]}"

step "sam build --parameter-overrides Architecture=x86_64"
SAM_BUILD=$TARGET_DIR/sam-build
rm -rf "$SAM_BUILD"
BEFORE_SAM=$WORK/before-sam-build
touch "$BEFORE_SAM"
if [ "${#BUILT[@]}" -eq "$ALL_FUNCTIONS" ]; then
  sam build --template-file template.yaml --build-dir "$SAM_BUILD" \
    --parameter-overrides Architecture=x86_64
else
  # Build the functions that exist, one by one, each into its own directory (sam build of
  # the whole template would stop at a missing CodeUri, and each run empties its build dir).
  for entry in "${BUILT[@]}"; do
    IFS=: read -r id uri bin package <<<"$entry"
    sam build "$id" --template-file template.yaml --build-dir "$SAM_BUILD/$id" \
      --parameter-overrides Architecture=x86_64
  done
fi
# cargo links a binary into release/deps/<bin>-<hash> (cargo lambda then moves the copy
# outside deps/ to target/lambda/<bin>/bootstrap, on every run): a newer file there means
# sam build linked the function again.
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin package <<<"$entry"
  relinked=$(find "$TARGET_DIR/$TRIPLE/release/deps" -maxdepth 1 -type f -name "$bin-*" ! -name '*.d' -newer "$BEFORE_SAM")
  if [ -n "$relinked" ]; then
    warn "$id: sam build compiled '$bin' again (its flags or features differ from the cargo lambda build above): the checks still hold, but CI pays for the build twice"
  else
    echo "ok: sam build reused $bin from the cargo lambda build"
  fi
done

# What `sam deploy` uploads: each function's build directory, zipped by SAM CLI's own
# packager. Lambda reads the whole archive on a cold start, hence the limit (issues 7, 9).
MAX_ZIPPED=6000000
step "bootstrap sizes (zipped must stay below $MAX_ZIPPED bytes)"
printf '%-22s %-12s %12s %12s %12s  %s\n' function binary bootstrap stripped zipped check
OVER=()
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin package <<<"$entry"
  dir=$SAM_BUILD/$id
  [ "${#BUILT[@]}" -eq "$ALL_FUNCTIONS" ] || dir=$SAM_BUILD/$id/$id
  artifact=$dir/bootstrap
  [ -x "$artifact" ] || { log "sam build produced no $artifact"; exit 1; }
  cmp -s "$artifact" "$TARGET_DIR/lambda/$bin/bootstrap" ||
    log "$id: sam build's bootstrap differs from cargo lambda's (measuring sam build's)"
  cp "$artifact" "$WORK/$bin.stripped"
  strip "$WORK/$bin.stripped"
  zipped=$("$VPY" - "$dir" "$WORK/$bin" <<'PYZIP'
import os, sys
from samcli.lib.package.utils import make_zip
print(os.path.getsize(make_zip(sys.argv[2], sys.argv[1])))
PYZIP
  )
  verdict=ok
  if [ "$zipped" -ge "$MAX_ZIPPED" ]; then
    verdict="TOO BIG (limit $MAX_ZIPPED)"
    OVER+=("$id")
  fi
  printf '%-22s %-12s %12s %12s %12s  %s\n' "$id" "$bin" \
    "$(stat -c %s "$artifact")" "$(stat -c %s "$WORK/$bin.stripped")" "$zipped" "$verdict"
done
echo "(bytes; bootstrap as sam build leaves it, stripped by strip(1) again, zipped as sam deploy uploads it)"
rm -rf "$SAM_BUILD"
if [ "${#OVER[@]}" -gt 0 ]; then
  log "zipped bootstrap of ${OVER[*]} is $MAX_ZIPPED bytes or more: see [profile.release] in Cargo.toml and each function's dependencies (cargo tree -e normal -p <crate>)"
  exit 1
fi

step "deploy checks passed in $(($(date +%s) - START))s"
if [ "${#BUILT[@]}" -lt "$ALL_FUNCTIONS" ]; then
  warn "some functions of template.yaml have no crate yet and were not built (see above)"
fi
