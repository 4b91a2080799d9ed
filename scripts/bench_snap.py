#!/usr/bin/python3
"""Snap benchmark: the charmed-postgresql snap's size, and the idle memory of its
daemons next to what the current charmed-postgresql snap runs for the same roles,
on this machine, in the same run.

Driven by scripts/bench-snap.sh (which installs the packages and builds the snap);
it can also be run directly as root:

    /usr/bin/python3 scripts/bench_snap.py --dir /tmp/bench --snap charmed-postgresql_..._amd64.snap

1. Our snap: the ignored Rust test tests/tests/snap_bench.rs (`snap_idle_memory`)
   installs the .snap on one machine of the snapd fixture with the install
   defaults (127.0.0.1: PostgreSQL 5432, REST API 8008, etcd 2379/2380), starts
   etcd and pgpilot, waits until `patronictl list` shows the running leader,
   idles IDLE seconds and writes VmRSS / Pss / private memory of every process of
   the snap's services to DIR/snap.json.
2. Today's roles, from Debian's packages: Patroni 3 (one member, DCS etcd3, with
   its own etcd and its own PostgreSQL 15 in DIR, started as
   scripts/bench_failover.py starts its members), prometheus-postgres-exporter
   as the current snap starts it (no flags, a pg_monitor role, PostgreSQL's
   socket, as an unprivileged user), and pgbackrest_exporter when a binary is
   given or on PATH (Debian 12 does not package it). Once Patroni's member is the
   leader and the exporter answers: idle IDLE seconds, then the same readings.

Everything listens on 127.0.0.1. Everything it starts is recorded in
DIR/pids.jsonl (pid + start time) and stopped by pid at the end, also on Ctrl-C;
`--cleanup` stops whatever a killed run left behind (the snap's daemons are found
by SNAP_COMMON under DIR/m in their environment).
"""

import argparse
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time

from benchlib import (
    EventLog, Interrupted, Registry, cmdline, guards_under, kill, load1, load_summary, machine, ours_still,
    others_running, password, postmasters_under, sleep, stop_etcd, stop_group, stop_on_signals, utcnow,
    wait_gone, write_doc_block,
)
from bench_failover import PG_BIN, SETTINGS, Bench as FailoverBench, Cluster, free_port, http_status, pg_connect
from bench_metrics import EXPORTER, Bench as MetricsBench, memory, mib, run_out

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MACHINE = "m"  # DIR/m: the snapd fixture's machine (short: PostgreSQL's socket path lies under it)
# PostgreSQL's socket under the machine's root: $SNAP_COMMON/var/run/postgresql/.s.PGSQL.5432.
SOCKET_UNDER_ROOT = "/var/snap/charmed-postgresql/common/var/run/postgresql/.s.PGSQL.5432"
SOCKET_PATH_MAX = 107  # bytes, Linux's sun_path less its terminating NUL
# The snap's install defaults: its member, REST API and etcd on 127.0.0.1.
SNAP_PORTS = [5432, 8008, 2379, 2380]
# Patroni at its own defaults (ttl 30, loop_wait 10, retry_timeout 10), as the charm runs it.
PATRONI_SETTING = next(s for s in SETTINGS if s[0] == "patroni-defaults")
# Patroni's PostgreSQL data directory: DIR/patroni-<ttl>-<loop_wait>-<retry_timeout>/pg1/data.
PATRONI_DATA_GLOB = os.path.join("patroni-*", "*", "data")
# The snap's PostgreSQL data directory under DIR/m (docs/snap.md: $SNAP_COMMON/var/lib/postgresql[/data]).
SNAP_DATA_GLOBS = [os.path.join(MACHINE, "var", "snap", "*", "common", "var", "lib", "postgresql"),
                   os.path.join(MACHINE, "var", "snap", "*", "common", "var", "lib", "postgresql", "data")]
MONITOR_ROLE = "monitoring"
PGBACKREST_EXPORTER_MISSING = "not run: not packaged for Debian 12"
PGBACKREST_EXPORTER_NOTE = ("pgbackrest_exporter was not run: Debian 12 does not package it (the current snap "
                            "takes `golang-github-woblerr-pgbackrest-exporter` from its own PPA) and PyPI does not "
                            "have it; today's sums lack its memory, so they understate today's cost.")


