#!/usr/bin/env bash
# Build the charmed-postgresql snap on Debian 12, without snapcraft or snapd:
# the tree snapcraft.yaml describes, from Debian's packages, packed with
# `snap pack` (Debian's snapd package: its client validates meta/snap.yaml
# and writes the squashfs without the daemon).
#
#   bash scripts/build-snap.sh [--pgpilot-bin PATH] [--out DIR]
#   bash scripts/build-snap.sh --download-only   # only fetch the debs into the cache
#
# 1. pgpilot: `cargo build --release -p pgpilot` (CARGO_TARGET_DIR, default
#    /var/tmp/pgpilot-target), or the binary given with --pgpilot-bin;
# 2. the debs of snapcraft.yaml's postgresql and setpriv parts, Debian 12
#    flavoured (scripts/snap-debs.sh: PostgreSQL 15, the dependencies core24
#    lacks, util-linux's setpriv alone),
#    fetched with `apt-get download` into /var/cache/pgpilot-snap-debs
#    (PGPILOT_SNAP_DEB_CACHE) and unpacked with `dpkg-deb -x` into the prime
#    directory, as snapcraft's stage-packages does;
# 3. bin/pgpilot, snap/local/* into bin/, snap/hooks/* into meta/hooks/,
#    meta/snap.yaml from snapcraft.yaml (scripts/snap-yaml.py) and its check;
# 4. checks: every program resolves its libraries inside the snap or from the
#    core24 list (ldd), PostgreSQL finds its files when relocated (initdb as
#    nobody into a temporary directory);
# 5. `snap pack` (Debian's snapd predates the _daemon_ user: see below), then
#    scripts/check-snap.sh on the .snap (docs/snap.md's paths, modes,
#    meta/snap.yaml against snapcraft.yaml).
#
# Version: <PostgreSQL of the deb>+pgpilot<workspace version>, e.g.
# 15.20+pgpilot0.1.0. Output: DIR/charmed-postgresql_<version>_amd64.snap
# (DIR default /var/tmp/pgpilot-snap; the tree is DIR/prime). Progress goes
# to stderr; stdout ends with the .snap's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/setup-lib.sh
. "$here/setup-lib.sh"
# shellcheck source=scripts/snap-debs.sh
. "$here/snap-debs.sh"

exec 3>&1 1>&2 # fd 3: the result lines; everything else to stderr
fail() {
    printf 'build-snap.sh: %s\n' "$*" >&2
    exit 1
}
step() { printf '==> %s\n' "$*" >&2; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

pgpilot_bin=""
download_only=no
out=/var/tmp/pgpilot-snap
while [ "$#" -gt 0 ]; do
    case $1 in
    --pgpilot-bin) [ "$#" -ge 2 ] || usage; pgpilot_bin=$2; shift 2 ;;
    --out) [ "$#" -ge 2 ] || usage; out=$2; shift 2 ;;
    --download-only) download_only=yes; shift ;;
    -h | --help) usage 0 ;;
    *) echo "build-snap.sh: unknown argument '$1'" >&2; usage ;;
    esac
done

started=$(date +%s)
out=$(realpath -m "$out")
arch=$(dpkg --print-architecture)
case $arch in
amd64) triplet=x86_64-linux-gnu ;;
arm64) triplet=aarch64-linux-gnu ;;
*) fail "architecture $arch: the snap is built for amd64 and arm64 only" ;;
esac
deb_cache=${PGPILOT_SNAP_DEB_CACHE:-/var/cache/pgpilot-snap-debs}
prime="$out/prime"
snap_name=$(sed -n 's/^name: *\([a-z0-9-]*\).*/\1/p' "$repo/snapcraft.yaml")
[ -n "$snap_name" ] || fail "no name: in $repo/snapcraft.yaml"

# --- tools ----------------------------------------------------------------------
# snap pack, unsquashfs, PyYAML for snap-yaml.py, readelf for the library check
install_missing snapd squashfs-tools python3-yaml binutils || fail "installing the packaging tools failed"
for tool in snap unsquashfs dpkg-deb apt-get apt-cache ldd readelf setpriv python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found after installing the packaging tools"
done

# --- 1. pgpilot -------------------------------------------------------------------
if [ "$download_only" = yes ]; then
    step "pgpilot: not built (--download-only)"
elif [ -n "$pgpilot_bin" ]; then
    [ -x "$pgpilot_bin" ] || fail "--pgpilot-bin $pgpilot_bin: not an executable file"
    step "pgpilot: using $pgpilot_bin (not building)"
