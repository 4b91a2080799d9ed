#!/usr/bin/env bash
# Check the charm's recipe and a built .charm with PyPI's charmcraft, from
# the virtualenv scripts/setup.sh installs (/var/tmp/charmcraft-venv, every
# package pinned in scripts/charmcraft-requirements.txt; CHARMCRAFT_VENV
# overrides the path). `charmcraft pack` cannot run on Debian 12, so these are
# the parts of charmcraft that can (reference/packaging-tools.md):
#
#   bash scripts/check-charm.sh [--recipe PATH/charmcraft.yaml] [CHARM]
#
# 1. expand-extensions: `charmcraft expand-extensions` in the recipe's
#    directory: the recipe as charmcraft loads it (name, type, base, platforms,
#    unknown top-level or part keys, an unknown plugin, a missing summary);
# 2. config: the options through charmcraft's pydantic model
#    (charmcraft.models.config.JujuConfig): each option's type, and a default
#    that matches it (a string default on an int option, for one);
# 3. parts: each part through craft_parts.validate_part with charmcraft's
#    plugins registered: the plugin's properties and their types, part keys;
# 4. analyse: `charmcraft analyse CHARM` (only when CHARM is given): an ERROR
#    fails, warnings are printed and pass. The linters are shallow; its
#    entrypoint check would misread a `dispatch` shell script ending in
#    `exec ./bin "$@"` (packaging-tools.md); ours is the compiled binary.
#
# The recipe defaults to charm/charmcraft.yaml. Every check runs; the last
# lines name each one that failed and how to fix it (exit 1), or say that
# all passed (exit 0). Exit 2: bad arguments or no charmcraft.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")

recipe="$repo/charm/charmcraft.yaml"
charm=""
while [ $# -gt 0 ]; do
    case "$1" in
        --recipe) recipe=$2; shift 2 ;;
        --recipe=*) recipe=${1#--recipe=}; shift ;;
        -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) echo "check-charm.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
        *) [ -z "$charm" ] || { echo "check-charm.sh: one .charm at a time" >&2; exit 2; }
           charm=$1; shift ;;
    esac
done

venv=${CHARMCRAFT_VENV:-/var/tmp/charmcraft-venv}
if [ ! -x "$venv/bin/charmcraft" ] || [ ! -x "$venv/bin/python" ]; then
    echo "check-charm.sh: no charmcraft in $venv; run: bash scripts/setup.sh (installs it from scripts/charmcraft-requirements.txt)" >&2
    exit 2
fi
[ -f "$recipe" ] || { echo "check-charm.sh: no recipe at $recipe" >&2; exit 2; }
recipe=$(cd "$(dirname "$recipe")" && pwd)/$(basename "$recipe")
if [ -n "$charm" ]; then
    [ -f "$charm" ] || { echo "check-charm.sh: no .charm at $charm; build one with: bash scripts/build-charm.sh" >&2; exit 2; }
    charm=$(cd "$(dirname "$charm")" && pwd)/$(basename "$charm")
fi

# charmcraft wants a private XDG_RUNTIME_DIR (else it warns on every run).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_RUNTIME_DIR="$work"

failed=()
check() { printf '\n--> check-charm: %s\n' "$*"; }
# failure NAME WHAT-TO-DO: remember a failed check for the summary.
failure() {
    failed+=("$1: $2")
    printf 'FAILED %s\n' "$1"
}

# --- 1. charmcraft expand-extensions ----------------------------------------------
check "charmcraft expand-extensions in $(dirname "$recipe")"
rc=0
(cd "$(dirname "$recipe")" && "$venv/bin/charmcraft" expand-extensions) >"$work/expanded.yaml" 2>"$work/expand.err" || rc=$?
if [ "$rc" -eq 0 ]; then
    echo "ok: charmcraft loads the recipe (name, type, base, platforms, parts' keys and plugin)"
else
    # charmcraft prints the validation errors on stderr, then where its log is.
    sed 's/^/    /' "$work/expand.err"
    failure expand-extensions "charmcraft rejects $recipe (exit $rc); fix the keys it names above"
fi

# --- 2. and 3. the config options and the parts, through charmcraft's Python API -------
check "config options (charmcraft.models.config.JujuConfig) and parts (craft_parts.validate_part with charmcraft's plugins)"
rc=0
"$venv/bin/python" - "$recipe" <<'PY' || rc=$?
import sys