# --------------------------------------------------------------------------- processes


def children(pid):
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def descendants(pid):
    """Every live descendant of PID (not PID itself)."""
    found, stack = [], [pid]
    while stack:
        for child in children(stack.pop()):
            if child not in found:
                found.append(child)
                stack.append(child)
    return found


def snap_processes(dir):
    """Processes of the snap machine DIR/m: SNAP_COMMON under it in their environment."""
    mark = ("SNAP_COMMON=" + os.path.join(dir, MACHINE) + "/").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(mark) for e in env):
            found.append(int(entry))
    return found


def snap_postmasters(dir):
    return [p for g in SNAP_DATA_GLOBS for p in postmasters_under(dir, g)]


def stop_snap_leftovers(dir, log=print):
    """The snap's daemons a killed test left running: SIGTERM the sidecars and etcd (pgpilot stops
    PostgreSQL), then SIGQUIT the postmasters, then SIGKILL whatever is left."""
    left = snap_processes(dir)
    if not left:
        return
    mains = [p for p in left if cmdline(p)[1:2] == ["run"] or os.path.basename((cmdline(p) or [""])[0]) == "etcd"]
    stop_group(mains, 30, log, label="snap ", show_cmdline=True)
    for pid in snap_postmasters(dir) + guards_under(os.path.join(dir, MACHINE)):
        log(f"cleanup: SIGQUIT snap leftover pid {pid}")
        kill(pid, signal.SIGQUIT)
    wait_gone(snap_processes(dir), 10)
    for pid in snap_processes(dir):
        log(f"cleanup: SIGKILL snap leftover pid {pid}")
        kill(pid, signal.SIGKILL)


def cleanup(dir, log=print):
    """Stop, by pid: the Rust test (its process group) and what it left of the snap's daemons, the
    exporters, Patroni's member, leftover postmasters, etcd last."""
    entries = [e for e in Registry(dir).entries() if ours_still(e)]
    tests = [e["pid"] for e in entries if e["what"].startswith("cargo")]
    for pid in tests:
        log(f"cleanup: SIGTERM cargo process group {pid}")
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
    if not wait_gone(tests, 20):
        for pid in tests:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    stop_snap_leftovers(dir, log)
    stop_group([e["pid"] for e in entries if e["what"].startswith("exporter")], 30, log, show_cmdline=True)
    stop_group([e["pid"] for e in entries if e["what"].startswith("patroni")], 45, log, label="member ")
    for pid in postmasters_under(dir, PATRONI_DATA_GLOB):
        log(f"cleanup: SIGQUIT leftover postmaster {pid}")
        kill(pid, signal.SIGQUIT)
        if not wait_gone([pid], 10):
            kill(pid, signal.SIGKILL)
    stop_etcd([e["pid"] for e in entries if e["what"] == "etcd"], log)


# --------------------------------------------------------------------------- figures


def total(mems):
    """Sum of memory() readings (None ones skipped): rss, pss, private in kB and the count."""
    mems = [m for m in mems if m]
    return {"rss": sum(m["rss"] for m in mems), "pss": sum(m["pss"] for m in mems),
            "private": sum(m["private"] for m in mems), "n": len(mems)}


# --------------------------------------------------------------------------- the reference side


class Reference(FailoverBench):
    """bench_failover's etcd and Cluster for Patroni, with one member; none of its pgpilot parts."""

    def __init__(self, dir, base_port, registry, log):  # pylint: disable=super-init-not-called
        self.dir = dir
        self.base_port = base_port
        self.etcd_port = base_port
        self.etcd_url = f"http://127.0.0.1:{base_port}"
        self.etcd = None
        self.registry = registry
        self.log = log