else
    load_cargo
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: run scripts/setup.sh (it explains how to install Rust)"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/pgpilot-target}
    step "pgpilot: cargo build --release -p pgpilot (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$repo" && cargo build --release -p pgpilot) || fail "cargo build --release -p pgpilot failed"
    pgpilot_bin="$CARGO_TARGET_DIR/release/pgpilot"
    [ -x "$pgpilot_bin" ] || fail "cargo build succeeded but $pgpilot_bin is missing"
fi
pgpilot_version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$repo/Cargo.toml")
[ -n "$pgpilot_version" ] || fail "no version in [workspace.package] of $repo/Cargo.toml"

# --- 2. the debs -----------------------------------------------------------------
step "resolving the packages (${SNAP_DEB_ROOTS[*]} and their dependencies)"
snap_deb_resolve || fail "resolving the packages failed"
# snapcraft.yaml's setpriv part, which this script mirrors by hand.
recipe_setpriv=$(python3 -c 'import sys, yaml
part = yaml.safe_load(open(sys.argv[1]))["parts"]["setpriv"]
print(" ".join(part["stage-packages"]), "->", " ".join(part.get("stage", [])))' "$repo/snapcraft.yaml") ||
    fail "cannot read the setpriv part of snapcraft.yaml"
[ "$recipe_setpriv" = "$SNAP_DEB_SETPRIV_PKG -> ${SNAP_DEB_SETPRIV_FILES[*]}" ] ||
    fail "snapcraft.yaml's setpriv part ($recipe_setpriv) differs from scripts/snap-debs.sh's SNAP_DEB_SETPRIV_*: update both"
all_debs=("${SNAP_DEBS[@]}" "$SNAP_DEB_SETPRIV_PKG")
mkdir -p "$deb_cache"
# apt-get download runs as _apt when it can write the directory.
if id _apt >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then chown _apt "$deb_cache" 2>/dev/null || true; fi

# deb_uris: "'URL' file size SHA256:hash" lines for the candidate versions of
# all_debs (apt-get download --print-uris omits files already in the current
# directory: ask from an empty one).
deb_uris() {
    local empty status=0
    empty=$(mktemp -d)
    (cd "$empty" && apt-get download --print-uris "${all_debs[@]}") || status=$?
    rmdir "$empty"
    return "$status"
}
uris=$(deb_uris) || uris=""
if [ "$(printf '%s\n' "$uris" | grep -c .)" -ne "${#all_debs[@]}" ]; then
    step "apt's package lists do not know every package: apt-get update"
    as_root apt-get update || fail "apt-get update failed"
    uris=$(deb_uris) || fail "apt-get download --print-uris ${all_debs[*]} failed"
fi
files=$(printf '%s\n' "$uris" | awk '{print $2}')
missing_debs=()
while read -r _url file _size hash; do
    pkg=${file%%_*}
    if [ -f "$deb_cache/$file" ] &&
        [ "$(sha256sum "$deb_cache/$file" | cut -d' ' -f1)" = "${hash#SHA256:}" ]; then
        continue
    fi
    rm -f "$deb_cache/$file"
    missing_debs+=("$pkg")
done <<<"$uris"
if [ "${#missing_debs[@]}" -gt 0 ]; then
    step "downloading ${missing_debs[*]} into $deb_cache"
    (cd "$deb_cache" && apt-get download "${missing_debs[@]}") ||
        fail "apt-get download ${missing_debs[*]} failed (network? apt sources?)"
fi
while read -r _url file _size _hash; do
    [ -s "$deb_cache/$file" ] || fail "$deb_cache/$file missing after apt-get download"
done <<<"$uris"
if [ "$download_only" = yes ]; then
    step "the ${#all_debs[@]} packages are in $deb_cache"
    echo "$deb_cache" >&3
    exit 0
fi

pg_deb=$(printf '%s\n' "$files" | grep -m1 "^${SNAP_DEB_POSTGRESQL}_") || fail "no $SNAP_DEB_POSTGRESQL .deb"
pg_deb_version=$(dpkg-deb -f "$deb_cache/$pg_deb" Version)
pg_version=${pg_deb_version#*:}
pg_version=${pg_version%%-*}
pg_major=${pg_version%%.*}
version="${pg_version}+pgpilot${pgpilot_version}"
[ "${#version}" -le 32 ] || fail "version $version is longer than snapd's 32 characters"
step "version $version ($SNAP_DEB_POSTGRESQL $pg_deb_version, pgpilot $pgpilot_version)"

step "unpacking ${#SNAP_DEBS[@]} packages into $prime, and ${SNAP_DEB_SETPRIV_FILES[*]} of $SNAP_DEB_SETPRIV_PKG"
rm -rf "$prime"
mkdir -p "$prime"
setpriv_deb=""
while IFS= read -r file; do
    case $file in "${SNAP_DEB_SETPRIV_PKG}_"*) setpriv_deb=$file && continue ;; esac
    dpkg-deb -x "$deb_cache/$file" "$prime" || fail "dpkg-deb -x $file failed"
done <<<"$files"
[ -n "$setpriv_deb" ] || fail "no $SNAP_DEB_SETPRIV_PKG .deb among the downloads"
unpacked=$(mktemp -d)
dpkg-deb -x "$deb_cache/$setpriv_deb" "$unpacked" || fail "dpkg-deb -x $setpriv_deb failed"
(cd "$unpacked" && cp -a --parents "${SNAP_DEB_SETPRIV_FILES[@]}" "$prime/") ||
    fail "$setpriv_deb has no ${SNAP_DEB_SETPRIV_FILES[*]}"
rm -rf "$unpacked"
# Debian's packages hold absolute symbolic links (/usr/lib/...) that would
# point out of the snap: make those whose target the snap has relative.
relinked=0
while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    case $target in /*) ;; *) continue ;; esac
    if [ -e "$prime$target" ] || [ -L "$prime$target" ]; then
        ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$prime$target")" "$link"
        relinked=$((relinked + 1))
    else
        step "  note: ${link#"$prime"/} -> $target points out of the snap"
    fi
done < <(find "$prime" -type l -print0)
[ "$relinked" -eq 0 ] || step "  $relinked absolute symbolic links made relative"
setuid=$(find "$prime" -type f -perm /6000 -printf '%P ')
[ -z "$setuid" ] || fail "setuid/setgid files in the snap (the store refuses them): $setuid"

# --- 3. pgpilot, wrappers, hooks, snap.yaml ----------------------------------------
step "adding bin/pgpilot, snap/local/* as bin/, snap/hooks/* as meta/hooks/"
install -d -m 0755 "$prime/bin" "$prime/meta/hooks"
install -m 0755 "$pgpilot_bin" "$prime/bin/pgpilot"
for f in "$repo"/snap/local/* "$repo"/snap/hooks/*; do
    [ -f "$f" ] || fail "$f: not a file"
    sh -n "$f" || fail "$f: shell syntax error"
done
install -m 0755 "$repo"/snap/local/* "$prime/bin/"
install -m 0755 "$repo"/snap/hooks/* "$prime/meta/hooks/"
python3 "$here/snap-yaml.py" --snapcraft-yaml "$repo/snapcraft.yaml" --version "$version" \
    --arch "$arch" -o "$prime/meta/snap.yaml" || fail "scripts/snap-yaml.py could not write meta/snap.yaml"
python3 "$here/snap-yaml.py" --snapcraft-yaml "$repo/snapcraft.yaml" --check "$prime" >&2 ||
    fail "meta/snap.yaml or the tree does not match snapcraft.yaml (above)"

# --- 4. libraries and relocation ---------------------------------------------------
step "checking that every program finds its libraries in the snap or the core24 base"
snap_ld_path="$prime/usr/lib/$triplet:$prime/lib/$triplet"
pg_bin="$prime/usr/lib/postgresql/$pg_major/bin"
programs=("$pg_bin/postgres" "$pg_bin/psql" "$pg_bin/initdb" "$pg_bin/pg_ctl"
    "$pg_bin/pg_basebackup" "$pg_bin/pg_rewind" "$pg_bin/pg_controldata"
    "$prime/usr/sbin/pgbouncer" "$prime/usr/bin/etcd" "$prime/usr/bin/etcdctl"
    "$prime/usr/bin/setpriv" "$prime/bin/pgpilot")
while IFS= read -r -d '' so; do programs+=("$so"); done \
    < <(find "$prime/usr/lib/postgresql/$pg_major/lib" -name '*.so' -type f -print0)
declare -A owner_of=()
# base_package LIB_PATH: sets owner to the Debian package that owns a host
# library ("" if none); /lib and /usr/lib are the same directory (usrmerge)
# but dpkg knows each file under one of them.
base_package() {
    local path=$1 alt
    if [ -n "${owner_of[$path]+set}" ]; then owner=${owner_of[$path]}; return; fi
    owner=""
    for alt in "$path" "${path#/usr}" "/usr$path" "$(realpath -m "$path")"; do
        owner=$(dpkg -S "$alt" 2>/dev/null | head -n1 | cut -d: -f1) && [ -n "$owner" ] && break
    done
    owner_of[$path]=$owner
}
# check_libraries PROG: walk PROG's DT_NEEDED tree as ldd resolves it with
# the snap's LD_LIBRARY_PATH. A library inside the snap is followed; one
# outside must belong to a SNAP_DEB_IN_BASE package, and what that library
# needs in turn is the base's business (core24's libidn2 needs its own
# libunistring5, not this host's libunistring2).
check_libraries() {
    local prog=$1 rel=${1#"$prime"/} deps line name path file need
    local -A where=() visited=()
    if ! deps=$(LD_LIBRARY_PATH=$snap_ld_path ldd "$prog" 2>&1); then
        case $deps in *"not a dynamic executable"*) return 0 ;; esac
        lib_problems+=("$rel: ldd failed: $deps")
        return 0
    fi
    while IFS= read -r line; do
        line=${line#"${line%%[! $'\t']*}"} # leading blanks
        case $line in
        *" => not found"*) where[${line%% *}]="" ;;
        *" => /"*) path=${line#*=> } && where[${line%% *}]=${path%% (*} ;;
        /*) path=${line%% (*} && where[${path##*/}]=$path ;;
        esac
    done <<<"$deps"
    local -a queue=("$prog")
    while [ "${#queue[@]}" -gt 0 ]; do
        file=${queue[0]}
        queue=("${queue[@]:1}")
        for need in $(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            path=${where[$need]-}
            if [ -z "$path" ]; then
                lib_problems+=("$rel: $need (needed by ${file#"$prime"/}) not found")
            elif [ "${path#"$prime"/}" != "$path" ]; then
                [ -n "${visited[$path]:-}" ] || { visited[$path]=1; queue+=("$path"); }
            else
                base_package "$path"
                snap_deb_listed "$owner" "${SNAP_DEB_IN_BASE[@]}" ||
                    lib_problems+=("$rel: $need (needed by ${file#"$prime"/}) is $path on this host (${owner:-no package}): neither in the snap nor in core24")
            fi
        done
    done
}
lib_problems=()
for prog in "${programs[@]}"; do
    if [ -f "$prog" ]; then check_libraries "$prog"; else lib_problems+=("${prog#"$prime"/}: missing from the snap"); fi
