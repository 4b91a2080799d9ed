#!/usr/bin/python3
"""Failover benchmark: pgpilot against Patroni 3 on the same machine.

Driven by scripts/bench-failover.sh (which installs Patroni, builds pgpilot and
cleans up on exit); it can also be run directly as root:

    /usr/bin/python3 scripts/bench_failover.py --dir /tmp/bench --pgpilot target/release/pgpilot [--quick]

It starts its own etcd on 127.0.0.1 and, one after the other, a 3-member cluster
of pgpilot and of Patroni for each timing setting (Patroni's defaults 30/10/10 and
pgpilot's 10/2/3). Against each cluster a writer does one autocommit INSERT every
50 ms into the member answering GET /primary 200, each operation (connect +
insert) limited to 2 s by closing the socket (never a cancel request), and logs
every acknowledged insert with its time and member. Scenarios, each run --runs
times:

  node-death     SIGKILL of the leader's sidecar (and pgpilot's fence-guard) and
                 postmaster, back to back; kill -> first ack by another member
  graceful-stop  SIGTERM of the leader's sidecar; last ack on the old leader ->
                 first ack on the new one
  switchover     `pgpilot ctl switchover --force` / `patronictl switchover --force`;
                 last ack on the old leader -> first ack on the new one
  pg-crash       SIGKILL of the leader's postmaster only; kill -> first ack after
                 the writes started failing (on any member)
  etcd-cut       the leader's etcd traffic blackholed for ttl + 15 s, then healed
                 (scripts/bench_partition.py: per-member etcd proxies, a read prober
                 on the old leader, the figures and their own block in the doc)

After each run the cluster is healed (killed or stopped members started again,
wait until one primary streams to two replicas) and the acknowledged ids are
looked up on the leader: missing ones are lost rows.

The members, the writer and the cluster are in scripts/bench_cluster.py, the
etcd-cut scenario in scripts/bench_partition.py. Everything it starts is
recorded in DIR/pids.jsonl (pid + start time) and stopped by pid at the end;
`--cleanup DIR` stops whatever a killed run left behind. The etcd proxies are
threads of this process and end with it.
"""

import argparse
import datetime
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

import bench_partition as partition
from bench_cluster import (
    DATA_GLOB, OP_TIMEOUT, PG_BIN, Cluster, Writer, http_status, read_probe,
)
from benchlib import (
    EventLog, Interrupted, Registry, cmdline, guards_under, kill, ours_still,
    load1, load_summary, machine, others_running, postmasters_under, sleep, stop_etcd, stop_group,
    stop_on_signals, utcnow, wait_gone, write_doc_block,
)

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover
    sys.exit("bench_failover.py: psycopg2 missing (Debian: apt-get install python3-psycopg2)")

SETTINGS = [
    # name, ttl, loop_wait, retry_timeout
    ("patroni-defaults", 30, 10, 10),
    ("pgpilot-defaults", 10, 2, 3),
]
TOOLS = ["pgpilot", "patroni"]
SCENARIOS = ["node-death", "graceful-stop", "switchover", "pg-crash", partition.SCENARIO]
SCENARIO_TITLES = {
    "node-death": "(1) node death: SIGKILL sidecar + postmaster -> first write on new leader",
    "graceful-stop": "(2) graceful stop (SIGTERM) of leader's sidecar: write gap",
    "switchover": "(3) switchover (ctl --force): write gap",
    "pg-crash": "(4) PostgreSQL crash (SIGKILL postmaster), sidecar alive: until writes resume",
}
TOOL_TITLES = {"pgpilot": "pgpilot", "patroni": "Patroni"}

T0_WALL = time.time()
T0_MONO = time.monotonic()


def wall(mono):
    """Wall-clock time (UTC, ms) of a monotonic instant, to match the members' logs."""
    t = T0_WALL + (mono - T0_MONO)
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


# --------------------------------------------------------------------------- processes