class SnapBench:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.log = EventLog(os.path.join(self.dir, "bench.log"))
        self.registry = Registry(self.dir)
        self.snap = os.path.abspath(args.snap)
        self.loads = []
        self.foreign = set()
        self.notes = []
        self.results = {"notes": self.notes}
        self.reference = None
        self.cluster = None
        self.procs = {}
        self._halt = threading.Event()

    # -- facts
    def sample_loads(self):
        while not self._halt.wait(5):
            load = load1()
            if load is not None:
                self.loads.append(load)

    def sample_others(self):
        self.foreign |= others_running(self.dir, ("postgres", "pgpilot", "etcd", "patroni", "cargo", "rustc",
                                                  "prometheus-postgres-exporter"), "pgpilot")

    def versions(self):
        git = run_out(["git", "-C", REPO, "describe", "--always", "--dirty"])
        return {
            "git": git,
            "patroni": f"{run_out(['/usr/bin/patroni', '--version'])} "
                       f"(Debian {run_out(['dpkg-query', '-W', '-f=${Version}', 'patroni'])})",
            "exporter": f"{run_out([EXPORTER, '--version']).splitlines()[0]} "
                        f"(Debian {run_out(['dpkg-query', '-W', '-f=${Version}', 'prometheus-postgres-exporter'])})",
            "postgresql": run_out([os.path.join(PG_BIN, "postgres"), "--version"]),
            "etcd": (run_out(["etcd", "--version"]).splitlines() or ["?"])[0],
            **machine(),
        }

    def check_setup(self):
        a = self.args
        socket_path = os.path.join(self.dir, MACHINE) + SOCKET_UNDER_ROOT
        if len(socket_path.encode()) > SOCKET_PATH_MAX:
            raise RuntimeError(f"--dir {self.dir} is too long: the snap's PostgreSQL socket would be {socket_path}, "
                               f"over {SOCKET_PATH_MAX} bytes; use a shorter work directory")
        busy = [p for p in SNAP_PORTS if not free_port(p)]
        if busy:
            raise RuntimeError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 in use: the snap's install "
                               "defaults need 5432, 8008, 2379 and 2380 (another PostgreSQL, etcd or a test?)")
        mine = [a.base_port, a.base_port + 1, a.base_port + 11, a.base_port + 61, a.base_port + 90,
                a.base_port + 91]
        busy = [p for p in mine if not free_port(p)]
        if busy:
            raise RuntimeError(f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 in use: choose another --base-port")

    # -- our snap, through the Rust test
    def cargo_command(self, no_run):
        nextest = subprocess.run(["cargo", "nextest", "--version"], capture_output=True).returncode == 0
        if nextest:
            cmd = ["cargo", "nextest", "run", "-p", "pgpilot-e2e", "--test", "snap_bench", "--run-ignored", "only",
                   "-E", "test(snap_idle_memory)"]
            return cmd + (["--no-run"] if no_run else ["--no-capture"])
        cmd = ["cargo", "test", "-p", "pgpilot-e2e", "--test", "snap_bench"]
        return cmd + (["--no-run"] if no_run else ["--", "--ignored", "--exact", "snap_idle_memory", "--nocapture"])

    def run_cargo(self, what, cmd, env, timeout):
        log_path = os.path.join(self.dir, f"{what}.log")
        with open(log_path, "a") as logf:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True)
        self.registry.add(proc.pid, what)
        self.log(f"{what}: {' '.join(cmd)} (pid {proc.pid}, log {log_path})")
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
                raise RuntimeError(f"{what} did not finish within {timeout} s; see {log_path}")
            sleep(1)
        if proc.returncode != 0:
            with open(log_path, errors="replace") as f:
                lines = f.readlines()
            # The test's error (anyhow's "Error: ..." with the journals), else the end of the log.
            start = next((i for i, line in enumerate(lines) if line.startswith("Error: ")), max(0, len(lines) - 40))
            excerpt = "".join(lines[start:start + 60]).rstrip()
            raise RuntimeError(f"{what} failed (exit {proc.returncode}); from {log_path}:\n{excerpt}")

    def measure_snap(self):
        a = self.args
        out = os.path.join(self.dir, "snap.json")
        if os.path.exists(out):
            os.remove(out)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PGPILOT_", "PG", "ETCD"))}
        env.update(PGPILOT_SNAP=self.snap, PGPILOT_BENCH_OUT=out, PGPILOT_BENCH_IDLE_S=str(a.idle),
                   PGPILOT_BENCH_MACHINE_DIR=os.path.join(self.dir, MACHINE),
                   RUST_BACKTRACE="0", RUST_LIB_BACKTRACE="0")
        if a.keep_data:
            env["PGPILOT_KEEP_TEST_DIR"] = "1"
        self.run_cargo("cargo-build", self.cargo_command(no_run=True), env, a.build_timeout)
        self.log(f"snap: installing {self.snap} on the fixture's machine, starting etcd + pgpilot, "
                 f"then {a.idle} s idle")
        self.run_cargo("cargo-snap-test", self.cargo_command(no_run=False), env, a.idle + 900)
        with open(out) as f:
            snap = json.load(f)
        self.results["snap"] = snap
        self.log(f"snap: leader after {snap['start_to_leader_s']:.1f} s; "
                 + ", ".join(f"{p['role']} {mib(p['rss_kb'])} MiB RSS / {mib(p['pss_kb'])} Pss"
                             for p in snap["processes"] if p["role"] != "postgresql"))

    # -- today's roles
    def start_exporter(self, member):
        conn = pg_connect(member.pg_port, self.cluster.su_password, timeout=10)
        pw = password()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN PASSWORD %s IN ROLE pg_monitor", (pw,))
        finally:
            conn.close()
        port = self.args.base_port + 90
        # As the current snap's start-exporter.sh: no flags, the monitoring user and password, PostgreSQL's
        # socket, an unprivileged user.
        dsn = (f"host={member.dir} port={member.pg_port} user={MONITOR_ROLE} password={pw} "
               "dbname=postgres sslmode=disable")
        nobody = pwd.getpwnam("nobody")
        self.spawn("exporter postgres_exporter",
                   [EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                   "exporter.log", env={"PATH": "/usr/bin:/bin", "DATA_SOURCE_NAME": dsn},
                   user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
        self.wait_http("exporter postgres_exporter", port)

    def start_pgbackrest_exporter(self):
        binary = self.args.pgbackrest_exporter or shutil.which("pgbackrest_exporter")
        if not binary:
            self.results["pgbackrest_exporter"] = PGBACKREST_EXPORTER_MISSING
            self.log(f"pgbackrest_exporter {PGBACKREST_EXPORTER_MISSING}")
            return
        port = self.args.base_port + 91
        nobody = pwd.getpwnam("nobody")
        self.spawn("exporter pgbackrest_exporter", [binary, f"--web.listen-address=127.0.0.1:{port}"],
                   "pgbackrest-exporter.log", env={"PATH": "/usr/bin:/bin"},
                   user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
        self.wait_http("exporter pgbackrest_exporter", port)
        self.results["pgbackrest_exporter"] = f"{binary} ({run_out([binary, '--version']).splitlines()[0]})"

    # bench_metrics' process starter (it needs dir, registry, procs and log, which this class has).
    spawn = MetricsBench.spawn
    check_alive = MetricsBench.check_alive

    def wait_http(self, what, port):
        deadline = time.monotonic() + 30
        while http_status("127.0.0.1", port, "/", timeout=2)[0] is None:
            self.check_alive(what)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} does not answer on 127.0.0.1:{port}; see its log in {self.dir}")
            sleep(0.3)

    def measure_reference(self):
        a = self.args
        self.reference = Reference(self.dir, a.base_port, self.registry, self.log)
        self.reference.start_etcd()
        self.cluster = Cluster(self.reference, 0, "patroni", PATRONI_SETTING)
        self.cluster.members = self.cluster.members[:1]
        self.cluster.start()
        t0 = time.monotonic()
        member = self.cluster.wait_healthy(a.start_timeout)
        if member is None:
            raise RuntimeError(f"Patroni's member did not become the leader within {a.start_timeout} s; "
                               f"see {self.cluster.members[0].log_path}")
        ready_s = time.monotonic() - t0
        self.start_exporter(member)
        self.start_pgbackrest_exporter()
        self.log(f"reference: Patroni leader after {ready_s:.1f} s, exporters up; idling {a.idle} s")
        sleep(a.idle)
        for what in self.procs:
            self.check_alive(what)
        if not member.sidecar_alive():
            raise RuntimeError(f"Patroni exited while idling; see {member.log_path}")
        patroni = member.sidecar_pid()
        postmaster = member.postmaster_pid()
        pg = [] if postmaster is None else [postmaster] + descendants(postmaster)
        patroni_pids = [patroni] + [p for p in descendants(patroni) if p not in pg]
        ref = {
            "start_to_leader_s": ready_s,
            "patroni": [dict(memory(p) or {}, pid=p, cmdline=" ".join(cmdline(p))) for p in patroni_pids],
            "etcd": dict(memory(self.reference.etcd.pid) or {}, pid=self.reference.etcd.pid),
            "exporters": {what.split(" ", 1)[1]: dict(memory(proc.pid) or {}, pid=proc.pid)
                          for what, proc in self.procs.items()},
            "postgresql": total([memory(p) for p in pg]),
        }
        self.results["reference"] = ref
        self.log("reference: " + json.dumps(ref))

    def save(self):
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)

    def main(self):
        a = self.args
        begin = utcnow()
        loads = threading.Thread(target=self.sample_loads, daemon=True)
        loads.start()
        facts = self.versions()
        size = os.path.getsize(self.snap)
        facts["snap"] = {"path": self.snap, "bytes": size}
        self.results["facts"] = facts
        self.log(f"bench dir {self.dir}; snap {self.snap}: {size / 1048576:.1f} MiB ({size} bytes); "
                 f"versions {json.dumps(facts)}")
        self.check_setup()
        self.sample_others()
        ok = True
        try:
            self.measure_snap()
        except RuntimeError as e:
            ok = False
            self.notes.append(f"our snap: {e}")
            self.log(f"FAILED (our snap): {e}")
        self.save()
        self.sample_others()
        self.measure_reference()
        end = utcnow()
        self._halt.set()
        self.results["loads"] = self.loads
        self.results["foreign"] = sorted(self.foreign)
        self.results["begin"], self.results["end"] = begin.isoformat(), end.isoformat()
        self.save()
        report = render(self, facts, begin, end)
        print()
        print(report["text"])
        with open(os.path.join(self.dir, "report.md"), "w") as f:
            f.write(report["block"])
        if not ok:
            self.log("the snap's side failed: no document written")
            return 1
        if a.doc:
            write_doc_block(a.doc, "bench-snap", "Snap", SNAP_INTRO, report["block"])
            self.log(f"wrote the generated block of the Snap section of {a.doc}")
        self.log(f"logs and results in {self.dir}")
        return 0


# --------------------------------------------------------------------------- report

SNAP_INTRO = """`scripts/bench-snap.sh` measures the charmed-postgresql snap (`docs/snap.md`): the size of the
`.snap` file, and the memory of its daemons on one machine, idle, next to what the current
charmed-postgresql snap runs for the same roles (Patroni, postgres_exporter, pgbackrest_exporter),
started in the same run from Debian's packages.

```sh
bash scripts/bench-snap.sh --doc docs/benchmarks.md    # builds the snap first; rewrites the block below
bash scripts/bench-snap.sh --snap FILE.snap            # an existing .snap (about 3 min); prints the table only
```

Our side runs the packed snap on the test fixture that runs a snap as snapd does
(`tests/src/snapd/`, no confinement): `tests/tests/snap_bench.rs` installs it with the install
defaults, starts etcd and pgpilot, waits until `charmed-postgresql.patronictl list` shows the
running leader and idles. The other side is one Patroni member (DCS etcd3) with its own etcd and
PostgreSQL 15, and postgres_exporter started as the current snap starts it (no flags, a
`pg_monitor` role, PostgreSQL's socket). Nothing scrapes either side's metrics while idle.
PostgreSQL is listed apart: both sides run PostgreSQL 15 (the snap the one it ships, with WAL
archiving to its posix repository on; Patroni Debian's installed one). Each side is one member
alone: a member of a 3-member cluster holds more (Patroni about 59.5 MiB RSS in the failover
benchmark above, and in `shared/reference/anchors-measured.md`).
"""


def render(bench, facts, begin, end):
    a = bench.args
    snap = bench.results.get("snap")
    ref = bench.results["reference"]
    size = facts["snap"]["bytes"]
    rows = ["| side | process | VmRSS MiB | Pss MiB | private MiB |", "|---|---|---|---|---|"]

    def row(side, name, m, extra=""):
        m = m or {}
        rows.append(f"| {side} | {name}{extra} | {mib(m.get('rss'))} | {mib(m.get('pss'))} "
                    f"| {mib(m.get('private'))} |")

    ours_sum = None
    if snap:
        procs = snap["processes"]

        def of(role):
            return total([{"rss": p["rss_kb"], "pss": p["pss_kb"], "private": p["private_kb"]}
                          for p in procs if p["role"] == role])
        parts = [of("pgpilot run"), of("pgpilot fence-guard"), of("etcd")]
        for name, m in zip(["`pgpilot run`", "`pgpilot fence-guard`", "etcd (the snap's)"], parts):
            row("this snap", name, m, "" if m["n"] == 1 else f" ({m['n']} processes)")
        ours_sum = total(parts)
        row("this snap", "**pgpilot run + fence-guard + etcd**", ours_sum)
        other = of("other")
        if other["n"]:
            row("this snap", f"other processes of its services ({other['n']})", other)
    else:
        rows.append("| this snap | — | failed: see below | | |")

    patroni = total(ref["patroni"])
    row("today", "Patroni (`patroni`)", patroni,
        "" if patroni["n"] == 1 else f" with {patroni['n'] - 1} child processes")
    exporters = [patroni]
    pge = ref["exporters"].get("postgres_exporter")
    row("today", "postgres_exporter (`prometheus-postgres-exporter`, no flags)", pge)
    exporters.append(pge)
    pbe = ref["exporters"].get("pgbackrest_exporter")
    if pbe:
        row("today", "pgbackrest_exporter", pbe)
        exporters.append(pbe)
    else:
        rows.append(f"| today | pgbackrest_exporter | {bench.results.get('pgbackrest_exporter', 'not run')} | | |")
    today = total(exporters)
    names = "Patroni + postgres_exporter" + (" + pgbackrest_exporter" if pbe else "")
    row("today", f"**{names}**", today)
    row("today", "etcd (Patroni's DCS)", ref["etcd"])
    today_etcd = total(exporters + [ref["etcd"]])
    row("today", f"**{names} + etcd**", today_etcd)
    if snap:
        pg = total([{"rss": p["rss_kb"], "pss": p["pss_kb"], "private": p["private_kb"]}
                    for p in snap["processes"] if p["role"] == "postgresql"])
        row("apart", f"PostgreSQL under the snap's pgpilot ({pg['n']} processes, summed)", pg)
    pgr = ref["postgresql"]
    row("apart", f"PostgreSQL under Patroni ({pgr['n']} processes, summed)", pgr)
    table = "\n".join(rows)

    if ours_sum:
        sidecar = total(parts[:2])
        ratio = (f"Together, idle: this snap's daemons {mib(ours_sum['pss'])} MiB Pss "
                 f"({mib(ours_sum['rss'])} MiB RSS) against {mib(today_etcd['pss'])} MiB Pss "
                 f"({mib(today_etcd['rss'])} MiB RSS) for {names} + etcd: "
                 f"{today_etcd['pss'] / ours_sum['pss']:.1f}× less by Pss, "
                 f"{today_etcd['rss'] / ours_sum['rss']:.1f}× less by RSS. Without etcd (the same program on "
                 f"both sides): `pgpilot run` + `fence-guard` {mib(sidecar['pss'])} MiB Pss "
                 f"({mib(sidecar['rss'])} MiB RSS) against {mib(today['pss'])} MiB Pss ({mib(today['rss'])} MiB RSS) "
                 f"for {names}: {today['pss'] / sidecar['pss']:.1f}× less by Pss, "
                 f"{today['rss'] / sidecar['rss']:.1f}× less by RSS.")
    else:
        ratio = "Our snap's side failed; see below."
    loads = bench.loads
    load_s = load_summary(loads)
    foreign = ", ".join(sorted(bench.foreign)) or "none"
    loaded = (loads and max(loads) > 1.0) or bench.foreign
    minutes = (end - begin).total_seconds() / 60
    snap_line = (f"`{os.path.basename(facts['snap']['path'])}`: **{size / 1048576:.1f} MiB** ({size} bytes)")
    if snap:
        snap_line += (f"; installed on the fixture's machine in {snap['install_s']:.1f} s, member `{snap['leader']}` "
                      f"the running leader {snap['start_to_leader_s']:.1f} s after `snap start`")
    if not pbe:
        ratio += "\n\n" + PGBACKREST_EXPORTER_NOTE
    notes = "".join(f"\n- {n}" for n in bench.notes)
    block = f"""<!-- bench-snap:begin (generated by scripts/bench_snap.py; rerun to replace) -->
Produced by:

```sh
{a.command}
```

- Date: {begin.strftime('%Y-%m-%d %H:%M')}–{end.strftime('%H:%M')} UTC ({minutes:.1f} min), git {facts['git']}.
- Snap: {snap_line}. The current charmed-postgresql snap's file is not compared: it cannot be fetched here.
- Today's roles: {facts['patroni']}, DCS `etcd3`, ttl / loop_wait / retry_timeout {PATRONI_SETTING[1]} / {PATRONI_SETTING[2]} / {PATRONI_SETTING[3]} (its defaults); {facts['exporter']}; {facts['etcd']}; {facts['postgresql']}. Patroni's member was the leader {ref['start_to_leader_s']:.1f} s after its start.
- Machine: {facts['os']}, kernel {facts['kernel']}, nproc {facts['nproc']} ({facts['cpu']}), {facts['memory']} RAM.
- Load during the run: {load_s}. Other processes seen on the machine (at the start, and between the two sides): {foreign}.
  {"**The machine was shared with other engineers' builds and tests: figures taken on a loaded 2-core machine.**" if loaded else ""}

Memory after {a.idle} s idle, each side once ready (VmRSS from /proc/PID/status; Pss, which
counts a shared page once among the processes sharing it, and private = Private_Clean +
Private_Dirty, from /proc/PID/smaps_rollup):

{table}

{ratio}
{notes}
<!-- bench-snap:end -->
"""
    text = (f"snap file: {size / 1048576:.1f} MiB ({size} bytes)\n\n{table}\n\n{ratio}\n\n"
            f"{load_s}; other processes: {foreign}")
    if bench.notes:
        text += "\n\nProblems:" + notes
    return {"block": block, "text": text}


# --------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="work directory (logs, results, the machines)")
    p.add_argument("--snap", help="the charmed-postgresql_*.snap to measure")
    p.add_argument("--idle", type=int, default=60, help="idle seconds before reading memory (default 60)")
    p.add_argument("--base-port", type=int, default=7600,
                   help="Patroni's side on 127.0.0.1: etcd BASE, BASE+1, PostgreSQL BASE+11, REST BASE+61, "
                        "exporters BASE+90, BASE+91 (default 7600)")
    p.add_argument("--pgbackrest-exporter", default=None, help="a pgbackrest_exporter binary (default: on PATH)")
    p.add_argument("--start-timeout", type=int, default=240, help="seconds for Patroni's member to lead")
    p.add_argument("--build-timeout", type=int, default=2400, help="seconds for building the Rust test")
    p.add_argument("--doc", default=None, help="Markdown file whose Snap section receives the results")
    p.add_argument("--command", default=None, help="the command line to print in the report")
    p.add_argument("--keep-data", action="store_true", help="keep the data directories and the snap's machine")
    p.add_argument("--cleanup", action="store_true", help="only stop what a previous run in --dir left running")
    args = p.parse_args()
    if args.cleanup:
        cleanup(os.path.abspath(args.dir))
        return 0
    if os.geteuid() != 0:
        sys.exit("bench_snap.py: run as root (the snap's hooks, PostgreSQL and Patroni need it)")
    if not args.snap or not os.path.isfile(args.snap):
        sys.exit("bench_snap.py: --snap FILE (a charmed-postgresql_*.snap) is required")
    if not os.access(EXPORTER, os.X_OK):
        sys.exit(f"{EXPORTER} missing (Debian: apt-get install prometheus-postgres-exporter)")
    if args.idle < 0:
        sys.exit("--idle must be 0 or more")
    args.command = args.command or " ".join(sys.argv)

    stop_on_signals()
    bench = SnapBench(args)
    rc = 0
    try:
        rc = bench.main()
    except Interrupted:
        bench.log("interrupted")
        rc = 130
    except Exception as e:  # report, then clean up
        bench.log(f"FAILED: {e}")
        rc = 1
    finally:
        bench._halt.set()
        cleanup(bench.dir, log=lambda m: bench.log(m, echo=False))
        if not args.keep_data:
            # Logs stay; etcd's data, PostgreSQL's and the snap's machine go.
            for path in [os.path.join(bench.dir, "etcd"), os.path.join(bench.dir, MACHINE)] + \
                    glob.glob(os.path.join(bench.dir, PATRONI_DATA_GLOB)):
                shutil.rmtree(path, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
