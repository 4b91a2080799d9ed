# The one list of Debian packages pgpilot's build, tests and demo need, and
# the helpers that install them and keep Debian's own services out of the way.
# Sourced (not run) by scripts/setup.sh and, through scripts/bench-common.sh,
# by the benchmark scripts. Callers set -euo pipefail.

# Everything `cargo build`, `scripts/test.sh` and `scripts/demo.sh` need on a
# new Debian 12 machine, installed with --no-install-recommends: a package that
# something only recommends must be named here. Why each one is here:
PGPILOT_PACKAGES=(
    postgresql-15 postgresql-contrib # the server the sidecar drives (tests, demo)
    etcd-server etcd-client          # the cluster store (tests, demo); etcdctl in tests
    protobuf-compiler                # protoc: etcd-client's build script compiles etcd's .proto files
    libprotobuf-dev                  # google/protobuf/*.proto that etcd's .proto files import
    build-essential pkg-config       # cc and linker for -sys crates (ring, zstd)
    ca-certificates curl             # crates.io over TLS; cargo install cargo-nextest
    openssl                          # the TLS tests make certificates with the openssl command
    prometheus                       # prometheus and promtool for the metrics tests
    python3 python3-venv             # virtualenvs of moto (the backup tests' S3 server) and charmcraft
    snapd                            # `snap pack` (the client; no daemon) for scripts/build-snap.sh
    squashfs-tools                   # mksquashfs under `snap pack`; unsquashfs to list a .snap
    python3-yaml                     # scripts/snap-yaml.py: snapcraft.yaml -> meta/snap.yaml
    nftables                         # nft: the fault tests drop a member's etcd packets in the kernel
)

say() { printf '==> %s\n' "$*"; }

# as_root CMD...: run as root, directly or through sudo.
if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    as_root() {
        echo "setup: '$*' needs root: run as root, or install sudo" >&2
        return 1
    }
fi

package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# install_missing PKG...: apt-get install the packages not installed yet,
# without letting their maintainer scripts start services (Debian's
# policy-rc.d hook; an existing hook is left alone).
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        package_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    say "installing ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d added_policy=no status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=yes
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update || status=$?
    if [ "$status" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || status=$?
    fi
    if [ "$added_policy" = yes ]; then
        as_root rm -f "$policy"
    fi
    if [ "$status" -ne 0 ]; then
        echo "setup: apt-get could not install ${missing[*]} (exit $status); see apt's message above" >&2
        return "$status"
    fi
    # Verify rather than trust: a package apt skipped must not pass silently.
    for pkg in "${missing[@]}"; do
        if ! package_installed "$pkg"; then
            echo "setup: $pkg is still not installed after apt-get install" >&2
            return 1
        fi
    done
}

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# keep_services_stopped SVC...: stop Debian's services and keep them from
# starting at boot (systemd or sysvinit): tests, demo and benchmarks start
# their own processes on their own ports.
keep_services_stopped() {
    local svc
    for svc in "$@"; do
        if systemd_running; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                say "stopping Debian's $svc service"
                as_root systemctl stop "$svc" || true
            fi
            if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
                as_root systemctl disable "$svc" >/dev/null 2>&1 || true
            fi
        elif [ -x "/etc/init.d/$svc" ]; then
            if as_root service "$svc" status >/dev/null 2>&1; then
                say "stopping Debian's $svc service"
                as_root service "$svc" stop || true
            fi
            if command -v update-rc.d >/dev/null 2>&1; then
                as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
            fi
        fi
    done
}

# stop_debian_clusters: stop the clusters of Debian's postgresql-common and
# make them manual-start (pg_ctlcluster VERSION NAME start still works by hand).
stop_debian_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local version cluster _port status _rest start_conf
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
        [ -n "${version:-}" ] || continue
        if [ "${status%%,*}" = online ]; then
            say "stopping Debian's PostgreSQL cluster $version/$cluster"
            as_root pg_ctlcluster "$version" "$cluster" stop || true
        fi
        start_conf="/etc/postgresql/$version/$cluster/start.conf"
        if [ -f "$start_conf" ] && ! grep -qx 'manual' "$start_conf"; then
            say "setting $start_conf to manual (no start at boot)"
            as_root sed -i 's/^\(auto\|disabled\)$/manual/' "$start_conf"
        fi
    done
}

