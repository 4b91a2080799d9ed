#!/usr/bin/env bash
# Snap benchmark: the charmed-postgresql snap's size, and the idle memory of its
# daemons (pgpilot run + fence-guard + etcd; PostgreSQL apart) next to what the
# current charmed-postgresql snap runs for the same roles (Patroni,
# postgres_exporter, pgbackrest_exporter), on this machine, in the same run.
#
#   bash scripts/bench-snap.sh --doc docs/benchmarks.md   # builds the snap; rewrites the Snap block there
#   bash scripts/bench-snap.sh --snap FILE.snap           # measures an existing .snap; prints the table
#
# Options (the rest go to scripts/bench_snap.py, see its --help: --base-port,
# --pgbackrest-exporter, --start-timeout, --keep-data, ...):
#   --snap FILE        the .snap to measure (default: $PGPILOT_SNAP, else
#                      built with scripts/build-snap.sh)
#   --idle N           idle seconds before reading memory (default 60)
#   --doc FILE         write the table into FILE's "Snap" section
#   --no-install       do not check or install packages
#   --dir DIR          work directory (default: a new /tmp/pgpilot-snap-bench.XXXXXX; kept for its logs)
#
# Our side is the ignored Rust test tests/tests/snap_bench.rs (snap_idle_memory),
# built and run with cargo nextest (cargo test without it) in CARGO_TARGET_DIR
# (default /var/tmp/pgpilot-target): one machine of the snapd fixture with the
# snap's install defaults, which listen on 127.0.0.1 ports 5432, 8008, 2379 and
# 2380 (they must be free). The other side, Patroni with its own etcd and
# PostgreSQL 15 and the exporters, listens on 127.0.0.1 ports 7600.. (--base-port).
#
# Needs root. Installs, if missing: scripts/setup-lib.sh's packages, patroni,
# python3-psycopg2, python3-etcd, prometheus-postgres-exporter; Debian's own
# patroni, etcd, postgres_exporter and PostgreSQL services are kept stopped
# and disabled. Everything the benchmark starts is stopped by pid when it
# ends, also on Ctrl-C or error.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command_line="bash scripts/bench-snap.sh${*:+ $*}"

# shellcheck source=scripts/bench-common.sh
. "$repo/scripts/bench-common.sh"

snap="${PGPILOT_SNAP:-}" install=yes dir=""
py_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --snap) snap="$2"; shift ;;
        --snap=*) snap="${1#--snap=}" ;;
        --no-install) install=no ;;
        --dir) dir="$2"; shift ;;
        --dir=*) dir="${1#--dir=}" ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) py_args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-snap.sh: run as root (the snap's hooks, PostgreSQL and Patroni need it)" >&2
    exit 1
fi

# --- packages (idempotent) ------------------------------------------------------
# scripts/setup-lib.sh's list (build, tests, the snap's build), plus the tools
# the current charmed-postgresql snap runs for the same roles.
EXTRA_PACKAGES=(patroni python3-psycopg2 python3-etcd prometheus-postgres-exporter)
if [ "$install" = yes ]; then
    install_missing "${PGPILOT_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}"
    # Debian's services: the benchmark starts its own etcd, PostgreSQL, Patroni and exporter.
    keep_services_stopped patroni etcd prometheus-postgres-exporter
    stop_debian_clusters
fi

load_cargo
command -v cargo >/dev/null 2>&1 || {
    echo "bench-snap.sh: cargo not found (install Rust with rustup, or run scripts/setup.sh)" >&2
    exit 1
}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pgpilot-target}"

# --- the snap ----------------------------------------------------------------------
if [ -z "$snap" ]; then
    say "building the snap: bash scripts/build-snap.sh"
    snap=$(bash "$repo/scripts/build-snap.sh" | tail -n 1)
fi
[ -f "$snap" ] || { echo "bench-snap.sh: $snap is not a file" >&2; exit 1; }
snap=$(readlink -f "$snap")
say "snap $snap: $(awk -v b="$(stat -c %s "$snap")" 'BEGIN { printf "%.1f MiB (%d bytes)", b / 1048576, b }')"

# --- run ---------------------------------------------------------------------------
dir=$(bench_workdir "$dir" pgpilot-snap-bench)

py_pid=""
finish() {
    bench_finish "bench.log, results.json, snap.json, report.md, cargo-*.log, etcd.log, exporter.log, patroni-*/pg1/" \
        /usr/bin/python3 "$repo/scripts/bench_snap.py" --dir "$dir" --cleanup
}
trap finish EXIT
trap 'exit 130' INT TERM

say "work directory $dir"
/usr/bin/python3 "$repo/scripts/bench_snap.py" --dir "$dir" --snap "$snap" \
    --command "$command_line" "${py_args[@]}" &
py_pid=$!
wait "$py_pid"
