#!/usr/bin/env python3
"""Write a snap's meta/snap.yaml from snapcraft.yaml the way snapcraft does,
or check a built tree against snapcraft.yaml.

Debian 12 has no usable snapcraft (see /work/shared/reference/
packaging-tools.md), so scripts/build-snap.sh builds the tree itself and this
script carries snapcraft.yaml's run-time keys into meta/snap.yaml. A key it
does not know how to carry is refused (exit 2) rather than dropped, so the
recipe and the built snap cannot drift apart silently.

    snap-yaml.py [--snapcraft-yaml FILE] --version V [--arch A] [-o OUT]
        write snap.yaml (stdout without -o)
    snap-yaml.py [--snapcraft-yaml FILE] --check PRIME_DIR
        check PRIME_DIR/meta/snap.yaml against snapcraft.yaml (apps, hooks,
        plugs, environment ... equal), and that every app command,
        command-chain file and hook exists in PRIME_DIR and is executable

Exit status: 0 fine, 1 a check failed, 2 bad usage or a key it cannot carry.
Python 3 standard library plus PyYAML (Debian's python3-yaml).
"""

import argparse
import os
import re
import stat
import sys

import yaml

# snapcraft.yaml keys written into snap.yaml as they are (after expansion).
CARRIED = ["name", "version", "summary", "description", "base", "grade",
           "confinement", "system-usernames", "environment", "plugs",
           "slots", "apps", "hooks"]
# Build-time keys snapcraft does not write into snap.yaml.
BUILD_ONLY = {"parts", "platforms", "adopt-info", "build-base",
              "build-packages", "build-snaps", "package-repositories"}
APP_KEYS = ["command", "command-chain", "daemon", "install-mode",
            "restart-condition", "restart-delay", "stop-mode", "stop-timeout", "environment", "plugs"]
# snapd's stop modes: the signal, to the main process or (-all) the whole unit.
STOP_MODES = {f"{sig}{all_}" for sig in ("sigterm", "sighup", "sigusr1", "sigusr2", "sigint")
              for all_ in ("", "-all")}
HOOK_KEYS = ["plugs"]
# snapcraft's order (snapcraft/meta/snap_yaml.py, SnapMetadata).
ORDER = ["name", "version", "summary", "description", "architectures", "base",
         "assumes", "apps", "confinement", "grade", "environment", "plugs",
         "slots", "hooks", "system-usernames"]
# What snapcraft adds when environment: does not set PATH (strict, devmode).
DEFAULT_PATH = "$SNAP/usr/sbin:$SNAP/usr/bin:$SNAP/sbin:$SNAP/bin:$PATH"

TRIPLETS = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}

# Values snapd accepts (snap/validate.go, snap/info_snap_yaml.go).
DAEMONS = {"simple", "forking", "oneshot", "notify", "dbus"}
INSTALL_MODES = {"enable", "disable"}
RESTART_CONDITIONS = {"always", "on-success", "on-failure", "on-abnormal",
                      "on-abort", "on-watchdog", "never"}
GRADES = {"stable", "devel"}
CONFINEMENTS = {"strict", "devmode", "classic"}
# Interfaces this snap may use; `snap pack` only warns about an unknown one.
INTERFACES = {"network", "network-bind", "network-observe", "shared-memory",
              "process-control", "system-observe", "hardware-observe",
              "mount-observe", "home", "removable-media", "log-observe",
              "content"}
HOOK_NAMES = {"install", "configure", "default-configure", "pre-refresh",
              "post-refresh", "remove", "gate-auto-refresh", "check-health"}
HOOK_PATTERNS = [r"(connect|disconnect|prepare|unprepare)-(plug|slot)-[a-z0-9-]+"]

NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9](?:-?[a-z0-9])*$")
VERSION_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9:.+~-]{0,30}[a-zA-Z0-9+~])?$")
CRAFT_VAR_RE = re.compile(r"\$\{?((?:CRAFT|SNAPCRAFT)_[A-Z0-9_]+)\}?")


class Refused(Exception):
    """snapcraft.yaml has something this script cannot carry (exit 2)."""


