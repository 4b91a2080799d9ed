#!/usr/bin/env bash
# Prepare a Debian 12 machine to build, test and demo pgpilot. Idempotent.
#
# - installs PostgreSQL 15, etcd, protoc, a C toolchain and Prometheus (its
#   server and promtool, for the metrics tests) with apt (as root, or via sudo);
# - keeps Debian's own PostgreSQL cluster and etcd service stopped and off
#   (pgpilot's tests and demo start their own, on their own ports);
# - checks that cargo exists and installs cargo-nextest if it is missing.
set -euo pipefail

PACKAGES=(
    postgresql-15 postgresql-contrib
    etcd-server etcd-client
    protobuf-compiler build-essential pkg-config
    curl ca-certificates
    prometheus
)

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "setup.sh: run as root, or install sudo: installing packages needs root" >&2
    exit 1
fi
as_root() { "${SUDO[@]}" "$@"; }

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: apt-get not found; this script supports Debian 12 (bookworm)" >&2
    exit 1
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [ "${ID:-}" != "debian" ] || [ "${VERSION_ID:-}" != "12" ]; then
        say "warning: made for Debian 12, this is ${PRETTY_NAME:-unknown}; trying anyway"
    fi
fi

# --- packages -----------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting services during the
    # install (the standard Debian policy-rc.d hook); leave an existing hook alone.
    policy=/usr/sbin/policy-rc.d
    added_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=yes
    fi
    cleanup() { if [ "$added_policy" = yes ]; then as_root rm -f "$policy"; fi; }
    trap cleanup EXIT
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    cleanup
    trap - EXIT
else
    say "packages present: ${PACKAGES[*]}"
fi

# --- keep Debian's own services stopped -----------------------------------------
systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# PostgreSQL: Debian creates the cluster 15/main and starts it. Stop it and
# make it manual-start only (pg_ctlcluster 15 main start still works by hand).
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
        [ -n "${version:-}" ] || continue
        if [ "$status" = online ] || [ "${status#online}" != "$status" ]; then
            say "stopping Debian's PostgreSQL cluster $version/$cluster"
            as_root pg_ctlcluster "$version" "$cluster" stop || true
        fi
        start_conf="/etc/postgresql/$version/$cluster/start.conf"
        if [ -f "$start_conf" ] && ! grep -qx 'manual' "$start_conf"; then
            say "setting $start_conf to manual (no start at boot)"
            as_root sed -i 's/^\(auto\|disabled\)$/manual/' "$start_conf"
        fi
    done
fi

# etcd: Debian's etcd-server runs a system etcd on 2379.
if dpkg-query -W -f='${Status}' etcd-server 2>/dev/null | grep -q 'install ok installed'; then
    if systemd_running; then
        if systemctl is-active --quiet etcd 2>/dev/null; then
            say "stopping Debian's etcd service"
            as_root systemctl stop etcd || true
        fi
        if systemctl is-enabled --quiet etcd 2>/dev/null; then
            as_root systemctl disable etcd >/dev/null 2>&1 || true
        fi
    elif [ -x /etc/init.d/etcd ]; then
        if as_root service etcd status >/dev/null 2>&1; then
            say "stopping Debian's etcd service"
            as_root service etcd stop || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d etcd disable >/dev/null 2>&1 || true
        fi
    fi
fi

# Prometheus: the metrics tests start their own server; Debian's service stays off.
if dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q 'install ok installed' && systemd_running; then
    if systemctl is-active --quiet prometheus 2>/dev/null; then
        say "stopping Debian's prometheus service"
        as_root systemctl stop prometheus || true
    fi
    as_root systemctl disable prometheus >/dev/null 2>&1 || true
fi

# --- Rust ----------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'MSG'
setup.sh: cargo not found. Install Rust with rustup, then run this script again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
MSG
    exit 1
fi
say "$(cargo --version)"

if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            say "adding rustup component $component"
            rustup component add "$component"
        fi
    done
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi
say "$(cargo nextest --version 2>/dev/null | head -n 1)"
say "setup done"

# --- moto: the S3-compatible server of the backup tests (tests/tests/archive.rs) ---
# Added with the WAL-archiving work. moto goes into its own virtualenv, because
# Debian's python3 refuses system-wide pip installs (PEP 668). The tests look for
# /opt/pgpilot-moto/bin/moto_server (or $PGPILOT_MOTO_SERVER). moto 5.2.5 or later
# is needed: older 5.x releases answer CompleteMultipartUpload with a body the AWS
# SDK rejects.
MOTO_VENV=/opt/pgpilot-moto
MOTO_SPEC='moto[server]>=5.2.5,<6'
if ! "$MOTO_VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
    if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed'; then
        say "installing python3-venv"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
    fi
    say "installing $MOTO_SPEC into $MOTO_VENV"
    as_root python3 -m venv "$MOTO_VENV"
    as_root "$MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC"
fi
say "moto $("$MOTO_VENV/bin/python" -c 'import moto; print(moto.__version__)')"
