#!/usr/bin/env bash
# Failover benchmark: pgpilot against Patroni 3 on this machine, side by side.
#
#   bash scripts/bench-failover.sh            # 5 runs per scenario (about 25 min); writes docs/benchmarks.md
#   bash scripts/bench-failover.sh --quick    # 1 run per scenario (smoke test, about 7 min); no doc unless --doc
#   bash scripts/bench-failover.sh --scenarios etcd-cut --runs 3   # the leader cut from etcd (about 15 min);
#                                             # writes only its own block of docs/benchmarks.md
#
# Options (the rest go to scripts/bench_failover.py, see its --help):
#   --quick            1 run per scenario
#   --runs N           N runs per scenario
#   --scenarios A,B    node-death, graceful-stop, switchover, pg-crash (the default: all four) and etcd-cut
#   --settings A,B     patroni-defaults (30/10/10), pgpilot-defaults (10/2/3); default both
#   --doc FILE         write the tables into FILE's "Failover" section (default for full runs: docs/benchmarks.md);
#                      the four scenarios share one block, etcd-cut has its own: each run replaces only its own
#   --no-doc           do not write any document
#   --no-build         use target/release/pgpilot as it is
#   --no-install       do not check or install packages
#   --base-port B      ports B..B+99 on 127.0.0.1 (default 7400)
#   --dir DIR          work directory (default: a new /tmp/pgpilot-bench.XXXXXX; kept for its logs)
#
# Needs root (PostgreSQL and Patroni run as the `postgres` user). Installs, if
# missing: postgresql-15, etcd-server, etcd-client, patroni, python3-psycopg2,
# and what building pgpilot needs; Debian's own patroni, etcd and PostgreSQL
# services are kept stopped and disabled. Everything the benchmark starts (one
# etcd, 3 members at a time) listens on 127.0.0.1 only and is stopped by pid
# when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
command_line="bash scripts/bench-failover.sh${*:+ $*}"

# shellcheck source=scripts/bench-common.sh
. "$repo/scripts/bench-common.sh"

quick=no build=yes install=yes doc=default dir=""
py_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=yes; py_args+=(--quick) ;;
        --no-build) build=no ;;
        --no-install) install=no ;;
        --no-doc) doc=none ;;
        --doc) doc="$2"; shift ;;
        --doc=*) doc="${1#--doc=}" ;;
        --dir) dir="$2"; shift ;;
        --dir=*) dir="${1#--dir=}" ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) py_args+=("$1") ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-failover.sh: run as root (PostgreSQL and Patroni run as the postgres user)" >&2
    exit 1
fi

# --- packages (idempotent) ------------------------------------------------------
# scripts/setup.sh's list, plus what only this benchmark runs.
EXTRA_PACKAGES=(patroni python3-psycopg2 python3-etcd)
if [ "$install" = yes ]; then
    install_bench_packages "${EXTRA_PACKAGES[@]}"
    # Debian's services: the benchmark starts its own etcd and members.
    keep_services_stopped patroni etcd
    stop_debian_clusters
fi

# --- pgpilot ---------------------------------------------------------------------
build_release "$build" bench-failover.sh "pass --no-build"
[ -x "$pgpilot" ] || { echo "bench-failover.sh: $pgpilot not found" >&2; exit 1; }

# --- run ---------------------------------------------------------------------------
dir=$(bench_workdir "$dir" pgpilot-bench)
case "$doc" in
    default) if [ "$quick" = no ]; then py_args+=(--doc "$repo/docs/benchmarks.md"); fi ;;
    none) ;;
    *) py_args+=(--doc "$doc") ;;
esac

py_pid=""
finish() {
    bench_finish "bench.log, results.json, report.md; <tool>-<ttl>-<loop_wait>-<retry_timeout>/: pgN/sidecar.log, writer-<scenario>-<run>.tsv, probes-etcd-cut-<run>.tsv" \
        /usr/bin/python3 "$repo/scripts/bench_failover.py" --dir "$dir" --pgpilot "$pgpilot" --cleanup
}
trap finish EXIT
trap 'exit 130' INT TERM

say "work directory $dir"
/usr/bin/python3 "$repo/scripts/bench_failover.py" --dir "$dir" --pgpilot "$pgpilot" \
    --command "$command_line" "${py_args[@]}" &
py_pid=$!
wait "$py_pid"