def cleanup(dir, log=print):
    """Stop, by pid, everything recorded in DIR/pids.jsonl, then the postmasters and guards under DIR."""
    entries = [e for e in Registry(dir).entries() if ours_still(e)]
    members = [e["pid"] for e in entries if e["what"] != "etcd"]
    etcd = [e["pid"] for e in entries if e["what"] == "etcd"]
    stop_group(members, 45, log, label="member ")
    for pid in postmasters_under(dir, DATA_GLOB) + guards_under(dir):
        log(f"cleanup: SIGQUIT leftover pid {pid} ({' '.join(cmdline(pid))[:80]})")
        kill(pid, signal.SIGQUIT)
    for pid in postmasters_under(dir, DATA_GLOB) + guards_under(dir):
        if not wait_gone([pid], 10):
            kill(pid, signal.SIGKILL)
    stop_etcd(etcd, log)


# --------------------------------------------------------------------------- helpers


def free_port(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def run_out(args, **kw):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30, **kw).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def read_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])  # kB
    except OSError:
        pass
    return None


def read_pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        # A private copy: the shared target/ may be rebuilt by someone else during the run.
        os.makedirs(os.path.join(self.dir, "bin"), exist_ok=True)
        self.pgpilot = os.path.join(self.dir, "bin", "pgpilot")
        shutil.copy2(os.path.abspath(args.pgpilot), self.pgpilot)
        with open(self.pgpilot, "rb") as f:
            self.pgpilot_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        self.pgpilot_built = datetime.datetime.fromtimestamp(
            os.path.getmtime(os.path.abspath(args.pgpilot)), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.registry = Registry(self.dir)
        self.log = EventLog(os.path.join(self.dir, "bench.log"))
        self.base_port = args.base_port
        self.etcd_port = args.base_port
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd = None
        self.results = {}  # (tool, setting, scenario) -> list of run dicts
        self.rss = {}  # tool -> list of member dicts
        self.notes = []
        self.load_samples = []
        self.foreign_seen = set()
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_minutes * 60
        self.id_seq = 0
        self.switchover_mode = None
        self.rng = random.Random(args.seed)

    # -- machine facts
    def sample_load(self):
        load = load1()
        if load is not None:
            self.load_samples.append(load)
        # Other people's PostgreSQL / pgpilot / etcd processes (tests running on the machine).
        self.foreign_seen |= others_running(self.dir, ("postgres", "pgpilot", "etcd", "cargo", "rustc"), "pgpilot")

    def versions(self):
        git = run_out(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "describe", "--always", "--dirty"])
        return {
            "pgpilot": f"{run_out([self.pgpilot, '--version'])} (git {git}, release build of "
                       f"{self.pgpilot_built}, sha256 {self.pgpilot_sha}…)",
            "patroni": f"{run_out(['/usr/bin/patroni', '--version'])} "
                       f"(Debian {run_out(['dpkg-query', '-W', '-f=${Version}', 'patroni'])})",
            "postgresql": run_out([os.path.join(PG_BIN, "postgres"), "--version"]),
            "etcd": run_out(["etcd", "--version"]).splitlines()[0] if run_out(["etcd", "--version"]) else "?",
            "python3-psycopg2": psycopg2.__version__.split()[0],
            **machine(),
        }

    # -- etcd
    def start_etcd(self):
        data = os.path.join(self.dir, "etcd")
        peer = f"http://127.0.0.1:{self.etcd_port + 1}"
        logf = open(os.path.join(self.dir, "etcd.log"), "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        self.etcd = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", data,
             "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bench={peer}", "--initial-cluster-token", f"bench-{os.getpid()}",
             "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.dir, env=env, start_new_session=True)
        logf.close()
        self.registry.add(self.etcd.pid, "etcd")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, _ = http_status("127.0.0.1", self.etcd_port, "/health", timeout=1)
            if status == 200:
                self.log(f"etcd up on {self.etcd_url} (pid {self.etcd.pid})")
                return
            if self.etcd.poll() is not None:
                break
            sleep(0.2)
        raise RuntimeError(f"etcd did not start; see {self.dir}/etcd.log")

    # -- switchover command
    def switchover_available(self, cluster, leader):
        """ctl switchover if the binary has it; else POST /switchover; else None."""
        if self.switchover_mode is None:
            r = subprocess.run([self.pgpilot, "ctl", "switchover", "--help"], capture_output=True, text=True)
            self.switchover_mode = "ctl" if r.returncode == 0 else "rest"
            self.log(f"pgpilot switchover through: {self.switchover_mode}")
        return self.switchover_mode

    def start_switchover(self, cluster, leader):
        if cluster.tool == "patroni":
            args = ["/usr/bin/patronictl", "-c", leader.config_path, "switchover", "--force"]
        elif self.switchover_available(cluster, leader) == "ctl":
            args = [self.pgpilot, "ctl", "-c", leader.config_path, "switchover", "--force"]
        else:
            args = [sys.executable, "-c",
                    "import http.client,json,sys\n"
                    f"c=http.client.HTTPConnection('127.0.0.1',{leader.api_port},timeout=60)\n"
                    f"c.request('POST','/switchover',json.dumps({{'leader':'{leader.name}'}}),"
                    "{'Content-Type':'application/json'})\n"
                    "r=c.getresponse();b=r.read().decode();print(r.status,b)\n"
                    "sys.exit(0 if r.status==200 else (3 if r.status in (404,405,501) else 1))\n"]
        out = open(os.path.join(self.dir, "switchover.log"), "a")
        out.write(f"\n===== {utcnow().isoformat()} [{cluster.label}] {' '.join(args)}\n")
        out.flush()
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        out.close()
        self.registry.add(p.pid, "switchover command")
        return p

    # -- one run
    def run_once(self, cluster, scenario, run_no, runs):
        c = cluster
        tag = f"[{c.label}] {scenario} run {run_no}/{runs}"
        leader = c.wait_healthy(self.args.heal_timeout)
        if leader is None:
            raise ClusterBroken(f"{tag}: cluster not healthy (one primary streaming to two replicas) "
                                f"within {self.args.heal_timeout} s")
        self.sample_load()
        self.id_seq += 1
        id_base = self.id_seq * 1_000_000
        if scenario == "node-death":
            wait_limit = 2 * c.ttl + 30
        elif scenario == "pg-crash":
            wait_limit = 2 * c.ttl + 60
        elif scenario == partition.SCENARIO:
            wait_limit = partition.cut_seconds(c.ttl) + partition.STREAM_BOUND + 5
        else:
            wait_limit = c.ttl + 60
        if scenario in ("node-death", "pg-crash", partition.SCENARIO):
            # These figures depend on where the fault falls in the lease-renewal and HA-loop periods.
            # Runs start right after a heal, i.e. in step with those periods: spread the faults over
            # one period (stratified: run k of n falls in the k-th n-th of it).
            period = max(c.loop_wait, c.ttl / 4)
            delay = period * ((run_no - 1) + self.rng.random()) / runs
            self.log(f"{tag}: waiting {delay:.2f} s (phase spread over {period:g} s) before the fault", echo=False)
            sleep(delay)
        writer = Writer(c, id_base, max_seconds=wait_limit + 15)
        writer.start()
        # Baseline: the writer must be writing on the leader before the fault.
        t_base = time.monotonic()
        while True:
            acks, _ = writer.snapshot()
            if sum(1 for a in acks if a[2] == leader.name) >= 20:
                break
            if time.monotonic() - t_base > 15:
                writer.stop()
                writer.join()
                raise ClusterBroken(f"{tag}: writer could not write on {leader.name} for 15 s")
            sleep(0.05)
        old = leader.name
        result = {"run": run_no, "old_leader": old, "value": None, "lost": None, "note": ""}
        if scenario == partition.SCENARIO:
            t0 = partition.run_cut(self, c, leader, writer, tag, result, wall,
                                   lambda: read_probe(leader.pg_port, c.su_password))
            acks, fails = writer.snapshot()
            self.write_writer_log(c, scenario, run_no, t0, old, acks, fails)
        else:
            t0, acks, fails = self.fault(c, leader, writer, scenario, tag, result, wait_limit, run_no)
        t_heal = time.monotonic()
        final = c.wait_healthy(self.args.heal_timeout)
        if final is None:
            result["note"] += f"cluster did not heal within {self.args.heal_timeout} s; "
            self.log(f"{tag}: cluster did not heal within {self.args.heal_timeout} s")
        else:
            acked = {a[1] for a in acks}
            try:
                present = c.present_ids(final, id_base, id_base + 999_999)
                lost = sorted(acked - present)
                result["lost"] = len(lost)
                if lost:
                    by_member = {}
                    for a in acks:
                        if a[1] in lost:
                            by_member.setdefault(a[2], []).append(a)
                    desc = "; ".join(f"{len(v)} acked by {k} (ids {v[0][1] - id_base}..{v[-1][1] - id_base}, "
                                     f"acked {wall(v[0][0])}..{wall(v[-1][0])}, "
                                     f"{(v[0][0] - t0) * 1000:+.0f}..{(v[-1][0] - t0) * 1000:+.0f} ms "
                                     f"from the fault)" for k, v in by_member.items())
                    result["note"] += f"lost: {desc}; "
                    self.log(f"{tag}: LOST {len(lost)} acknowledged rows: {desc}")
            except psycopg2.Error as e:
                result["note"] += f"lost-row check failed: {e}; "
            self.log(f"{tag}: healed in {time.monotonic() - t_heal:.1f} s, leader {final.name}, "
                     f"{len(acks)} acks, {len(fails)} failed operations, lost {result['lost']}", echo=False)
        result["acks"] = len(acks)
        result["failed_ops"] = len(fails)
        result["t0"] = wall(t0)
        if final is None:
            raise ClusterBroken(f"{tag}: cluster did not heal", result)
        return result

    def write_writer_log(self, c, scenario, run_no, t0, old, acks, fails):
        """The writer's log: every acknowledged insert and every failed operation."""
        with open(os.path.join(c.dir, f"writer-{scenario}-{run_no}.tsv"), "w") as f:
            f.write(f"# fault at {wall(t0)} UTC on {old}; columns: what, time (UTC), ms from the fault, "
                    f"id or member, member or error\n")
            events = [(t, "ack", f"{i}\t{m}") for t, i, m in acks] + \
                     [(t, "fail", f"{m or '-'}\t{e}") for t, m, e in fails]
            for t, what, rest in sorted(events):
                f.write(f"{what}\t{wall(t)}\t{(t - t0) * 1000:+.0f}\t{rest}\n")

    def fault(self, c, leader, writer, scenario, tag, result, wait_limit, run_no):
        """The fault of SCENARIO (not etcd-cut), its figure into RESULT, and the restart of what it stopped."""
        old = leader.name
        ctl_proc = None
        killed = []
        t0 = time.monotonic()
        if scenario == "node-death":
            pids = [("sidecar", leader.sidecar_pid())]
            if c.tool == "pgpilot":
                pids.append(("fence-guard", leader.guard_pid()))
            pids.append(("postmaster", leader.postmaster_pid()))
            t0 = time.monotonic()
            for what, pid in pids:
                if pid:
                    kill(pid, signal.SIGKILL)
                    killed.append(f"{what} {pid}")
            self.log(f"{tag}: SIGKILL {old}: {', '.join(killed)} at {wall(t0)}")
        elif scenario == "graceful-stop":
            t0 = time.monotonic()
            kill(leader.sidecar_pid(), signal.SIGTERM)
            self.log(f"{tag}: SIGTERM {old} sidecar pid {leader.proc.pid} at {wall(t0)}")
        elif scenario == "switchover":
            t0 = time.monotonic()
            ctl_proc = self.start_switchover(c, leader)
            self.log(f"{tag}: switchover from {old} started at {wall(t0)} (pid {ctl_proc.pid})")
        elif scenario == "pg-crash":
            pm = leader.postmaster_pid()
            t0 = time.monotonic()
            kill(pm, signal.SIGKILL)
            self.log(f"{tag}: SIGKILL {old} postmaster pid {pm} at {wall(t0)}")

        # Wait for the figure.
        deadline = t0 + wait_limit
        measured = None
        while time.monotonic() < deadline:
            acks, fails = writer.snapshot()
            measured = measure(scenario, old, t0, acks, fails)
            if measured is not None:
                break
            if ctl_proc is not None and ctl_proc.poll() == 3:
                break
            sleep(0.05)
        sleep(1.0)  # a little more writing after the figure
        writer.stop()
        writer.join(timeout=OP_TIMEOUT + 5)
        acks, fails = writer.snapshot()
        measured = measure(scenario, old, t0, acks, fails)
        self.write_writer_log(c, scenario, run_no, t0, old, acks, fails)
        if ctl_proc is not None and ctl_proc.poll() == 3 and measured is None:
            result["note"] = "n/a (not built)"
            self.log(f"{tag}: POST /switchover is not built: n/a")
        elif measured is None:
            result["note"] = f"no write acknowledged within {wait_limit} s"
            self.log(f"{tag}: TIMEOUT after {wait_limit} s")
        else:
            value, new, t_first, t_last_old = measured
            result.update(value=round(value, 3), new_leader=new)
            extra = f", last ack on {old} at {wall(t_last_old)}" if t_last_old else ""
            self.log(f"{tag}: {value:.2f} s (first ack on {new} at {wall(t_first)}{extra})")
            overlap = [a for a in acks if a[2] == old and a[0] > t_first] if new != old else []
            if overlap:
                result["note"] += f"{len(overlap)} acks on old leader {old} after the first ack on {new}; "
        # Heal: bring back what was killed or stopped, then wait for a healthy cluster.
        if ctl_proc is not None:
            try:
                ctl_proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                kill(ctl_proc.pid, signal.SIGKILL)
                ctl_proc.wait()
            self.log(f"{tag}: switchover command exited {ctl_proc.returncode}", echo=False)
        if scenario in ("node-death", "graceful-stop"):
            if not leader.wait_exit(90):
                self.log(f"{tag}: {old} sidecar still running 90 s after SIGTERM: SIGKILL")
                result["note"] += "sidecar needed SIGKILL after 90 s; "
                kill(leader.proc.pid, signal.SIGKILL)
                leader.wait_exit(10)
            if scenario == "graceful-stop":
                self.log(f"{tag}: {old} sidecar exited {leader.proc.returncode} "
                         f"{time.monotonic() - t0:.1f} s after SIGTERM", echo=False)
            for pid in [leader.postmaster_pid()]:
                if pid and wait_gone([pid], 15) is False:
                    kill(pid, signal.SIGKILL)
            leader.start()
        return t0, acks, fails

    def measure_rss(self, cluster):
        idle = self.args.rss_idle
        self.log(f"[{cluster.label}] RSS: idling {idle} s")
        sleep(idle)
        rows = []
        for m in cluster.members:
            row = {"member": m.name}
            pid = m.sidecar_pid()
            row["sidecar_rss_kb"] = read_status(pid, "VmRSS") if pid else None
            row["sidecar_pss_kb"] = read_pss(pid) if pid else None
            if cluster.tool == "pgpilot":
                g = m.guard_pid()
                row["guard_rss_kb"] = read_status(g, "VmRSS") if g else None
                row["guard_pss_kb"] = read_pss(g) if g else None
            rows.append(row)
        self.rss[cluster.tool] = {"setting": cluster.label, "idle_s": idle, "members": rows}
        self.log(f"[{cluster.label}] RSS: {json.dumps(rows)}")

    def run_cluster(self, index, tool, setting):
        c = Cluster(self, index, tool, setting)
        runs = self.args.runs
        self.log(f"===== [{c.label}] starting 3 members in {c.dir}")
        try:
            c.start()
            leader = c.wait_healthy(self.args.heal_timeout)
            if leader is None:
                raise ClusterBroken(f"[{c.label}] did not become healthy within {self.args.heal_timeout} s")
            c.ensure_table(leader)
            self.log(f"[{c.label}] healthy, leader {leader.name}")
            if setting[0] == self.args.rss_setting and self.args.rss_idle > 0 and main_scenarios(self.args):
                self.measure_rss(c)
            for scenario in self.args.scenarios:
                key = (tool, setting[0], scenario)
                self.results.setdefault(key, [])
                for r in range(1, runs + 1):
                    if time.monotonic() > self.deadline:
                        self.results[key].append({"run": r, "value": None, "lost": None,
                                                  "note": "skipped: time budget spent"})
                        continue
                    try:
                        res = self.run_once(c, scenario, r, runs)
                    except ClusterBroken as e:
                        if len(e.args) > 1:
                            self.results[key].append(e.args[1])
                        raise
                    self.results[key].append(res)
                    self.save()
        except ClusterBroken as e:
            self.log(f"[{c.label}] ABANDONED: {e.args[0]}")
            self.notes.append(f"{c.label}: {e.args[0]}; its remaining runs were not made")
        finally:
            self.log(f"[{c.label}] stopping")
            c.stop(remove_data=not self.args.keep_data)
            self.save()

    def save(self):
        out = {
            "results": {" | ".join(k): v for k, v in self.results.items()},
            "rss": self.rss,
            "notes": self.notes,
        }
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(out, f, indent=1)

    def main(self):
        begin = utcnow()
        facts = self.versions()
        self.sample_load()
        self.log(f"bench dir {self.dir}; versions {json.dumps(facts)}")
        for port in [self.etcd_port, self.etcd_port + 1] + \
                [self.base_port + off for off in range(10, 100)]:
            if not free_port(port):
                raise SystemExit(f"port {port} on 127.0.0.1 is in use: choose another --base-port")
        self.start_etcd()
        index = 0
        for setting in SETTINGS:
            if setting[0] not in self.args.settings:
                continue
            for tool in self.args.tools:
                self.run_cluster(index, tool, setting)
                index += 1
        end = utcnow()
        self.sample_load()
        blocks = []
        if main_scenarios(self.args):
            report = render(self, facts, begin, end)
            print(f"\n{report['table']}\n\n{report['rss']}")
            blocks.append(report["block"])
            if self.args.doc:
                write_doc(self.args.doc, report["block"])
                self.log(f"wrote the Failover section of {self.args.doc}")
        if partition.SCENARIO in self.args.scenarios:
            cut = partition.render_cut(self.results, [s for s in SETTINGS if s[0] in self.args.settings],
                                       self.args.tools, TOOL_TITLES, run_header(self, facts, begin, end))
            print(f"\n{cut['table']}")
            blocks.append(cut["block"])
            if self.args.doc:
                write_doc_block(self.args.doc, partition.MARKER, "Failover: leader cut from etcd", "", cut["block"])
                self.log(f"wrote the etcd-cut block of {self.args.doc}")
        with open(os.path.join(self.dir, "report.md"), "w") as f:
            f.write("\n".join(blocks))
        self.log(f"logs and results in {self.dir}")


class ClusterBroken(Exception):
    pass


def main_scenarios(args):
    """The chosen scenarios whose figures go into the main block (all but etcd-cut, which has its own)."""
    return [s for s in args.scenarios if s != partition.SCENARIO]


def measure(scenario, old, t0, acks, fails):
    """The scenario's figure from the writer's log, or None while it is not there yet.

    Returns (seconds, new member, time of first ack counted, last ack on old leader or None)."""
    if scenario == "node-death":
        for t, _, m in acks:
            if t > t0 and m != old:
                return t - t0, m, t, None
        return None
    if scenario in ("graceful-stop", "switchover"):
        first = next(((t, m) for t, _, m in acks if t > t0 and m != old), None)
        if first is None:
            return None
        last_old = max((t for t, _, m in acks if m == old and t < first[0]), default=None)
        if last_old is None:
            return None
        return first[0] - last_old, first[1], first[0], last_old
    if scenario == "pg-crash":
        t_fail = next((t for t, _, _ in fails if t > t0), None)
        if t_fail is None:
            return None
        for t, _, m in acks:
            if t > t_fail:
                return t - t0, m, t, None
        return None
    raise ValueError(scenario)


# --------------------------------------------------------------------------- report


def fmt_cell(runs):
    values = [r["value"] for r in runs if r.get("value") is not None]
    if not runs:
        return "—", "—"
    if not values:
        note = runs[0].get("note") or "no result"
        return note.rstrip("; "), "—"
    med = statistics.median(values)
    cell = f"{med:.2f} s ({min(values):.2f}–{max(values):.2f})"
    if len(values) < len(runs):
        cell += f" [{len(values)}/{len(runs)} runs]"
    lost = [r["lost"] for r in runs if r.get("value") is not None]
    if any(x is None for x in lost):
        lost_s = "?"
    else:
        total = sum(lost)
        lost_s = f"{total}" if total == 0 else f"{total} ({sum(1 for x in lost if x)}/{len(lost)} runs)"
    return cell, lost_s


def run_header(bench, facts, begin, end):
    """The command, date, versions, machine and load of a run, for the top of a generated block."""
    args = bench.args
    loads = bench.load_samples
    load_s = load_summary(loads)
    foreign = ", ".join(sorted(bench.foreign_seen)) or "none"
    minutes = (end - begin).total_seconds() / 60
    runs_desc = f"{args.runs} run{'s' if args.runs != 1 else ''} per scenario"
    return f"""Produced by:

```sh
{args.command}
```

- Date: {begin.strftime('%Y-%m-%d %H:%M')}–{end.strftime('%H:%M')} UTC ({minutes:.1f} min, {runs_desc}).
- pgpilot: {facts['pgpilot']}; Patroni: {facts['patroni']}, DCS `etcd3`; {facts['postgresql']}; {facts['etcd']}; psycopg2 {facts['python3-psycopg2']}.
- Machine: {facts['os']}, kernel {facts['kernel']}, nproc {facts['nproc']} ({facts['cpu']}), {facts['memory']} RAM.
- Load during the run: {load_s}. Other processes seen on the machine during the run: {foreign}.
  {"**The machine was shared with other engineers' builds and test runs: the figures were taken on a loaded 2-core machine.**" if (loads and max(loads) > 1.0) or bench.foreign_seen else ""}"""


def render(bench, facts, begin, end):
    args = bench.args
    lines = []
    lines.append("| scenario | ttl / loop_wait / retry_timeout | pgpilot: median (min–max) | pgpilot lost rows "
                 "| Patroni: median (min–max) | Patroni lost rows |")
    lines.append("|---|---|---|---|---|---|")
    for scenario in main_scenarios(args):
        for name, ttl, lw, rt in SETTINGS:
            if name not in args.settings:
                continue
            cells = []
            for tool in TOOLS:
                if tool not in args.tools:
                    cells += ["not run", "—"]
                    continue
                cells += list(fmt_cell(bench.results.get((tool, name, scenario), [])))
            setting = f"{ttl} / {lw} / {rt} ({'Patroni' if name == 'patroni-defaults' else 'pgpilot'}'s defaults)"
            lines.append(f"| {SCENARIO_TITLES[scenario]} | {setting} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    runs_lines = ["| tool | setting | scenario | runs (s; lost rows; new leader) |", "|---|---|---|---|"]
    for (tool, name, scenario), runs in bench.results.items():
        if scenario == partition.SCENARIO:
            continue
        setting = next(f"{t}/{l}/{r}" for n, t, l, r in SETTINGS if n == name)
        parts = []
        for r in runs:
            if r.get("value") is None:
                parts.append(f"— ({(r.get('note') or '').rstrip('; ')})")
            else:
                s = f"{r['value']:.2f} ({r['lost']}; {r['old_leader']}→{r.get('new_leader')})"
                if r.get("note"):
                    s += f" [{r['note'].rstrip('; ')}]"
                parts.append(s)
        runs_lines.append(f"| {TOOL_TITLES[tool]} | {setting} | {scenario} | {', '.join(parts)} |")
    runs_table = "\n".join(runs_lines)

    rss_lines = ["| tool | measured on | member | RSS | Pss |", "|---|---|---|---|---|"]
    for tool in TOOLS:
        info = bench.rss.get(tool)
        if not info:
            continue
        for row in info["members"]:
            if tool == "pgpilot":
                s, g = row.get("sidecar_rss_kb"), row.get("guard_rss_kb")
                sp, gp = row.get("sidecar_pss_kb"), row.get("guard_pss_kb")
                tot = (s or 0) + (g or 0)
                totp = (sp or 0) + (gp or 0)
                rss = (f"{tot / 1024:.1f} MiB (`pgpilot run` {s / 1024 if s else 0:.1f} + "
                       f"`fence-guard` {g / 1024 if g else 0:.1f})")
                pss = f"{totp / 1024:.1f} MiB"
            else:
                s, sp = row.get("sidecar_rss_kb"), row.get("sidecar_pss_kb")
                rss = f"{(s or 0) / 1024:.1f} MiB (`patroni`)"
                pss = f"{(sp or 0) / 1024:.1f} MiB"
            rss_lines.append(f"| {TOOL_TITLES[tool]} | {info['setting']}, after {info['idle_s']} s idle "
                             f"| {row['member']} | {rss} | {pss} |")
    rss_table = "\n".join(rss_lines)

    block = f"""<!-- bench-failover:begin (generated by scripts/bench_failover.py; rerun to replace) -->
{run_header(bench, facts, begin, end)}

Seconds, median (min–max) over the runs; lost rows = acknowledged inserts missing on the leader after
the cluster healed, summed over the runs.

{table}

Every run (seconds; lost rows; old → new leader):

{runs_table}

Memory after {args.rss_idle} s idle, same run (VmRSS from /proc/PID/status; Pss from
/proc/PID/smaps_rollup counts shared pages once):

{rss_table}
{"" if not bench.notes else chr(10) + "Problems during the run:" + chr(10) + chr(10) + chr(10).join("- " + n for n in bench.notes) + chr(10)}
<!-- bench-failover:end -->
"""
    return {"table": table, "rss": rss_table, "block": block}


DOC_HEAD = """# Benchmarks

Figures measured on real processes with the scripts in `scripts/`. Machines are
noisy: compare figures taken in the same run only.
"""

FAILOVER_INTRO = """## Failover

`scripts/bench-failover.sh` compares pgpilot with Patroni 3 (Debian's
`patroni` package, etcd3 DCS) on one machine: the same etcd, the same
PostgreSQL 15 binaries and the same `ttl` / `loop_wait` / `retry_timeout`,
once at Patroni's defaults (30 / 10 / 10) and once at pgpilot's (10 / 2 / 3).

"""


def write_doc(path, block):
    """Replace the generated block of the Failover section; create the file or the section if needed."""
    begin, end = "<!-- bench-failover:begin", "<!-- bench-failover:end -->"
    text = open(path).read() if os.path.exists(path) else DOC_HEAD
    if begin in text and end in text:
        a = text.index(begin)
        b = text.index(end) + len(end)
        text = text[:a] + block.strip() + text[b:]
    elif "\n## Failover" in text:
        # Put the block right after the section's first paragraph block (before the next section).
        a = text.index("\n## Failover")
        nxt = text.find("\n## ", a + 1)
        nxt = len(text) if nxt < 0 else nxt
        text = text[:nxt].rstrip() + "\n\n" + block.strip() + "\n" + text[nxt:]
    else:
        text = text.rstrip() + "\n\n" + FAILOVER_INTRO + block.strip() + "\n"
    with open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="work directory (logs, data, results)")
    p.add_argument("--pgpilot", required=True, help="the pgpilot binary")
    p.add_argument("--quick", action="store_true", help="1 run per scenario (smoke test)")
    p.add_argument("--runs", type=int, default=None, help="runs per scenario (default 5, 1 with --quick)")
    p.add_argument("--base-port", type=int, default=7400, help="ports BASE..BASE+99 on 127.0.0.1 (default 7400)")
    p.add_argument("--tools", default="pgpilot,patroni")
    p.add_argument("--settings", default="patroni-defaults,pgpilot-defaults")
    p.add_argument("--scenarios", default=",".join(SCENARIOS[:4]),
                   help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all but {partition.SCENARIO}, "
                        "which has its own block in the doc: run it with --scenarios etcd-cut)")
    p.add_argument("--rss-idle", type=int, default=60, help="idle seconds before reading RSS (0: skip)")
    p.add_argument("--rss-setting", default="pgpilot-defaults", help="in which setting's clusters to read RSS")
    p.add_argument("--heal-timeout", type=int, default=180)
    p.add_argument("--budget-minutes", type=float, default=40,
                   help="runs that would start after this many minutes are skipped (default 40)")
    p.add_argument("--seed", type=int, default=None, help="seed of the fault-phase spread (default: random)")
    p.add_argument("--doc", default=None, help="Markdown file whose Failover section receives the results")
    p.add_argument("--keep-data", action="store_true", help="keep the data directories")
    p.add_argument("--command", default=None, help="the command line to print in the report")
    p.add_argument("--cleanup", action="store_true", help="only stop what a previous run in --dir left running")
    args = p.parse_args()
    if args.cleanup:
        cleanup(os.path.abspath(args.dir))
        return
    if os.geteuid() != 0:
        sys.exit("bench_failover.py: run as root (PostgreSQL and Patroni run as the postgres user)")
    args.runs = args.runs or (1 if args.quick else 5)
    args.tools = [t for t in args.tools.split(",") if t]
    args.settings = [s for s in args.settings.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for s in args.scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s}; known: {', '.join(SCENARIOS)}")
    args.command = args.command or " ".join(sys.argv)

    stop_on_signals()
    bench = Bench(args)
    try:
        bench.main()
    except Interrupted:
        bench.log("interrupted")
    finally:
        cleanup(bench.dir, log=lambda m: bench.log(m, echo=False))
        if not args.keep_data:
            # Logs stay; etcd's data and the copy of the binary go.
            shutil.rmtree(os.path.join(bench.dir, "etcd"), ignore_errors=True)
            shutil.rmtree(os.path.join(bench.dir, "bin"), ignore_errors=True)


if __name__ == "__main__":
    main()
