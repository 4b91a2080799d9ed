# Shared by scripts/bench-failover.sh and scripts/bench-metrics.sh (sourced,
# not run): package install, Debian services kept stopped, the release build,
# stopping the Python driver by pid. Callers set -euo pipefail and $repo.

say() { printf '==> %s\n' "$*"; }

# install_missing PKG...: apt-get install the packages not installed yet,
# without letting maintainer scripts start their services.
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    say "installing ${missing[*]}"
    # Keep maintainer scripts from starting services during the install.
    local policy=/usr/sbin/policy-rc.d added_policy=no
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
}

# keep_services_stopped SVC...: stop and disable Debian's services (systemd or
# sysvinit), since the benchmark starts its own processes.
keep_services_stopped() {
    local svc
    for svc in "$@"; do
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                say "stopping Debian's $svc service"
                systemctl stop "$svc" || true
            fi
        fi
        if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet "$svc" 2>/dev/null; then
            say "disabling Debian's $svc service"
            systemctl disable "$svc" >/dev/null 2>&1 || true
        fi
        if [ ! -d /run/systemd/system ] && [ -x "/etc/init.d/$svc" ]; then
            if service "$svc" status >/dev/null 2>&1; then
                say "stopping Debian's $svc service"
                service "$svc" stop || true
            fi
            command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
}

# stop_debian_clusters: stop the online clusters of Debian's postgresql-common.
stop_debian_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
        if [ -n "${version:-}" ] && [ "${status%%,*}" = online ]; then
            say "stopping Debian's PostgreSQL cluster $version/$cluster"
            pg_ctlcluster "$version" "$cluster" stop || true
        fi
    done
}

# build_release BUILD SCRIPT HINT: when BUILD is yes, cargo build --release -p
# pgpilot (SCRIPT and HINT make the error when cargo is missing); sets
# $pgpilot to the release binary either way.
build_release() {
    local build="$1" script="$2" hint="$3"
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
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