done
if [ "${#lib_problems[@]}" -gt 0 ]; then
    printf '  %s\n' "${lib_problems[@]}" >&2
    fail "${#lib_problems[@]} library problem(s): add the package to the snap (scripts/snap-debs.sh) or, if core24 has it, to SNAP_DEB_IN_BASE"
fi
step "  ${#programs[@]} programs and PostgreSQL modules resolve inside the snap or to core24's libraries"

step "running each program's --version from the snap"
for cmd in "$pg_bin/postgres --version" "$pg_bin/psql --version" "$prime/usr/sbin/pgbouncer --version" \
    "$prime/usr/bin/etcd --version" "$prime/usr/bin/etcdctl version" \
    "$prime/usr/bin/setpriv --version" "$prime/bin/pgpilot version"; do
    # shellcheck disable=SC2086 # "program argument", split on purpose
    v=$(LD_LIBRARY_PATH=$snap_ld_path $cmd 2>&1) || fail "${cmd#"$prime"/} failed: $v"
    step "  ${cmd#"$prime"/}: $(printf '%s\n' "$v" | head -n1)"
done

step "checking that the relocated PostgreSQL finds its files (initdb as nobody)"
setpriv --reuid=nobody --regid=nogroup --clear-groups -- test -x "$pg_bin/initdb" ||
    fail "user nobody cannot run $pg_bin/initdb: give an --out directory every user can read"