import pydantic
import yaml

recipe_path = sys.argv[1]
with open(recipe_path) as f:
    recipe = yaml.safe_load(f)
if not isinstance(recipe, dict):
    print(f"FAILED config: {recipe_path} is not a YAML mapping")
    sys.exit(1)
status = 0


def where(loc):
    return ".".join(str(part) for part in loc)


# The options: charmcraft 3+ reads charmcraft.yaml's `config:` with this model
# and writes config.yaml from it.
from charmcraft.models.config import JujuConfig

config = recipe.get("config")
if config is None:
    print("ok: no config options")
else:
    try:
        model = JujuConfig.model_validate(config)
    except pydantic.ValidationError as err:
        status = 1
        for e in err.errors():
            loc = e["loc"]
            # ('options', NAME, TYPE, FIELD): the discriminated union puts the
            # option's type between its name and the offending field.
            if len(loc) >= 2 and loc[0] == "options":
                name = loc[1]
                option = (config.get("options") or {}).get(name)
                field = loc[3] if len(loc) >= 4 else None
                if field == "default" and isinstance(option, dict):
                    what = (f"default {option.get('default')!r} does not fit type "
                            f"{option.get('type')!r}: {e['msg']}; make the default a value of "
                            f"type {option.get('type')}, or change the type")
                elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    what = (f"type {option.get('type') if isinstance(option, dict) else None!r} "
                            "is not one of string, int, float, boolean, secret; set `type:`")
                else:
                    what = f"{where(loc[2:]) or 'the option'}: {e['msg']}"
                print(f"FAILED config option {name!r} (config.options.{name}): {what}")
            else:
                print(f"FAILED config.{where(loc)}: {e['msg']}")
    else:
        print(f"ok: {len(model.options or {})} config options valid")

# The parts: craft-parts' own validation, with the plugins charmcraft registers
# (charm, python, poetry, reactive, uv; colcon and ruby removed).
import craft_parts
import charmcraft.parts

charmcraft.parts.setup_parts()
parts = recipe.get("parts") or {}
if not isinstance(parts, dict):
    print("FAILED parts: `parts:` is not a mapping of part names to parts")
    status = 1
    parts = {}
for name, part in parts.items():
    try:
        craft_parts.validate_part(part if isinstance(part, dict) else {})
    except pydantic.ValidationError as err:
        status = 1
        for e in err.errors():
            print(f"FAILED part {name!r} (parts.{name}.{where(e['loc'])}): {e['msg']}"
                  f" [{err.title}]")
    except (ValueError, TypeError) as err:
        status = 1
        print(f"FAILED part {name!r} (parts.{name}): {err}")
    else:
        print(f"ok: part {name!r} valid (plugin {part.get('plugin')!r})")
sys.exit(status)
PY
case $rc in
    0) ;;
    1) failure "config/parts" "fix the options or parts named above in $recipe" ;;
    *) failure "config/parts" "the Python check itself crashed (exit $rc) in $venv; rerun bash scripts/setup.sh, and see the traceback above" ;;
esac

# --- 4. charmcraft analyse -----------------------------------------------------------
if [ -n "$charm" ]; then
    check "charmcraft analyse $charm"
    rc=0
    (cd "$work" && "$venv/bin/charmcraft" analyse "$charm") >"$work/analyse.out" 2>&1 || rc=$?
    sed 's/^/    /' "$work/analyse.out"
    # Exit 0: clean; 3: warnings only (today's option names mix snake_case
    # and system-users, kept so that bundles deploy unchanged); 2: an ERROR.
    case $rc in
        0) echo "ok: no errors, no warnings" ;;
        3) echo "ok: no errors (the warnings above do not fail the check)" ;;
        2) failure analyse "a linter reports an ERROR in $charm (its line above names it and links its documentation); fix $recipe or scripts/build-charm.sh, which wrote the .charm" ;;
        *) failure analyse "charmcraft analyse could not run (exit $rc); see its message above" ;;
    esac
else
    check "charmcraft analyse: skipped (no .charm given)"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\ncheck-charm.sh: %s check(s) failed:\n' "${#failed[@]}" >&2
    printf '  - %s\n' "${failed[@]}" >&2
    exit 1
fi
printf '\n'
echo "check-charm.sh: all checks passed for $recipe${charm:+ and $charm}"
