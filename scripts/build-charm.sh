#!/usr/bin/env bash
# Build the charm's .charm file on Debian 12, where `charmcraft pack` cannot
# run (it needs snapd/LXD, or an Ubuntu host: reference/packaging-tools.md):
# the tree charmcraft packs from charm/charmcraft.yaml, zipped.
#
#   bash scripts/build-charm.sh [--dispatch-bin PATH] [--out DIR]
#
# 1. dispatch: `cargo build --release -p pgpilot-charm` (CARGO_TARGET_DIR,
#    default /var/tmp/pgpilot-target), or the binary given with --dispatch-bin;
#    charmcraft.yaml's rust part builds the same crate and organizes
#    bin/pgpilot-charm to dispatch;
# 2. metadata.yaml, config.yaml, actions.yaml and manifest.yaml generated from
#    charmcraft.yaml the way charmcraft 3 splits it;
# 3. the zip (dispatch mode 0755);
# 4. scripts/check-charm.sh on charmcraft.yaml and the zip (PyPI's charmcraft,
#    which scripts/setup.sh installs: expand-extensions, its config model, its
#    part plugins, `charmcraft analyse`); a failed check fails the build.
#
# Output: DIR/<name>_<base>-<arch>.charm, name and base from charmcraft.yaml:
# DIR/postgresql_ubuntu@24.04-amd64.charm on amd64 (DIR default
# /var/tmp/pgpilot-charm; the unzipped tree is DIR/prime). Progress goes to
# stderr; stdout ends with the .charm's path on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
exec 3>&1 1>&2 # fd 3: the result line; everything else to stderr

dispatch_bin=""
out=/var/tmp/pgpilot-charm
while [ $# -gt 0 ]; do
    case "$1" in
        --dispatch-bin) dispatch_bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "build-charm.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -z "$dispatch_bin" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/pgpilot-target}"
    (cd "$repo" && cargo build --release -p pgpilot-charm)
    dispatch_bin="$CARGO_TARGET_DIR/release/pgpilot-charm"
fi

case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac

rm -rf "$out/prime"
mkdir -p "$out/prime"
install -m 0755 "$dispatch_bin" "$out/prime/dispatch"

# Prints the .charm's path.
charm=$(python3 - "$repo/charm/charmcraft.yaml" "$out" "$arch" <<'PY'
import datetime, os, sys, zipfile
import yaml

recipe_path, out, arch = sys.argv[1:]
prime = os.path.join(out, "prime")
recipe = yaml.safe_load(open(recipe_path))
if arch not in (recipe.get("platforms") or {}):
    sys.exit(f"build-charm.sh: this machine's architecture {arch} is not one of "
             f"the platforms of {recipe_path}: {', '.join(recipe.get('platforms') or [])}")
# name_base-arch, as issue 11 asks: postgresql_ubuntu@24.04-amd64.charm.
charm = os.path.join(out, f"{recipe['name']}_{recipe['base']}-{arch}.charm")

# charmcraft 3: everything Juju reads goes into metadata.yaml, except the
# options (config.yaml) and actions (actions.yaml); build keys stay behind.
build_keys = {"type", "base", "build-base", "platforms", "parts", "config",
              "actions", "charmhub", "analysis", "charm-libs", "links"}
metadata = {k: v for k, v in recipe.items() if k not in build_keys}
channel = recipe["base"].split("@", 1)[1]
manifest = {
    "charmcraft-version": "pgpilot build-charm.sh",
    "charmcraft-started-at": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    "bases": [{"name": "ubuntu", "channel": channel, "architectures": [arch]}],
    "analysis": {"attributes": [
        {"name": "language", "result": "unknown"},
        {"name": "framework", "result": "unknown"},
    ]},
}
files = {
    "metadata.yaml": metadata,
    "config.yaml": recipe["config"],
    "actions.yaml": recipe["actions"],
    "manifest.yaml": manifest,
}
for name, doc in files.items():
    with open(os.path.join(prime, name), "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False, default_flow_style=False)

with zipfile.ZipFile(charm, "w", zipfile.ZIP_DEFLATED) as z:
    for name in sorted(os.listdir(prime)):
        path = os.path.join(prime, name)
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        mode = 0o755 if name == "dispatch" else 0o644
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            z.writestr(info, f.read())
print(charm)
PY
)

# The one place the charm is checked (also for CI: scripts/test.sh builds the
# charm through this script).
if ! bash "$here/check-charm.sh" "$charm"; then
    echo "build-charm.sh: $charm was built but scripts/check-charm.sh rejects it (its message above says what failed and how to fix it)" >&2
    exit 1
fi

ls -l "$charm" >&2
echo "$charm" >&3