# load_cargo: put rustup's cargo on PATH when a login shell has not.
load_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
}

# _pins: the "name==version" lines of a requirements file or of `pip freeze`,
# comments and blank lines dropped, spelled one way (lower case, runs of - _ .
# as one -, as PEP 503 compares names) and sorted, so that the two compare.
_pins() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' | tr '[:upper:]' '[:lower:]' |
        sed 's/[-_.][-_.]*/-/g' | LC_ALL=C sort -u
}

# pinned_venv VENV REQUIREMENTS PACKAGE PROBE: make sure VENV is a virtualenv
# holding every package of REQUIREMENTS at its pin, PACKAGE among them.
# REQUIREMENTS pins every package of the venv (a `pip freeze` of a venv made
# to update it; `--all` when pip's own version matters), so pip installs
# exactly those with --no-deps and a new release on PyPI cannot change what
# runs. The venv is made with Debian's /usr/bin/python3, not whatever python3
# comes first on PATH, and only when a pin is not installed yet (so a second
# run needs no network). PROBE names a command that prints PACKAGE's version
# as the venv runs it: it must print the pin, and `pip check` must pass. On
# failure it says what failed and how to fix it on stderr and returns 1.
pinned_venv() {
    local venv=$1 requirements=$2 package=$3 probe=$4
    local pinned current missing problems
    [ -r "$requirements" ] || { echo "setup: $requirements is missing" >&2; return 1; }
    pinned=$(sed -n "s/^${package}==\([^[:space:]#]*\).*/\1/p" "$requirements")
    [ -n "$pinned" ] || { echo "setup: $requirements does not pin $package ($package==X.Y.Z)" >&2; return 1; }
    missing=$(LC_ALL=C comm -23 <(_pins <"$requirements") \
        <("$venv/bin/pip" freeze --all --disable-pip-version-check 2>/dev/null | _pins))
    if [ -n "$missing" ]; then
        current=$("$probe" 2>/dev/null || true)
        say "installing $package $pinned (was: ${current:-none}) and its $(grep -c . <<<"$missing") pinned package(s) not installed yet into $venv"
        as_root rm -rf "$venv"
        as_root /usr/bin/python3 -m venv "$venv" ||
            { echo "setup: /usr/bin/python3 -m venv $venv failed (python3-venv is in the package list)" >&2; return 1; }
        as_root "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
            --requirement "$requirements" ||
            { echo "setup: pip install --requirement $requirements into $venv failed; see pip's message above" >&2; return 1; }
        missing=$(LC_ALL=C comm -23 <(_pins <"$requirements") \
            <("$venv/bin/pip" freeze --all --disable-pip-version-check 2>/dev/null | _pins))
        if [ -n "$missing" ]; then
            echo "setup: after pip install, $venv still lacks these pins of $requirements: $(tr '\n' ' ' <<<"$missing")" >&2
            return 1
        fi
    fi
    current=$("$probe" 2>/dev/null || true)
    if [ "$current" != "$pinned" ]; then
        echo "setup: $package in $venv reports '${current:-nothing}', expected $pinned; delete $venv and run scripts/setup.sh again" >&2
        return 1
    fi
    if ! problems=$("$venv/bin/pip" check --disable-pip-version-check 2>&1); then
        printf 'setup: the packages in %s do not fit together (pip check):\n%s\nfix the pins in %s (a pip freeze --all of a working venv), delete %s and run scripts/setup.sh again\n' \
            "$venv" "$problems" "$requirements" "$venv" >&2
        return 1
    fi
    say "$package $current in $venv"
}
