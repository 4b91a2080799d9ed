#!/usr/bin/env bash
# Metrics benchmark: pgpilot's GET /metrics against Debian's
# prometheus-postgres-exporter on the same PostgreSQL, 50 databases of 20
# tables each. Scrape latency (median, p99, max), bytes and series, backends
# held and sessions opened per scrape, memory of each process.
#
#   bash scripts/bench-metrics.sh                  # about 12 min; prints the tables
#   bash scripts/bench-metrics.sh --doc docs/benchmarks.md   # also rewrites the Metrics block there
#
# Options (the rest go to scripts/bench_metrics.py, see its --help: --scrapes,
# --time-limit, --idle, --databases, --tables, --modes, ...):
#   --doc FILE         write the tables into FILE's "Metrics" section
#   --no-build         use target/release/pgpilot as it is
#   --no-install       do not check or install packages
#   --dir DIR          work directory (default: a new /tmp/pgpilot-metrics-bench.XXXXXX; kept for its logs)
# PGPILOT_BIN=/path/to/pgpilot uses that binary and skips the build.
#
# Needs root (PostgreSQL runs as `postgres`, postgres_exporter as `nobody`).
# Installs, if missing: postgresql-15, etcd-server, etcd-client,
# prometheus-postgres-exporter, and what building pgpilot needs; Debian's own
# postgres_exporter, etcd and PostgreSQL services are kept stopped and
# disabled. Everything it starts (one etcd, one pgpilot member with its
# PostgreSQL, one postgres_exporter per mode) listens on 127.0.0.1 only and
# is stopped by pid when it ends, also on Ctrl-C or error.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command_line="bash scripts/bench-metrics.sh${*:+ $*}"

# shellcheck source=scripts/bench-common.sh
. "$repo/scripts/bench-common.sh"

build=yes install=yes dir=""
py_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=no ;;
        --no-install) install=no ;;
        --dir) dir="$2"; shift ;;
        --dir=*) dir="${1#--dir=}" ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) py_args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-metrics.sh: run as root (PostgreSQL runs as the postgres user)" >&2
    exit 1
fi

# --- packages (idempotent) ------------------------------------------------------
# scripts/setup.sh's list, plus what only this benchmark runs.
EXTRA_PACKAGES=(prometheus-postgres-exporter)
if [ "$install" = yes ]; then
    install_bench_packages "${EXTRA_PACKAGES[@]}"
    # Debian's services: the benchmark starts its own etcd, PostgreSQL and exporters.
    keep_services_stopped prometheus-postgres-exporter etcd
    stop_debian_clusters
fi

# --- pgpilot ---------------------------------------------------------------------
if [ -n "${PGPILOT_BIN:-}" ]; then
    pgpilot="$PGPILOT_BIN"
else
    build_release "$build" bench-metrics.sh "set PGPILOT_BIN"
fi
[ -x "$pgpilot" ] || { echo "bench-metrics.sh: $pgpilot not found or not executable" >&2; exit 1; }

# --- run ---------------------------------------------------------------------------
dir=$(bench_workdir "$dir" pgpilot-metrics-bench)

py_pid=""
finish() {
    bench_finish "bench.log, results.json, report.md, sidecar.log, exporter-<mode>.log, pg1/postgresql.log" \
        /usr/bin/python3 "$repo/scripts/bench_metrics.py" --dir "$dir" --cleanup
}
trap finish EXIT
trap 'exit 130' INT TERM

say "work directory $dir"
/usr/bin/python3 "$repo/scripts/bench_metrics.py" --dir "$dir" --pgpilot "$pgpilot" \
    --command "$command_line" "${py_args[@]}" &
py_pid=$!
wait "$py_pid"
