#!/usr/bin/env bash
# Charm benchmark: the packed charm and snap on the model simulator
# (tests/src/juju/driver.rs): seconds from deploying 3 units to every unit
# active, the hooks that took and their CPU time, and seconds from the
# primary machine's loss to a survivor's unit showing `Primary`.
#
#   bash scripts/bench-charm.sh [--runs N]     # default 3 runs, one after the other
#
# Uses $PGPILOT_CHARM and $PGPILOT_SNAP when set, else builds them with
# scripts/build-charm.sh and scripts/build-snap.sh. Units listen on
# 127.0.9.1-3 (PGPILOT_BENCH_NET to change). Prints one JSON line per run.
#
# Today's charm cannot run here (no Juju controller): its figures for the
# same events are what its code does, not measured (docs/benchmarks.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
runs=3
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        *) echo "bench-charm.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/setup-lib.sh
. "$here/setup-lib.sh"
load_cargo
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pgpilot-target}"
cd "$repo"
if [ -z "${PGPILOT_SNAP:-}" ]; then
    PGPILOT_SNAP=$(bash scripts/build-snap.sh | tail -n 1)
fi
if [ -z "${PGPILOT_CHARM:-}" ]; then
    PGPILOT_CHARM=$(bash scripts/build-charm.sh | tail -n 1)
fi
export PGPILOT_SNAP PGPILOT_CHARM
for i in $(seq 1 "$runs"); do
    echo "run $i of $runs ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))" >&2
    cargo nextest run -p pgpilot-e2e --test charm_bench --run-ignored only \
        --no-capture --status-level none --final-status-level fail 2>/dev/null \
        | grep '^charm-bench: '
done
