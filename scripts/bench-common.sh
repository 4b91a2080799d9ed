# Shared by scripts/bench-failover.sh and scripts/bench-metrics.sh (sourced,
# not run): the release build, stopping the Python driver by pid, and (from
# scripts/setup-lib.sh) package installs and Debian services kept stopped.
# Callers set -euo pipefail and $repo.

# shellcheck source=scripts/setup-lib.sh
. "$repo/scripts/setup-lib.sh"

# install_bench_packages PKG...: everything scripts/setup.sh installs (the
# build, tests and demo), then the benchmark's own extra packages.
install_bench_packages() {
    bash "$repo/scripts/setup.sh"
    install_missing "$@"
}

# build_release BUILD SCRIPT HINT: when BUILD is yes, cargo build --release -p
# pgpilot (SCRIPT and HINT make the error when cargo is missing); sets
# $pgpilot to the release binary either way.
build_release() {
    local build="$1" script="$2" hint="$3"
    load_cargo
    local target_dir="${CARGO_TARGET_DIR:-$repo/target}"
    if [ "$build" = yes ]; then
        command -v cargo >/dev/null 2>&1 || {
            echo "$script: cargo not found (install Rust with rustup), or $hint" >&2
            exit 1
        }
        say "cargo build --release -p pgpilot"
        cargo build --release -p pgpilot
    fi
    pgpilot="$target_dir/release/pgpilot"
}

# stop_pid PID: SIGTERM, up to 120 s for it to exit, then SIGKILL.
stop_pid() {
    local pid="$1"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
}

# bench_workdir DIR PREFIX: DIR, or a new /tmp/PREFIX.XXXXXX when DIR is
# empty; created with mode 0755 (PostgreSQL's user must enter it).
bench_workdir() {
    local d=$1
    [ -n "$d" ] || d=$(mktemp -d "/tmp/$2.XXXXXX")
    mkdir -p "$d"
    chmod 755 "$d"
    printf '%s\n' "$d"
}

# bench_finish LOGS CLEANUP...: the body of a benchmark's EXIT trap: stop the
# Python driver ($py_pid), run CLEANUP (the driver's --cleanup, which stops
# by pid and start time whatever the run still has running), say where the
# logs are (LOGS describes $dir's files) and exit with the run's status.
bench_finish() {
    local rc=$? logs=$1
    shift
    trap - EXIT INT TERM
    stop_pid "$py_pid"
    "$@" || true
    say "logs in $dir ($logs)"
    exit "$rc"
}
