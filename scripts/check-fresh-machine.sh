#!/usr/bin/env bash
# Prove the README's two commands on a really new Debian 12 system.
#
#   bash scripts/check-fresh-machine.sh              # the committed HEAD
#   bash scripts/check-fresh-machine.sh --ref REF    # another commit; `--ref "$(git stash create)"`
#                                                    # checks uncommitted changes without committing them
#   bash scripts/check-fresh-machine.sh --keep       # keep the root (and its logs) for a post-mortem
#
# What it does, as root, printing each phase's time and stopping at the first
# failure with a line that names it:
#   1. debootstrap: a minimal Debian 12 root (--variant=minbase) from Debian's
#      archive, with the apt sources a new machine has (main, updates, security);
#   2. enter:       /proc, /sys and /dev mounted into it, DNS and /etc/hosts as a
#                   new machine has them, and this network's trust settings (the
#                   egress proxy's CA certificates, /etc/pip.conf); the host's
#                   Rust toolchain (rustup's toolchain directory) bind-mounted
#                   read-only, since the README asks for Rust from rustup first;
#                   nothing else from the host;
#   3. clone:       a fresh `git clone` of this repository at REF inside it;
#   4. demo:        `bash scripts/demo.sh` (installs, builds, `pgpilot demo up`),
#                   then `pgpilot ctl list` must show 3 members, one leader and
#                   two streaming replicas, then `pgpilot demo down --clean`;
#   5. fetch:       `cargo fetch` and `build-snap.sh --download-only` (the last
#                   steps that need the network);
#   6. test:        `bash scripts/test.sh` in a network namespace of its own
#                   (loopback only), so its ports cannot meet the host's.
# On exit, also on failure or Ctrl-C, it stops every process still running in
# the root (by pid), unmounts what it mounted and deletes the root.
#
# Slow (about 40-60 minutes on 2 cores: a cold build twice and the whole
# suite), so not part of CI: run it whenever set-up changes (setup.sh,
# test.sh, demo.sh, .ci/run, Cargo.toml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/setup-lib.sh
. "$here/setup-lib.sh"

ref=HEAD keep=no
mirror=${PGPILOT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 0 ]; do
    case "$1" in
        --ref) ref="$2"; shift ;;
        --ref=*) ref="${1#--ref=}" ;;
        --keep) keep=yes ;;
        --mirror) mirror="$2"; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "check-fresh-machine.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

[ "$(id -u)" -eq 0 ] || { echo "check-fresh-machine.sh: run as root (debootstrap, chroot, mounts)" >&2; exit 2; }
commit=$(git -C "$repo" rev-parse --verify "$ref^{commit}") ||
    { echo "check-fresh-machine.sh: $ref is not a commit of $repo" >&2; exit 2; }

# The host's rustup toolchain: the one `cargo` runs here.
load_cargo
rustc_path=$(rustup which rustc 2>/dev/null || command -v rustc || true)
[ -n "$rustc_path" ] || { echo "check-fresh-machine.sh: no Rust toolchain on this host (install it with rustup)" >&2; exit 2; }
toolchain=$(cd "$(dirname "$rustc_path")/.." && pwd -P)
[ -x "$toolchain/bin/cargo" ] || { echo "check-fresh-machine.sh: $toolchain has no bin/cargo: not a rustup toolchain directory" >&2; exit 2; }

install_missing debootstrap git util-linux iproute2

root=$(mktemp -d /var/tmp/pgpilot-fresh.XXXXXX)
chmod 755 "$root"
log_dir="$root.logs"
mkdir -p "$log_dir"
mounted=()
phase="" phase_start=0 total_start=$(date +%s)
times=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$phase" ] && [ "$status" -ne 0 ]; then
        printf '\n!! FAILED in phase "%s" after %ss (exit %s); its log: %s\n' \
            "$phase" "$(($(date +%s) - phase_start))" "$status" "$log_dir/$phase.log" >&2
        if [ -f "$log_dir/$phase.log" ]; then
            printf '!! the first error lines of that log:\n' >&2
            grep -E '^(error|Error|E:|setup.sh:|FAIL|.*FAILED|!!)' "$log_dir/$phase.log" | head -n 15 | sed 's/^/   /' >&2 || true
            printf '!! its last lines:\n' >&2
            tail -n 15 "$log_dir/$phase.log" | sed 's/^/   /' >&2
        fi
    fi
    # The demo's own logs tell why a member did not become healthy.
    if [ "$status" -ne 0 ] && [ -d "$root/tmp/pgpilot-demo" ]; then
        mkdir -p "$log_dir/pgpilot-demo"
        (cd "$root/tmp/pgpilot-demo" && find . -name '*.log' -exec cp --parents {} "$log_dir/pgpilot-demo/" \;) 2>/dev/null || true
        printf '!! the demo logs are in %s\n' "$log_dir/pgpilot-demo" >&2
    fi
    # Processes still running inside the root were started by this script.
    local pid pids=()
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        if [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$root" ]; then
            pids+=("$pid")
        fi
    done
    if [ "${#pids[@]}" -gt 0 ]; then
        say "stopping ${#pids[@]} process(es) left in the root: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        sleep 3
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 1
    fi
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -R "${mounted[$i]}" 2>/dev/null || umount -lR "${mounted[$i]}" 2>/dev/null || true
    done
    if [ "$keep" = yes ]; then
        say "kept the root $root and the logs $log_dir"
    elif findmnt -rn -o TARGET | grep -q "^$root"; then
        echo "check-fresh-machine.sh: something is still mounted under $root; not deleting it" >&2
    else
        rm -rf "$root"
        if [ "$status" -eq 0 ]; then rm -rf "$log_dir"; else say "logs kept in $log_dir"; fi
    fi
    if [ "${#times[@]}" -gt 0 ]; then
        printf '\nphase times:\n'
        printf '  %s\n' "${times[@]}"
        printf '  total %ss\n' "$(($(date +%s) - total_start))"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

begin() {
    phase=$1
    phase_start=$(date +%s)
    printf '\n==> phase %s: %s\n' "$1" "$2"
}
end() {
    local took=$(($(date +%s) - phase_start))
    times+=("$(printf '%-12s %5ss' "$phase" "$took")")
    say "phase $phase done in ${took}s"
    phase=""
}

# run_logged CMD...: run, keeping the output in the phase's log and on stdout.
run_logged() {
    "$@" 2>&1 | tee -a "$log_dir/$phase.log"
    return "${PIPESTATUS[0]}"
}

# in_root CMD: run a bash command line inside the root, as a new user's
# login would have it: HOME=/root, rustup's toolchain and ~/.cargo/bin on PATH.
guest_path=/root/.cargo/bin:/opt/rust-toolchain/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
        PATH="$guest_path" CI="${CI:-}" /bin/bash -c "$1"
}