scratch=$(mktemp -d /tmp/pgpilot-snap-initdb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
chown nobody "$scratch"
as_nobody() { LD_LIBRARY_PATH=$snap_ld_path setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
# initdb runs the postgres next to it; both find share/ and lib/ relative to
# their own path. This host's own /usr/share/postgresql/15 would hide a
# failure, hence the share_path check.
show=$(as_nobody "$pg_bin/initdb" --show -D "$scratch/data" 2>&1) || fail "initdb --show failed: $show"
share=$(printf '%s\n' "$show" | sed -n 's/^share_path=//p')
[ "$(realpath -m "$share")" = "$(realpath -m "$prime/usr/share/postgresql/$pg_major")" ] ||
    fail "the snap's initdb uses share_path=$share, not the snap's usr/share/postgresql/$pg_major"
if ! as_nobody "$pg_bin/initdb" -D "$scratch/data" -U postgres --auth=trust --locale=C.UTF-8 \
    --encoding=UTF8 --data-checksums --no-sync >"$scratch/initdb.log" 2>&1; then
    cat "$scratch/initdb.log" >&2
    fail "initdb from the snap failed as nobody (above)"
fi
[ -f "$scratch/data/PG_VERSION" ] || fail "initdb from the snap left no PG_VERSION"
rm -rf "$scratch"
trap - EXIT
step "  initdb from the snap works (share_path=${share#"$prime"/}, C.UTF-8, as nobody)"

# --- 5. pack ---------------------------------------------------------------------
snap_file="$out/${snap_name}_${version}_${arch}.snap"
rm -f "$snap_file"
step "snap pack $prime $out"
if skeleton=$(snap pack --check-skeleton "$prime" 2>&1); then
    snap pack "$prime" "$out" >&2 || fail "snap pack refused the tree (above)"
elif grep -q 'invalid system username "_daemon_"' <<<"$skeleton"; then
    # Debian 12's snapd (2.57.6) predates _daemon_ (snapd 2.61), the user
    # docs/snap.md requires. Let this snap pack validate the whole tree with
    # snap_daemon in its place (the only difference), and have the mksquashfs
    # it runs put the real snap.yaml back before packing: the .snap is snap
    # pack's own (same mksquashfs options, file name), with _daemon_.
    step "  this snapd ($(snap version | awk '$1 == "snap" {print $2}')) does not know _daemon_: validating with snap_daemon in its place"
    shim=$(mktemp -d)
    trap 'cp "$shim/snap.yaml" "$prime/meta/snap.yaml"; rm -rf "$shim"' EXIT
    cp "$prime/meta/snap.yaml" "$shim/snap.yaml"
    real_mksquashfs=$(command -v mksquashfs) || fail "mksquashfs not found (squashfs-tools)"
    # shellcheck disable=SC2016 # the shim's own $1 and $@, not this script's
    printf '#!/bin/sh\n# $1 is the tree snap pack packs\ncp "%s" "$1/meta/snap.yaml" || exit 1\nexec "%s" "$@"\n' \
        "$shim/snap.yaml" "$real_mksquashfs" >"$shim/mksquashfs"
    chmod 0755 "$shim/mksquashfs"
    sed -i 's/^  _daemon_: shared$/  snap_daemon: shared/' "$prime/meta/snap.yaml"
    PATH="$shim:$PATH" snap pack "$prime" "$out" >&2 || fail "snap pack refused the tree (above)"
    cp "$shim/snap.yaml" "$prime/meta/snap.yaml"
    rm -rf "$shim"
    trap - EXIT
else
    printf '%s\n' "$skeleton" >&2
    fail "snap pack --check-skeleton refused the tree (above)"
fi
[ -f "$snap_file" ] || fail "snap pack did not write $snap_file"
unsquashfs -cat "$snap_file" meta/snap.yaml | cmp -s - "$prime/meta/snap.yaml" ||
    fail "$snap_file: meta/snap.yaml is not the one scripts/snap-yaml.py wrote"
bash "$here/check-snap.sh" "$snap_file" || fail "$snap_file fails scripts/check-snap.sh (above)"

size=$(stat -c %s "$snap_file")
elapsed=$(($(date +%s) - started))
step "packages in the snap (${#SNAP_DEBS[@]}): ${SNAP_DEBS[*]}; and ${SNAP_DEB_SETPRIV_FILES[*]} of $SNAP_DEB_SETPRIV_PKG"
step "left out (${#SNAP_DEBS_LEFT_OUT[@]}): $(printf '%s; ' "${SNAP_DEBS_LEFT_OUT[@]}")"
step "built in ${elapsed}s"
printf 'snap: %s\nsize: %s MiB\nversion: %s\n' "$snap_file" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" "$version" >&3
printf '%s\n' "$snap_file" >&3
