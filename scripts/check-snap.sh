#!/usr/bin/env bash
# Check a built charmed-postgresql .snap against docs/snap.md and snapcraft.yaml:
#   - the paths of docs/snap.md's contents table are in it (unsquashfs -lln),
#     the programs and hooks as regular files mode 0755 owned by 0/0;
#   - exactly one PostgreSQL major under usr/lib/postgresql/;
#   - its meta/snap.yaml matches snapcraft.yaml and every app command,
#     command-chain file and hook exists and is executable
#     (scripts/snap-yaml.py --check on its meta/ and bin/);
#   - the version in meta/snap.yaml is the one in the file name.
#
#   bash scripts/check-snap.sh FILE.snap
#
# scripts/build-snap.sh runs it on what it builds. Exit 0: fine; 1: a check
# failed (each problem on stderr); 2: bad usage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: bash scripts/check-snap.sh FILE.snap" >&2
    exit 2
fi
snap_file=$1
for tool in unsquashfs python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "check-snap.sh: $tool not found (scripts/setup.sh installs it)" >&2; exit 2; }
done

problems=()
listing=$(unsquashfs -lln "$snap_file") || { echo "check-snap.sh: unsquashfs -lln $snap_file failed" >&2; exit 1; }
# "MODE OWNER SIZE DATE TIME squashfs-root/PATH[ -> TARGET]" -> "PATH MODE OWNER"
entries=$(awk '$6 ~ /^squashfs-root\// { sub(/^squashfs-root\//, "", $6); print $6, $1, $2 }' <<<"$listing")

majors=$(sed -n 's|^usr/lib/postgresql/\([0-9][0-9]*\)/bin/postgres .*|\1|p' <<<"$entries")
if [ "$(grep -c . <<<"$majors")" -ne 1 ]; then
    problems+=("expected exactly one usr/lib/postgresql/<major>/bin/postgres, found: ${majors:-none}")
    major=none
else
    major=$majors
fi

# The programs and scripts: regular files, rwxr-xr-x, root-owned.
executables=(meta/hooks/install meta/hooks/configure bin/pgpilot bin/drop-privileges
    bin/start-pgpilot bin/start-etcd bin/start-pgbouncer bin/psql bin/patronictl bin/etcdctl
    usr/bin/etcd usr/bin/etcdctl usr/sbin/pgbouncer usr/bin/setpriv)
for prog in postgres initdb pg_ctl psql pg_basebackup pg_rewind pg_controldata; do
    executables+=("usr/lib/postgresql/$major/bin/$prog")
done
for path in meta/snap.yaml "${executables[@]}"; do
    entry=$(awk -v p="$path" '$1 == p { print $2, $3; exit }' <<<"$entries")
    if [ -z "$entry" ]; then
        problems+=("$path: not in the snap")
    elif [ "$path" != meta/snap.yaml ] && [ "$entry" != "-rwxr-xr-x 0/0" ]; then
        problems+=("$path: '$entry', expected a regular file '-rwxr-xr-x 0/0'")
    fi
done
for dir in "usr/lib/$(uname -m)-linux-gnu" "usr/share/postgresql/$major"; do
    grep -q "^$dir/" <<<"$entries" || problems+=("$dir/: missing or empty")
done

# meta/snap.yaml against snapcraft.yaml, with the command files next to it.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if unsquashfs -q -n -d "$scratch/tree" "$snap_file" meta bin >/dev/null 2>&1; then
    python3 "$here/snap-yaml.py" --snapcraft-yaml "$repo/snapcraft.yaml" --check "$scratch/tree" >&2 ||
        problems+=("meta/snap.yaml or the apps' files do not match snapcraft.yaml (snap-yaml.py above)")
    version=$(sed -n 's/^version: *//p' "$scratch/tree/meta/snap.yaml" | tr -d "'\"")
    case $(basename "$snap_file") in
    *"_${version}_"*.snap) ;;
    *) problems+=("file name $(basename "$snap_file") does not carry meta/snap.yaml's version $version") ;;
    esac
else
    problems+=("unsquashfs could not extract meta/ and bin/")
fi

if [ "${#problems[@]}" -gt 0 ]; then
    printf 'check-snap.sh: %s\n' "${problems[@]}" >&2
    exit 1
fi
echo "check-snap.sh: $snap_file holds docs/snap.md's paths (PostgreSQL $major) and matches snapcraft.yaml" >&2