def load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise Refused(f"cannot read {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise Refused(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise Refused(f"{path}: expected a mapping at the top level")
    return data


def expand(value, arch, where):
    """Replace snapcraft's project variables; refuse any other CRAFT_ one."""
    if isinstance(value, dict):
        return {k: expand(v, arch, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, arch, where) for v in value]
    if not isinstance(value, str):
        return value
    known = {"CRAFT_ARCH_TRIPLET_BUILD_FOR": TRIPLETS[arch],
             "CRAFT_ARCH_BUILD_FOR": arch}

    def sub(m):
        if m.group(1) not in known:
            raise Refused(f"{where}: ${m.group(1)} is not a variable this script expands")
        return known[m.group(1)]
    return CRAFT_VAR_RE.sub(sub, value)


def only_keys(mapping, allowed, where):
    if not isinstance(mapping, dict):
        raise Refused(f"{where}: expected a mapping")
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise Refused(f"{where}: {', '.join(unknown)} not carried into snap.yaml by "
                      "scripts/snap-yaml.py; teach it (and scripts/build-snap.sh) first")


def build_snap_yaml(sc, version, arch):
    """The snap.yaml snapcraft would write for `arch`, as an ordered dict."""
    only_keys(sc, set(CARRIED) | BUILD_ONLY, "snapcraft.yaml")
    if "version" in sc and version and str(sc["version"]) != version:
        raise Refused(f"snapcraft.yaml says version {sc['version']}, --version says {version}")
    version = str(sc.get("version", version) or "")
    if not version:
        raise Refused("snapcraft.yaml has no version (adopt-info): give --version")
    out = {"name": sc.get("name"), "version": version}
    for key in ("summary", "description"):
        if key in sc:
            out[key] = sc[key]
    out["architectures"] = [arch]
    for key in ("base", "confinement", "system-usernames"):
        if key in sc:
            out[key] = sc[key]
    out["grade"] = sc.get("grade") or "stable"  # snapcraft's default
    # snapcraft keeps the environment given, drops null values, and adds its
    # default PATH (and an LD_LIBRARY_PATH computed from the prime directory,
    # which this script does not do: snapcraft.yaml must set it).
    env = expand(dict(sc.get("environment") or {}), arch, "environment")
    if sc.get("confinement") != "classic":
        if "LD_LIBRARY_PATH" not in env:
            raise Refused("environment: no LD_LIBRARY_PATH; snapcraft would compute one "
                          "from the prime directory, this script does not: set it")
        env.setdefault("PATH", DEFAULT_PATH)
    env = {k: v for k, v in env.items() if v is not None}
    if env:
        out["environment"] = env
    for key in ("plugs", "slots"):
        if key in sc:
            out[key] = expand(sc[key], arch, key)
    apps = {}
    for name, app in (sc.get("apps") or {}).items():
        only_keys(app, APP_KEYS, f"apps.{name}")
        apps[name] = {k: expand(app[k], arch, f"apps.{name}.{k}")
                      for k in APP_KEYS if k in app}
    if apps:
        out["apps"] = apps
    hooks = {}
    for name, hook in (sc.get("hooks") or {}).items():
        hook = hook or {}
        only_keys(hook, HOOK_KEYS, f"hooks.{name}")
        hooks[name] = {k: hook[k] for k in HOOK_KEYS if k in hook}
    if hooks:
        out["hooks"] = hooks
    # snapcraft asks for a snapd that knows command-chain when it is used.
    if any("command-chain" in a for a in apps.values()):
        out["assumes"] = ["command-chain"]
    return {k: out[k] for k in ORDER if k in out}


def validate(sy):
    """What snap pack does not catch (packaging-tools.md) and some it does."""
    errors = []
    name = sy.get("name")
    if not isinstance(name, str) or len(name) > 40 or not NAME_RE.match(name):
        errors.append(f"name {name!r}: lowercase letters, digits and single hyphens, at most 40")
    if not VERSION_RE.match(str(sy.get("version", ""))):
        errors.append(f"version {sy.get('version')!r}: at most 32 characters of [a-zA-Z0-9:.+~-]")
    if len(str(sy.get("summary", ""))) > 78:
        errors.append("summary: longer than 78 characters")
    if sy.get("grade") not in GRADES:
        errors.append(f"grade {sy.get('grade')!r}: one of {sorted(GRADES)}")
    if sy.get("confinement") not in CONFINEMENTS:
        errors.append(f"confinement {sy.get('confinement')!r}: one of {sorted(CONFINEMENTS)}")
    top_plugs = sy.get("plugs") or {}
    for plug in top_plugs:
        iface = (top_plugs[plug] or {}).get("interface", plug)
        if iface not in INTERFACES:
            errors.append(f"plugs.{plug}: unknown interface {iface!r}")
    for slot, spec in (sy.get("slots") or {}).items():
        errors += slot_errors(slot, spec or {})
    owners = [(f"apps.{n}", a) for n, a in (sy.get("apps") or {}).items()]
    owners += [(f"hooks.{n}", h) for n, h in (sy.get("hooks") or {}).items()]
    for where, owner in owners:
        for plug in owner.get("plugs") or []:
            if plug not in top_plugs and plug not in INTERFACES:
                errors.append(f"{where}.plugs: unknown interface {plug!r}")
    for name, app in (sy.get("apps") or {}).items():
        where = f"apps.{name}"
        daemon = app.get("daemon")
        if daemon is not None and daemon not in DAEMONS:
            errors.append(f"{where}.daemon {daemon!r}: one of {sorted(DAEMONS)}")
        for key, allowed in (("install-mode", INSTALL_MODES),
                             ("restart-condition", RESTART_CONDITIONS),
                             ("stop-mode", STOP_MODES)):
            if key in app and daemon is None:
                errors.append(f"{where}.{key}: only for daemons")
            if key in app and app[key] not in allowed:
                errors.append(f"{where}.{key} {app[key]!r}: one of {sorted(allowed)}")
        for key in ("stop-timeout", "restart-delay"):
            if key in app and not re.match(r"^\d+(ns|us|ms|s|m|h)?$", str(app[key])):
                errors.append(f"{where}.{key} {app[key]!r}: a duration such as 60s")
    for name in sy.get("hooks") or {}:
        if name not in HOOK_NAMES and not any(re.fullmatch(p, name) for p in HOOK_PATTERNS):
            errors.append(f"hooks.{name}: not a hook snapd runs")
    return errors


# Where a content slot may share from (snapd's content interface).
CONTENT_ROOTS = ("$SNAP/", "$SNAP_DATA/", "$SNAP_COMMON/")


def slot_errors(slot, spec):
    """A top-level slot: a known interface; a content slot shares paths of
    its own snap through `source: {read: [...], write: [...]}`."""
    where = f"slots.{slot}"
    if not isinstance(spec, dict):
        return [f"{where}: expected a mapping"]
    iface = spec.get("interface", slot)
    if iface not in INTERFACES:
        return [f"{where}: unknown interface {iface!r}"]
    if iface != "content":
        return []
    source = spec.get("source")
    if not isinstance(source, dict) or not (source.get("read") or source.get("write")):
        return [f"{where}: a content slot needs source.read or source.write (a list of paths)"]
    errors = []
    for mode in sorted(set(source) - {"read", "write"}):
        errors.append(f"{where}.source.{mode}: only read and write")
    for mode in ("read", "write"):
        for path in source.get(mode) or []:
            if not isinstance(path, str) or not path.startswith(CONTENT_ROOTS):
                errors.append(f"{where}.source.{mode}: {path!r} is not under "
                              f"{', '.join(r.rstrip('/') for r in CONTENT_ROOTS)}")
    return errors


def executable_problem(path):
    try:
        st = os.stat(path)
    except OSError:
        return "does not exist"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_mode & 0o555 != 0o555:
        return f"mode {stat.S_IMODE(st.st_mode):04o}: not readable and executable by all"
    return None


def differences(have, want, where):
    """'key.sub: snap.yaml has X, snapcraft.yaml says Y' for each difference."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in list(want) + [k for k in have if k not in want]:
            out += differences(have.get(key), want.get(key), f"{where}.{key}" if where else key)
        return out
    if have == want:
        return []
    return [f"{where}: snap.yaml has {have!r}, snapcraft.yaml says {want!r}"]


def check_tree(sc, prime):
    meta = os.path.join(prime, "meta", "snap.yaml")
    sy = load_yaml(meta)
    arches = sy.get("architectures") or []
    if len(arches) != 1 or arches[0] not in TRIPLETS:
        return [f"{meta}: architectures {arches!r}: expected one of {sorted(TRIPLETS)}"]
    expected = build_snap_yaml(sc, str(sy.get("version", "")), arches[0])
    errors = [f"{meta}: {e}" for e in validate(sy)]
    errors += [f"{meta}: {d}" for d in differences(sy, expected, "")]
    for name, app in (sy.get("apps") or {}).items():
        files = [str(app.get("command", "")).split()[0:1], app.get("command-chain") or []]
        for rel in [f for group in files for f in group]:
            problem = executable_problem(os.path.join(prime, rel.lstrip("/")))
            if problem:
                errors.append(f"apps.{name}: {rel} {problem}")
    hooks_dir = os.path.join(prime, "meta", "hooks")
    declared = set(sy.get("hooks") or {})
    present = set(os.listdir(hooks_dir)) if os.path.isdir(hooks_dir) else set()
    for name in sorted(declared):
        problem = executable_problem(os.path.join(hooks_dir, name))
        if problem:
            errors.append(f"hooks.{name}: meta/hooks/{name} {problem}")
    for name in sorted(present - declared):
        errors.append(f"meta/hooks/{name}: not declared under hooks: in snapcraft.yaml")
    return errors


def literal_str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapcraft-yaml", default=os.path.join(os.path.dirname(here), "snapcraft.yaml"))
    p.add_argument("--version", help="the snap's version (snapcraft.yaml uses adopt-info)")
    p.add_argument("--arch", default="amd64", choices=sorted(TRIPLETS))
    p.add_argument("-o", "--output", help="write here (default: stdout)")
    p.add_argument("--check", metavar="PRIME_DIR", help="check a built tree instead")
    args = p.parse_args(argv)
    try:
        sc = load_yaml(args.snapcraft_yaml)
        if args.check:
            errors = check_tree(sc, args.check)
            for e in errors:
                print(f"snap-yaml.py: {e}", file=sys.stderr)
            if errors:
                return 1
            print(f"snap-yaml.py: {args.check} matches {args.snapcraft_yaml}")
            return 0
        sy = build_snap_yaml(sc, args.version, args.arch)
        errors = validate(sy)
        if errors:
            for e in errors:
                print(f"snap-yaml.py: {e}", file=sys.stderr)
            return 1
    except Refused as e:
        print(f"snap-yaml.py: {e}", file=sys.stderr)
        return 2
    yaml.SafeDumper.add_representer(str, literal_str)
    text = yaml.safe_dump(sy, sort_keys=False, default_flow_style=False, width=100)
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
