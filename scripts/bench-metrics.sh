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

say() { printf '==> %s\n' "$*"; }

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
PACKAGES=(
    postgresql-15 etcd-server etcd-client prometheus-postgres-exporter
    protobuf-compiler build-essential pkg-config ca-certificates
)
if [ "$install" = yes ]; then
    missing=()
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        # Keep maintainer scripts from starting services during the install.
        policy=/usr/sbin/policy-rc.d added_policy=no
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            added_policy=yes
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || {
            [ "$added_policy" = yes ] && rm -f "$policy"
            exit 1
        }
        [ "$added_policy" = yes ] && rm -f "$policy"
    fi
    # Debian's services: the benchmark starts its own etcd, PostgreSQL and exporters.
    for svc in prometheus-postgres-exporter etcd; do
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                say "stopping Debian's $svc service"
                systemctl stop "$svc" || true
            fi
            if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
                say "disabling Debian's $svc service"
                systemctl disable "$svc" >/dev/null 2>&1 || true
            fi
        elif [ -x "/etc/init.d/$svc" ]; then
            if service "$svc" status >/dev/null 2>&1; then
                say "stopping Debian's $svc service"
                service "$svc" stop || true
            fi
            command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
    if command -v pg_lsclusters >/dev/null 2>&1; then
        pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
            if [ -n "${version:-}" ] && [ "${status%%,*}" = online ]; then
                say "stopping Debian's PostgreSQL cluster $version/$cluster"
                pg_ctlcluster "$version" "$cluster" stop || true
            fi
        done
    fi
fi

# --- pgpilot ---------------------------------------------------------------------
if [ -n "${PGPILOT_BIN:-}" ]; then
    pgpilot="$PGPILOT_BIN"
else
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    target_dir="${CARGO_TARGET_DIR:-$repo/target}"
    if [ "$build" = yes ]; then
        command -v cargo >/dev/null 2>&1 || {
            echo "bench-metrics.sh: cargo not found (install Rust with rustup), or set PGPILOT_BIN" >&2
            exit 1
        }
        say "cargo build --release -p pgpilot"
        cargo build --release -p pgpilot
    fi
    pgpilot="$target_dir/release/pgpilot"
fi
[ -x "$pgpilot" ] || { echo "bench-metrics.sh: $pgpilot not found or not executable" >&2; exit 1; }

# --- run ---------------------------------------------------------------------------
if [ -z "$dir" ]; then
    dir=$(mktemp -d /tmp/pgpilot-metrics-bench.XXXXXX)
fi
mkdir -p "$dir"
chmod 755 "$dir"

py_pid=""
finish() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null || true
        for _ in $(seq 1 120); do kill -0 "$py_pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$py_pid" 2>/dev/null && kill -KILL "$py_pid" 2>/dev/null || true
    fi
    # Whatever is still running from this run's pid list (by pid and start time).
    /usr/bin/python3 "$repo/scripts/bench_metrics.py" --dir "$dir" --cleanup || true
    say "logs in $dir (bench.log, results.json, report.md, sidecar.log, exporter-<mode>.log, pg1/postgresql.log)"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

say "work directory $dir"
/usr/bin/python3 "$repo/scripts/bench_metrics.py" --dir "$dir" --pgpilot "$pgpilot" \
    --command "$command_line" "${py_args[@]}" &
py_pid=$!
wait "$py_pid"
