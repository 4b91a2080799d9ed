#!/usr/bin/env bash
# Everything CI checks: formatting, lints, build, the packed snap and charm
# (the charm checked with charmcraft), then the whole test suite (unit tests
# and the end-to-end tests against real PostgreSQL and etcd, the snap and the
# charm).
#
#   bash scripts/test.sh                 # on a fresh Debian 12 machine
#   bash scripts/test.sh -E 'test(failover)'   # extra arguments go to cargo nextest run
#
# CARGO_TARGET_DIR defaults to /var/tmp/pgpilot-target, outside the clone,
# so successive CI runs reuse the build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pgpilot-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

# Imports go down the layers of docs/design.md (its table); fails naming
# each edge that goes the wrong way, and prints the largest import cycle.
step "cargo nextest run -p pgpilot --test layers (the layer rule of docs/design.md)"
cargo nextest run -p pgpilot --test layers --no-capture

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build -p pgpilot"
cargo build -p pgpilot

# The snap tests (tests/tests/snap.rs) run the real packed .snap.
step "bash scripts/build-snap.sh (the packed snap the snap tests install)"
PGPILOT_SNAP=$(bash scripts/build-snap.sh | tail -n 1)
export PGPILOT_SNAP

# The charm tests run the packed .charm; build-charm.sh also checks it with
# charmcraft (scripts/check-charm.sh).
step "bash scripts/build-charm.sh (the packed charm the charm tests deploy, checked with charmcraft)"
PGPILOT_CHARM=$(bash scripts/build-charm.sh | tail -n 1)
export PGPILOT_CHARM

export PGPILOT_BIN="$CARGO_TARGET_DIR/debug/pgpilot"
step "cargo nextest run --workspace (PGPILOT_BIN=$PGPILOT_BIN, PGPILOT_SNAP=$PGPILOT_SNAP, PGPILOT_CHARM=$PGPILOT_CHARM)"
cargo nextest run --workspace --no-fail-fast --profile ci "$@"
