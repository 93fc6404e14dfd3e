#!/usr/bin/env bash
# Deployment checks, offline and without AWS credentials (called by .ci/run):
#   1. cfn-lint on infra/*.yaml
#   2. sam validate --lint on template.yaml
#   3. template.yaml expanded by the SAM transform (scripts/sam_expand.py), then cfn-lint on
#      the result, so a wrong !Ref inside a function's policy or environment fails
#   4. least privilege: no wildcard action, no Resource "*" except where AWS requires it
#      (scripts/iam_policy_check.py), with a self-test proving bad copies are rejected
#   5. template.yaml against the code: table schema, environment variables, crates and bins
#      (scripts/template_checks.py)
#   6. cargo lambda build --release (x86_64) of every function, with bootstrap sizes
#   7. sam build (Architecture=x86_64) with BuildMethod rust-cargolambda
#
# Tools come from PyPI into a venv kept outside the work tree (VMX_DEPLOY_TOOLS, default
# ~/.cache/vmx/deploy-tools), installed only when missing. arm64 is not built here: its
# rustup target cannot be downloaded on this machine. Nothing is left running.
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
  log "installing ${REQUIREMENTS[*]} into $VENV"
  mkdir -p "$TOOLS"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
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

# Functions of the template whose crate exists; the others are reported, not built.
BUILT=()
while read -r id uri bin; do
  if [ -d "$uri" ]; then
    BUILT+=("$id:$uri:$bin")
  else
    warn "$id: $uri does not exist yet, binary '$bin' NOT BUILT (create the crate to build it)"
  fi
done < <("$VPY" scripts/template_checks.py functions template.yaml)
[ "${#BUILT[@]}" -gt 0 ] || { log "no function crate exists"; exit 1; }

step "cargo lambda build --release --target x86_64-unknown-linux-gnu"
TARGET_DIR=$(cargo metadata --no-deps --format-version 1 | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin <<<"$entry"
  log "$id: cargo lambda build --release --bin $bin (in $uri)"
  (cd "$uri" && cargo lambda build --release --target x86_64-unknown-linux-gnu --bin "$bin")
done
printf '\n%-22s %-12s %14s %14s %14s\n' function binary bootstrap stripped zipped
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin <<<"$entry"
  boot=$TARGET_DIR/lambda/$bin/bootstrap
  [ -f "$boot" ] || { log "$boot was not produced"; exit 1; }
  cp "$boot" "$WORK/$bin.stripped"
  strip "$WORK/$bin.stripped" 2>/dev/null || true
  "$VPY" - "$WORK/$bin.stripped" "$WORK/$bin.zip" <<'PYZIP'
import sys, zipfile
src, dst = sys.argv[1:]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o755 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(src, "rb") as f:
        z.writestr(info, f.read(), compresslevel=9)
PYZIP
  printf '%-22s %-12s %14s %14s %14s\n' "$id" "$bin" \
    "$(stat -c %s "$boot")" "$(stat -c %s "$WORK/$bin.stripped")" "$(stat -c %s "$WORK/$bin.zip")"
done
echo "(bytes; bootstrap as built: the release profile already strips symbols)"

step "sam build --parameter-overrides Architecture=x86_64"
SAM_BUILD=$TARGET_DIR/sam-build
rm -rf "$SAM_BUILD"
ALL_FUNCTIONS=$("$VPY" scripts/template_checks.py functions template.yaml | wc -l)
if [ "${#BUILT[@]}" -eq "$ALL_FUNCTIONS" ]; then
  sam build --template-file template.yaml --build-dir "$SAM_BUILD" \
    --parameter-overrides Architecture=x86_64
else
  # Build the functions that exist, one by one, each into its own directory (sam build of
  # the whole template would stop at a missing CodeUri, and each run empties its build dir).
  for entry in "${BUILT[@]}"; do
    IFS=: read -r id uri bin <<<"$entry"
    sam build "$id" --template-file template.yaml --build-dir "$SAM_BUILD/$id" \
      --parameter-overrides Architecture=x86_64
  done
fi
for entry in "${BUILT[@]}"; do
  IFS=: read -r id uri bin <<<"$entry"
  artifact=$SAM_BUILD/$id/bootstrap
  [ "${#BUILT[@]}" -eq "$ALL_FUNCTIONS" ] || artifact=$SAM_BUILD/$id/$id/bootstrap
  [ -x "$artifact" ] || { log "sam build produced no $artifact"; exit 1; }
  cmp -s "$artifact" "$TARGET_DIR/lambda/$bin/bootstrap" ||
    log "$id: sam build's bootstrap differs from cargo lambda's (rebuilt with other flags)"
  echo "ok: $artifact ($(stat -c %s "$artifact") bytes)"
done
rm -rf "$SAM_BUILD"

step "deploy checks passed in $(($(date +%s) - START))s"
if [ "${#BUILT[@]}" -lt "$ALL_FUNCTIONS" ]; then
  warn "some functions of template.yaml have no crate yet and were not built (see above)"
fi
