#!/usr/bin/env bash
# Prepare a Debian 12 machine to build, test and demo pgpilot. Idempotent.
#
# - installs the packages of scripts/setup-lib.sh's one list (PostgreSQL 15,
#   etcd, protoc and the .proto files it imports, a C toolchain, openssl,
#   Prometheus, Python's venv) with apt, as root or through sudo;
# - keeps Debian's own PostgreSQL cluster, etcd and Prometheus services
#   stopped and off (the tests and the demo start their own);
# - checks the Rust toolchain against `rust-version` in Cargo.toml and adds
#   rustfmt and clippy when they are missing; installs cargo-nextest;
# - installs moto, the S3 server of the backup tests, at the versions pinned
#   in scripts/moto-requirements.txt, into /opt/pgpilot-moto, and PyPI's
#   charmcraft, which scripts/check-charm.sh runs, at the versions pinned in
#   scripts/charmcraft-requirements.txt, into /var/tmp/charmcraft-venv.
#
# It ends with "setup done" only when every step above succeeded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/setup-lib.sh
. "$here/setup-lib.sh"

fail() {
    printf 'setup.sh: %s\n' "$*" >&2
    exit 1
}

if ! command -v apt-get >/dev/null 2>&1; then
    fail "apt-get not found; this script supports Debian 12 (bookworm)"
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [ "${ID:-}" != "debian" ] || [ "${VERSION_ID:-}" != "12" ]; then
        say "warning: made for Debian 12, this is ${PRETTY_NAME:-unknown}; trying anyway"
    fi
fi

# --- packages -----------------------------------------------------------------
install_missing "${PGPILOT_PACKAGES[@]}" || fail "installing packages failed"
say "packages present: ${PGPILOT_PACKAGES[*]}"

# --- keep Debian's own services stopped -----------------------------------------
stop_debian_clusters
keep_services_stopped etcd prometheus

# --- Rust ----------------------------------------------------------------------
load_cargo
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'MSG'
setup.sh: cargo not found. Install Rust with rustup, then run this script again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"
MSG
    exit 1
fi

# The oldest Rust the workspace builds with: Cargo.toml's rust-version.
needed=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml" | head -n 1)
[ -n "$needed" ] || fail "no rust-version in $repo/Cargo.toml"
have=$(rustc --version 2>/dev/null | awk '{print $2}')
[ -n "$have" ] || fail "cargo is on PATH ($(command -v cargo)) but rustc is not; reinstall Rust with rustup"
version_at_least() {
    # version_at_least HAVE NEED: HAVE >= NEED, comparing major.minor.patch numerically.
    local IFS=.
    local -a h=($1) n=($2)
    local i
    for i in 0 1 2; do
        local a=${h[$i]:-0} b=${n[$i]:-0}
        a=${a%%[!0-9]*} b=${b%%[!0-9]*}
        if ((10#${a:-0} > 10#${b:-0})); then return 0; fi
        if ((10#${a:-0} < 10#${b:-0})); then return 1; fi
    done
    return 0
}
if ! version_at_least "$have" "$needed"; then
    if command -v rustup >/dev/null 2>&1; then
        fix="run: rustup update stable && rustup default stable"
    else
        fix="this rustc ($(command -v rustc)) is not rustup's; Debian's rustc/cargo packages are too old: remove them (apt-get remove rustc cargo) and install Rust with rustup (https://rustup.rs)"
    fi
    fail "rustc $have is older than $needed, the rust-version in Cargo.toml; $fix"
fi
say "rustc $have (needs $needed or newer)"

for component in rustfmt clippy; do
    case $component in
        rustfmt) probe=(cargo fmt --version) ;;
        clippy) probe=(cargo clippy --version) ;;
    esac
    if ! "${probe[@]}" >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            say "adding rustup component $component"
            rustup component add "$component" || fail "rustup component add $component failed"
        else
            fail "cargo ${component/rustfmt/fmt} is missing and there is no rustup to add it; install Rust with rustup (https://rustup.rs)"
        fi
    fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (a few minutes: it is compiled from crates.io)"
    cargo install cargo-nextest --locked || fail "cargo install cargo-nextest failed"
fi
say "$(cargo nextest --version 2>/dev/null | head -n 1)"

# --- pinned virtualenvs (scripts/setup-lib.sh's pinned_venv) -----------------
# Each in its own virtualenv, since Debian's python3 refuses system-wide pip
# installs (PEP 668), with every package pinned in scripts/*-requirements.txt,
# so a new release on PyPI cannot change what the tests run against.

# moto: the S3-compatible server of the backup tests (tests/src/backup/moto.rs).
# moto 5.2.5 or later is needed: older 5.x releases answer
# CompleteMultipartUpload with a body the AWS SDK rejects.
MOTO_VENV=/opt/pgpilot-moto
MOTO_MIN=5.2.5
MOTO_REQUIREMENTS="$here/moto-requirements.txt"
moto_version() {
    "$MOTO_VENV/bin/python" -c 'import moto.server, moto; print(moto.__version__)'
}
moto_pin=$(sed -n 's/^moto==\([0-9.]*\)$/\1/p' "$MOTO_REQUIREMENTS")
[ -n "$moto_pin" ] || fail "$MOTO_REQUIREMENTS does not pin moto (moto==X.Y.Z)"
version_at_least "$moto_pin" "$MOTO_MIN" || fail "$MOTO_REQUIREMENTS pins moto $moto_pin, older than $MOTO_MIN"
pinned_venv "$MOTO_VENV" "$MOTO_REQUIREMENTS" moto moto_version || fail "installing moto into $MOTO_VENV failed"

# charmcraft: scripts/check-charm.sh checks charm/charmcraft.yaml and the
# built .charm with it (scripts/build-charm.sh runs it on every build).
CHARMCRAFT_VENV=/var/tmp/charmcraft-venv
charmcraft_version() {
    # `charmcraft version` prints "charmcraft X.Y.Z"; it wants a private
    # XDG_RUNTIME_DIR, else it warns.
    local run out status=0
    run=$(mktemp -d) || return 1
    out=$(XDG_RUNTIME_DIR=$run "$CHARMCRAFT_VENV/bin/charmcraft" version) || status=$?
    rm -rf "$run"
    [ "$status" -eq 0 ] && printf '%s\n' "${out#charmcraft }"
}
pinned_venv "$CHARMCRAFT_VENV" "$here/charmcraft-requirements.txt" charmcraft charmcraft_version ||
    fail "installing charmcraft into $CHARMCRAFT_VENV failed"

say "setup done"