# --- 1. debootstrap ------------------------------------------------------------------
begin debootstrap "Debian 12 (bookworm, minbase) from $mirror into $root"
cache=/var/cache/pgpilot-debootstrap
mkdir -p "$cache"
run_logged debootstrap --variant=minbase --cache-dir="$cache" bookworm "$root" "$mirror"
security=${mirror%/debian}/debian-security
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
end

# --- 2. enter --------------------------------------------------------------------------
begin enter "mounts, DNS, the host's Rust toolchain ($toolchain, read-only)"
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount -t sysfs sysfs "$root/sys" && mounted+=("$root/sys")
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" && mounted+=("$root/dev")
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# This network's own trust settings, which any machine on it has: the
# certificate authorities of its TLS egress proxy (picked up when setup.sh
# installs ca-certificates) and pip's pointer to the system store.
mkdir -p "$root/usr/local/share/ca-certificates"
for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] && cp "$crt" "$root/usr/local/share/ca-certificates/"
done
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
mkdir -p "$root/opt/rust-toolchain"
mount --bind "$toolchain" "$root/opt/rust-toolchain" && mounted+=("$root/opt/rust-toolchain")
mount -o remount,bind,ro "$root/opt/rust-toolchain"
run_logged in_root 'cargo --version && rustc --version'
end

# --- 3. clone --------------------------------------------------------------------------
begin clone "git clone of $repo at ${commit:0:12}"
run_logged git clone --quiet --no-checkout "$repo" "$root/root/pgpilot"
run_logged git -C "$root/root/pgpilot" -c advice.detachedHead=false checkout --quiet "$commit"
end

# --- 4. demo ---------------------------------------------------------------------------
begin demo "bash scripts/demo.sh, then 3 healthy members, then demo down"
run_logged in_root 'cd /root/pgpilot && bash scripts/demo.sh'
listing=$(in_root 'cd /root/pgpilot && target/release/pgpilot ctl -c /tmp/pgpilot-demo/pg1/pgpilot.toml list --format json' 2>&1 |
    tee -a "$log_dir/$phase.log")
counts=$(printf '%s' "$listing" | python3 -c '
import json, sys
members = json.load(sys.stdin)
roles = [m.get("Role", "").lower() for m in members]
states = [m.get("State", "").lower() for m in members]
leaders = sum(r == "leader" for r in roles)
streaming = sum(r == "replica" and s == "streaming" for r, s in zip(roles, states))
print(len(members), leaders, streaming)
') || { echo "!! pgpilot ctl list did not print the member table as JSON: $listing" >&2; exit 1; }
read -r n_members n_leaders n_streaming <<<"$counts"
if [ "$n_members" != 3 ] || [ "$n_leaders" != 1 ] || [ "$n_streaming" != 2 ]; then
    echo "!! the demo is not healthy: $n_members member(s), $n_leaders leader(s), $n_streaming streaming replica(s): $listing" >&2
    exit 1
fi
say "3 members: 1 leader, 2 streaming replicas"
run_logged in_root 'cd /root/pgpilot && target/release/pgpilot demo down --dir /tmp/pgpilot-demo --clean'
end

# --- 5. fetch --------------------------------------------------------------------------
begin fetch "cargo fetch and the snap's debs, while the network is there"
run_logged in_root 'cd /root/pgpilot && cargo fetch --locked && bash scripts/build-snap.sh --download-only'
end

# --- 6. test ---------------------------------------------------------------------------
begin test "bash scripts/test.sh in a network namespace with loopback only"
run_logged unshare --net /bin/sh -c 'ip link set lo up && exec "$@"' sh \
    chroot "$root" /usr/bin/env -i HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH="$guest_path" CI="${CI:-}" CARGO_NET_OFFLINE=true \
    /bin/bash -c 'cd /root/pgpilot && bash scripts/test.sh'
end

printf '\n==> the README commands work on a fresh Debian 12 system (commit %s)\n' "${commit:0:12}"
