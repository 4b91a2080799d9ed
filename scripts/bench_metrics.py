#!/usr/bin/python3
"""Metrics benchmark: pgpilot's GET /metrics against Debian's prometheus-postgres-exporter.

Driven by scripts/bench-metrics.sh (which installs the exporter, builds pgpilot
and cleans up on exit); it can also be run directly as root:

    /usr/bin/python3 scripts/bench_metrics.py --dir /tmp/bench --pgpilot target/release/pgpilot

Python 3 standard library only; SQL goes through psql. It starts, on 127.0.0.1:

- a private etcd and ONE pgpilot member (`pgpilot run`), so PostgreSQL 15 runs
  under pgpilot; pgpilot monitors as the role `pgpilot_mon` (pg_monitor);
- DATABASES databases of TABLES tables each (ROWS rows, a primary key, ANALYZE);
- prometheus-postgres-exporter against the same PostgreSQL over the unix
  socket, once per mode, each with its own pg_monitor role so its sessions can
  be told apart by user name:
    default        no flags (what the charm runs), role pgexp
    autodiscover   --auto-discover-databases, role pgexp_ad
    tables         --auto-discover-databases and the pg_stat_user_tables /
                   pg_statio_user_tables queries of Debian's example
                   queries.yaml (per-table statistics of every database, as
                   pgpilot serves them), role pgexp_tab

Then, after IDLE seconds of idling, it reads the memory of every process, and
scrapes each endpoint in turn: WARMUP scrapes, then up to SCRAPES scrapes (and
at most TIME_LIMIT seconds), one after the other, each on a new HTTP connection
without compression. Per endpoint: latency (median, p99, max), bytes and series
per scrape, databases seen, the client backends its role holds during the loop
(pg_stat_activity, sampled every 0.2 s) and after it, the sessions it opens
(log_connections lines of its role, and pg_stat_database.sessions summed over
all databases), the memory of its process and of its backends.

Everything it starts is recorded in DIR/pids.jsonl (pid + start time) and stopped
by pid at the end; `--cleanup` stops whatever a killed run left behind.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import pwd
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

from benchlib import (
    STOP, EventLog, Interrupted, Registry, alive, cmdline, fence_guard_of, guards_under, kill, ours_still,
    load1, load_summary, machine, others_running, password, postmasters_under, sleep, stop_etcd, stop_group,
    stop_on_signals, utcnow, wait_gone,
)

PG_BIN = "/usr/lib/postgresql/15/bin"
EXPORTER = "/usr/bin/prometheus-postgres-exporter"
EXAMPLE_QUERIES = "/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml"
SUPERUSER = "postgres"
PGPILOT_ROLE = "pgpilot_mon"
# mode -> (role, extra flags, title)
EXPORTER_MODES = {
    "default": ("pgexp", [], "postgres_exporter, no flags (the charm's mode)"),
    "autodiscover": ("pgexp_ad", ["--auto-discover-databases"], "postgres_exporter --auto-discover-databases"),
    "tables": ("pgexp_tab", ["--auto-discover-databases", "--extend.query-path={queries}"],
               "postgres_exporter --auto-discover-databases + per-table queries.yaml"),
}
SAMPLE_PERIOD = 0.2
DATA_GLOB = "*/data"  # DIR/pg1/data


# --------------------------------------------------------------------------- processes


def cleanup(dir, log=print):
    """Stop, by pid: exporters, then the sidecar (which stops PostgreSQL), leftovers, etcd."""
    entries = [e for e in Registry(dir).entries() if ours_still(e)]
    order = [[e["pid"] for e in entries if e["what"].startswith("exporter")],
             [e["pid"] for e in entries if e["what"] == "pgpilot"]]
    for group in order:
        stop_group(group, 60, log, show_cmdline=True)
    for pid in postmasters_under(dir, DATA_GLOB) + guards_under(dir):
        log(f"cleanup: SIGQUIT leftover pid {pid} ({' '.join(cmdline(pid))[:80]})")
        kill(pid, signal.SIGQUIT)
        if not wait_gone([pid], 10):
            kill(pid, signal.SIGKILL)
    stop_etcd([e["pid"] for e in entries if e["what"] == "etcd"], log)


# --------------------------------------------------------------------------- small helpers


def free_port():
    """A port the kernel considers free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_out(args, **kw):
    """Standard output, or standard error when the program writes there (postgres_exporter --version)."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=30, **kw)
        return (r.stdout.strip() or r.stderr.strip()) or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def proc_kb(pid, path, key):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory(pid):
    """VmRSS, Pss and private (Private_Clean + Private_Dirty) in kB, or None when gone."""
    if not alive(pid):
        return None
    rss = proc_kb(pid, "status", "VmRSS")
    pss = proc_kb(pid, "smaps_rollup", "Pss")
    pc = proc_kb(pid, "smaps_rollup", "Private_Clean")
    pd = proc_kb(pid, "smaps_rollup", "Private_Dirty")
    if rss is None or pss is None:
        return None
    return {"rss": rss, "pss": pss, "private": (pc or 0) + (pd or 0),
            "threads": proc_kb(pid, "status", "Threads")}


def cpu_ticks(pid):
    """utime + stime of a process in clock ticks, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


TICK = os.sysconf("SC_CLK_TCK")


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(1, -(-len(s) * p // 100))  # ceil
    return s[int(k) - 1]


def mib(kb):
    return "—" if kb is None else f"{kb / 1024:.1f}"


# --------------------------------------------------------------------------- SQL through psql


class SqlError(Exception):
    pass


class Psql:
    """One long-lived psql session fed on stdin: one session for all of the benchmark's own queries,
    so they add no connection of their own to the counts."""

    MARK = "__bench_metrics_end__"

    def __init__(self, socket_dir, port, pw, dbname="postgres"):
        env = dict(os.environ, PGPASSWORD=pw, PGAPPNAME="bench-metrics", PGCONNECT_TIMEOUT="10")
        self.proc = subprocess.Popen(
            [os.path.join(PG_BIN, "psql"), "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=0",
             "-h", socket_dir, "-p", str(port), "-U", SUPERUSER, "-d", dbname],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.buf = b""
        self.lock = threading.Lock()

    def query(self, sql, timeout=120):
        """Rows (lists of strings) of SQL, which must be one statement."""
        with self.lock:
            self.proc.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {self.MARK}\n".encode())
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            fd = self.proc.stdout.fileno()
            while (self.MARK + "\n").encode() not in self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SqlError(f"no answer from psql within {timeout} s to: {sql[:80]}")
                r, _, _ = select.select([fd], [], [], remaining)
                if r:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise SqlError(f"psql exited (code {self.proc.poll()}): {self.buf.decode()[-300:]}")
                    self.buf += chunk
            out, self.buf = self.buf.split((self.MARK + "\n").encode(), 1)
        lines = out.decode().splitlines()
        errors = [ln for ln in lines if "ERROR:" in ln or "FATAL:" in ln]
        if errors:
            raise SqlError(f"{errors[0]} (statement: {sql[:120]})")
        return [ln.split("\t") for ln in lines if ln]

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# --------------------------------------------------------------------------- scraping


def scrape(port, timeout):
    """(seconds, status, body) of one GET /metrics on a new connection, without compression."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "identity"})
        resp = conn.getresponse()
        body = resp.read()
        return time.perf_counter() - t0, resp.status, body
    finally:
        conn.close()


SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
DATNAME = re.compile(r'datname="([^"]*)"')


def describe(body):
    """Series count, pg_up, databases seen in any series and in per-table series."""
    series = 0
    pg_up = None
    any_db, table_db = set(), set()
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        series += 1
        m = SAMPLE_LINE.match(line)
        if not m:
            continue
        name, labels = m.group(1), m.group(2) or ""
        if name == "pg_up":
            pg_up = m.group(3)
        if labels:
            d = DATNAME.search(labels)
            if d:
                any_db.add(d.group(1))
                if name.startswith(("pg_stat_user_tables_", "pg_statio_user_tables_")):
                    table_db.add(d.group(1))
    return {"series": series, "pg_up": pg_up, "databases": len(any_db), "table_databases": len(table_db)}


class Sampler(threading.Thread):
    """Client backends per user name, and the VmRSS of the endpoint's process, every SAMPLE_PERIOD s
    (the backends on the benchmark's psql session)."""

    def __init__(self, psql, users, pid):
        super().__init__(daemon=True)
        self.psql = psql
        self.users = users
        self.pid = pid
        self.peak_rss = 0
        self.halt = threading.Event()
        self.max = {u: 0 for u in users}
        self.pids = {u: set() for u in users}
        self.samples = 0
        self.error = None
        self.loads = []

    def run(self):
        quoted = ",".join(f"'{u}'" for u in self.users)
        sql = (f"SELECT usename, pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
               f"AND usename IN ({quoted})")
        last_load = 0.0
        while not self.halt.is_set():
            try:
                rows = self.psql.query(sql, timeout=30)
            except SqlError as e:
                self.error = str(e)
                return
            counts = {u: 0 for u in self.users}
            for user, pid in rows:
                counts[user] += 1
                self.pids[user].add(int(pid))
            for u, n in counts.items():
                self.max[u] = max(self.max[u], n)
            self.peak_rss = max(self.peak_rss, proc_kb(self.pid, "status", "VmRSS") or 0)
            self.samples += 1
            if time.monotonic() - last_load >= 5:
                last_load = time.monotonic()
                self.loads.append(load1())
            self.halt.wait(SAMPLE_PERIOD)


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.log = EventLog(os.path.join(self.dir, "bench.log"))
        self.registry = Registry(self.dir)
        # A private copy: the shared target/ may be rebuilt by someone else during the run.
        os.makedirs(os.path.join(self.dir, "bin"), exist_ok=True)
        self.pgpilot = os.path.join(self.dir, "bin", "pgpilot")
        shutil.copy2(os.path.abspath(args.pgpilot), self.pgpilot)
        with open(self.pgpilot, "rb") as f:
            self.pgpilot_sha = hashlib.sha256(f.read()).hexdigest()[:12]
        self.pgpilot_built = datetime.datetime.fromtimestamp(
            os.path.getmtime(os.path.abspath(args.pgpilot)), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        self.member_dir = os.path.join(self.dir, "pg1")
        self.data_dir = os.path.join(self.member_dir, "data")
        self.pg_log = os.path.join(self.member_dir, "postgresql.log")
        self.su_password = password()
        self.passwords = {PGPILOT_ROLE: password()}
        self.procs = {}  # name -> Popen
        self.ports = {}
        self.psql = None
        self.loads = []
        self.foreign = set()
        self.results = {"endpoints": [], "memory": {}, "notes": []}

    # -- facts
    def sample_machine(self):
        load = load1()
        if load is not None:
            self.loads.append(load)
        self.foreign |= others_running(self.dir, ("postgres", "pgpilot", "etcd", "cargo", "rustc", "moto_server"))

    def versions(self):
        git = run_out(["git", "-C", os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "describe", "--always", "--dirty"])
        return {
            "pgpilot": f"{run_out([self.pgpilot, '--version'])} (git {git}, release build of "
                       f"{self.pgpilot_built}, sha256 {self.pgpilot_sha}…)",
            "exporter": f"{run_out([EXPORTER, '--version']).splitlines()[0]}"
                        f" (Debian {run_out(['dpkg-query', '-W', '-f=${Version}', 'prometheus-postgres-exporter'])})",
            "postgresql": run_out([os.path.join(PG_BIN, "postgres"), "--version"]),
            "etcd": (run_out(["etcd", "--version"]).splitlines() or ["?"])[0],
            "python": platform.python_version(),
            **machine(),
        }

    # -- processes
    def spawn(self, name, args, log_name, **kw):
        logf = open(os.path.join(self.dir, log_name), "a")
        env = kw.pop("env", None) or {k: v for k, v in os.environ.items()
                                      if not k.startswith(("PGPILOT_", "PG", "ETCD", "DATA_SOURCE"))}
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.dir,
                                env=env, start_new_session=True, **kw)
        logf.close()
        self.registry.add(proc.pid, name)
        self.procs[name] = proc
        self.log(f"started {name} pid {proc.pid}: {' '.join(args)[:160]}", echo=False)
        return proc

    def check_alive(self, name):
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}; see the logs in {self.dir}")

    def start_etcd(self):
        client, peer = self.ports["etcd"], self.ports["etcd_peer"]
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self.spawn("etcd", ["etcd", "--name", "bench", "--data-dir", os.path.join(self.dir, "etcd"),
                            "--listen-client-urls", url, "--advertise-client-urls", url,
                            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                            "--initial-cluster", f"bench={peer_url}",
                            "--initial-cluster-token", f"bench-metrics-{os.getpid()}",
                            "--initial-cluster-state", "new", "--logger", "zap", "--log-level", "warn"],
                   "etcd.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive("etcd")
            if self.http_status(client, "/health") == 200:
                self.log(f"etcd up on {url}")
                return
            sleep(0.2)
        raise RuntimeError(f"etcd did not answer /health within 30 s; see {self.dir}/etcd.log")

    @staticmethod
    def http_status(port, path, timeout=2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def write_member_config(self):
        pg = pwd.getpwnam("postgres")
        os.makedirs(self.member_dir, exist_ok=True)
        os.chmod(self.member_dir, 0o755)
        os.chown(self.member_dir, pg.pw_uid, pg.pw_gid)
        text = f"""# The one member of the metrics benchmark (scripts/bench_metrics.py)
[cluster]
scope = "bench-metrics"
name = "pg1"
namespace = "pgpilot-bench"

[dcs]
endpoints = ["http://127.0.0.1:{self.ports['etcd']}"]

[postgresql]
bin_dir = "{PG_BIN}"
data_dir = "{self.data_dir}"
listen = "127.0.0.1"
port = {self.ports['pg']}
connect_address = "127.0.0.1:{self.ports['pg']}"
socket_dir = "{self.member_dir}"
log_file = "{self.pg_log}"

[postgresql.parameters]
# Every session start is logged, so new connections can be counted per role.
log_connections = true

[postgresql.authentication.superuser]
username = "{SUPERUSER}"
password = "{self.su_password}"

[postgresql.authentication.replication]
username = "replicator"
password = "{password()}"

[api]
listen = "127.0.0.1:{self.ports['api']}"

[bootstrap]
ttl = 10
loop_wait = 2
retry_timeout = 3

[bootstrap.postgresql.parameters]
# pgpilot holds one session per database (51 here) and each postgres_exporter
# mode with auto-discovery as many: more than the default 100 in all.
max_connections = 300

[metrics]
username = "{PGPILOT_ROLE}"
password = "{self.passwords[PGPILOT_ROLE]}"
"""
        path = os.path.join(self.member_dir, "pgpilot.toml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def start_pgpilot(self):
        config = self.write_member_config()
        self.spawn("pgpilot", [self.pgpilot, "run", "--config", config], "sidecar.log")
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            self.check_alive("pgpilot")
            if self.http_status(self.ports["api"], "/primary") == 200:
                self.log(f"pgpilot member up: API :{self.ports['api']}, PostgreSQL :{self.ports['pg']}")
                return
            sleep(0.5)
        raise RuntimeError(f"pgpilot did not answer GET /primary 200 within {self.args.start_timeout} s; "
                           f"see {self.dir}/sidecar.log and {self.pg_log}")

    def guard_pid(self):
        """pgpilot's fence-guard: a child of the sidecar (of any of its threads)."""
        return fence_guard_of(self.procs["pgpilot"].pid)

    # -- data
    def create_data(self):
        a = self.args
        q = self.psql.query
        for role in [PGPILOT_ROLE] + [EXPORTER_MODES[m][0] for m in a.modes]:
            pw = self.passwords.setdefault(role, password())
            exists = q(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
            verb = "ALTER" if exists else "CREATE"
            q(f"{verb} ROLE {role} LOGIN PASSWORD '{pw}'")
            q(f"GRANT pg_monitor TO {role}")
        t0 = time.monotonic()
        existing = {r[0] for r in q("SELECT datname FROM pg_database")}
        for i in range(1, a.databases + 1):
            name = f"bench_{i:02d}"
            if name not in existing:
                q(f"CREATE DATABASE {name}", timeout=300)
        self.log(f"{a.databases} databases created in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        script = f"""
DO $$
BEGIN
  FOR t IN 1..{a.tables} LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS t%s (id int PRIMARY KEY, v text, n int)', t);
    EXECUTE format('INSERT INTO t%s SELECT g, md5(g::text), g %% 7 FROM generate_series(1, {a.rows}) g
                    ON CONFLICT DO NOTHING', t);
  END LOOP;
END $$;
ANALYZE;
"""
        env = dict(os.environ, PGPASSWORD=self.su_password, PGAPPNAME="bench-metrics-setup")
        for i in range(1, a.databases + 1):
            if STOP.is_set():
                raise Interrupted()
            r = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                "-h", self.member_dir, "-p", str(self.ports["pg"]), "-U", SUPERUSER,
                                "-d", f"bench_{i:02d}"], input=script, text=True, capture_output=True,
                               env=env, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"filling bench_{i:02d} failed: {r.stderr.strip()[:300]}")
        self.log(f"{a.tables} tables of {a.rows} rows in each database, analyzed, "
                 f"in {time.monotonic() - t0:.1f} s")

    # -- exporters
    def write_queries(self):
        """The per-table queries of Debian's example queries.yaml (pg_stat_user_tables and
        pg_statio_user_tables); the file's other queries need extensions or are not per table."""
        path = os.path.join(self.dir, "queries-tables.yaml")
        with open(EXAMPLE_QUERIES) as f:
            text = f.read()
        keep, current = [], None
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*):\s*$", line)
            if m:
                current = m.group(1)
            if current in ("pg_stat_user_tables", "pg_statio_user_tables"):
                keep.append(line)
        if not keep:
            raise RuntimeError(f"no pg_stat_user_tables query found in {EXAMPLE_QUERIES}")
        with open(path, "w") as f:
            f.write("# From " + EXAMPLE_QUERIES + ": its per-table queries only\n" + "\n".join(keep) + "\n")
        os.chmod(path, 0o644)
        return path

    def start_exporters(self):
        queries = self.write_queries() if "tables" in self.args.modes else ""
        nobody = pwd.getpwnam("nobody")
        for mode in self.args.modes:
            role, flags, _ = EXPORTER_MODES[mode]
            port = self.ports[f"exp_{mode}"]
            dsn = (f"host={self.member_dir} port={self.ports['pg']} user={role} "
                   f"password={self.passwords[role]} dbname=postgres sslmode=disable")
            env = {"PATH": "/usr/bin:/bin", "DATA_SOURCE_NAME": dsn}
            args = [EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"] + \
                [f.format(queries=queries) for f in flags]
            self.spawn(f"exporter-{mode}", args, f"exporter-{mode}.log", env=env,
                       user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
        for mode in self.args.modes:
            deadline = time.monotonic() + 30
            while self.http_status(self.ports[f"exp_{mode}"], "/") is None:
                self.check_alive(f"exporter-{mode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres_exporter ({mode}) does not listen; see exporter-{mode}.log")
                sleep(0.2)
        listening = ", ".join(f"{m} :{self.ports['exp_' + m]}" for m in self.args.modes)
        self.log(f"postgres_exporter up: {listening}")

    # -- measurements
    def processes(self):
        """name -> pid of every process whose memory is reported."""
        out = {"pgpilot run": self.procs["pgpilot"].pid, "pgpilot fence-guard": self.guard_pid()}
        for mode in self.args.modes:
            out[f"postgres_exporter ({mode})"] = self.procs[f"exporter-{mode}"].pid
        return out

    def read_memory(self, when):
        row = {}
        for name, pid in self.processes().items():
            row[name] = memory(pid) if pid else None
        self.results["memory"][when] = row
        self.log(f"memory {when}: " + ", ".join(
            f"{n} {mib(m['rss'])} MiB RSS / {mib(m['pss'])} Pss" if m else f"{n} —" for n, m in row.items()))

    def sessions_total(self):
        return int(self.psql.query("SELECT sum(sessions) FROM pg_stat_database")[0][0])

    def backends(self, user):
        return [int(r[0]) for r in self.psql.query(
            f"SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = '{user}'")]

    def log_size(self):
        try:
            return os.path.getsize(self.pg_log)
        except OSError:
            return 0

    def connections_logged(self, start, end):
        """user -> number of 'connection authorized' lines in the PostgreSQL log between two offsets."""
        counts = {}
        try:
            with open(self.pg_log, "rb") as f:
                f.seek(start)
                chunk = f.read(max(0, end - start)).decode(errors="replace")
        except OSError:
            return counts
        for m in re.finditer(r"connection authorized: user=(\S+)", chunk):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        return counts

    def measure_endpoint(self, key, title, port, user, pid_of):
        a = self.args
        self.log(f"===== {title}: {a.warmup} warm-up scrapes, then up to {a.scrapes} scrapes "
                 f"or {a.time_limit} s")
        res = {"key": key, "title": title, "user": user, "errors": 0, "latencies": []}
        off0, sess0 = self.log_size(), self.sessions_total()
        first = None
        for i in range(a.warmup):
            dt, status, body = scrape(port, a.scrape_timeout)
            if i == 0:
                first = dt
            if status != 200:
                res["errors"] += 1
        res["first_scrape_s"] = first
        time.sleep(0.5)  # let the log catch up
        off1, sess1 = self.log_size(), self.sessions_total()
        res["warmup_connections"] = self.connections_logged(off0, off1).get(user, 0)
        res["warmup_sessions"] = sess1 - sess0
        res["backends_before"] = len(self.backends(user))

        procs0 = {name: cpu_ticks(pid) for name, pid in pid_of().items() if pid}
        backends0 = {pid: cpu_ticks(pid) for pid in self.backends(user)}
        sampler = Sampler(self.psql, [user], next(iter(pid_of().values())))
        sampler.start()
        t_start = time.monotonic()
        last = None
        try:
            while len(res["latencies"]) < a.scrapes and time.monotonic() - t_start < a.time_limit:
                if STOP.is_set():
                    raise Interrupted()
                try:
                    dt, status, body = scrape(port, a.scrape_timeout)
                except (OSError, http.client.HTTPException) as e:
                    res["errors"] += 1
                    self.log(f"{title}: scrape failed: {e}")
                    continue
                if status != 200:
                    res["errors"] += 1
                res["latencies"].append(dt)
                last = body
        finally:
            sampler.halt.set()
            sampler.join(timeout=40)
        res["loop_s"] = time.monotonic() - t_start
        time.sleep(1.0)  # the last sessions' log lines, and backends settle
        off2, sess2 = self.log_size(), self.sessions_total()
        n = len(res["latencies"])
        res["loop_connections"] = self.connections_logged(off1, off2).get(user, 0)
        res["loop_sessions"] = sess2 - sess1
        res["backends_max"] = sampler.max[user]
        res["peak_rss"] = sampler.peak_rss
        res["samples"] = sampler.samples
        res["sampler_error"] = sampler.error
        res["distinct_backend_pids"] = len(sampler.pids[user])
        self.loads += [x for x in sampler.loads if x is not None]
        pids = self.backends(user)
        res["backends_after"] = len(pids)
        # CPU over the loop: the endpoint's process(es), and its backends (those that lived through
        # the loop and those it opened during it).
        cpu = 0
        for name, pid in pid_of().items():
            now = cpu_ticks(pid) if pid else None
            if now is not None and procs0.get(name) is not None:
                cpu += now - procs0[name]
        res["process_cpu_s"] = cpu / TICK
        bcpu = 0
        for pid in set(pids) | sampler.pids[user]:
            now = cpu_ticks(pid)
            if now is not None:
                bcpu += now - (backends0.get(pid) or 0)
        res["backend_cpu_s"] = bcpu / TICK
        mems = [m for m in (memory(p) for p in pids) if m]
        res["backend_memory"] = {"n": len(mems), "rss": sum(m["rss"] for m in mems),
                                 "pss": sum(m["pss"] for m in mems),
                                 "private": sum(m["private"] for m in mems)}
        res["process_after"] = {name: memory(pid) if pid else None for name, pid in pid_of().items()}
        if last is not None:
            res["bytes"] = len(last)
            res.update(describe(last))
        if n:
            lat = res["latencies"]
            res["median"], res["p99"], res["max"] = statistics.median(lat), percentile(lat, 99), max(lat)
            self.log(f"{title}: {n} scrapes in {res['loop_s']:.1f} s: median {res['median'] * 1000:.1f} ms, "
                     f"p99 {res['p99'] * 1000:.1f} ms, max {res['max'] * 1000:.1f} ms; {res.get('bytes')} bytes, "
                     f"{res.get('series')} series, pg_up {res.get('pg_up')}, databases {res.get('databases')} "
                     f"(per-table {res.get('table_databases')}); backends max {res['backends_max']}, after "
                     f"{res['backends_after']}; new sessions of {user}: {res['loop_connections']} "
                     f"(all sessions: {res['loop_sessions']}); errors {res['errors']}")
        self.results["endpoints"].append(res)
        self.save()

    def save(self):
        with open(os.path.join(self.dir, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)

    def main(self):
        a = self.args
        begin = utcnow()
        facts = self.versions()
        self.results["facts"] = facts
        self.sample_machine()
        self.log(f"bench dir {self.dir}; versions {json.dumps(facts)}")
        for name in ["etcd", "etcd_peer", "pg", "api"] + [f"exp_{m}" for m in a.modes]:
            port = free_port()
            while port in self.ports.values():
                port = free_port()
            self.ports[name] = port
        self.start_etcd()
        self.start_pgpilot()
        self.psql = Psql(self.member_dir, self.ports["pg"], self.su_password)
        self.create_data()
        self.start_exporters()
        self.sample_machine()
        self.log(f"idling {a.idle} s before reading memory (no scrape yet)")
        sleep(a.idle)
        self.sample_machine()
        self.read_memory("idle")
        idle_backends = {u: len(self.backends(u)) for u in
                         [PGPILOT_ROLE] + [EXPORTER_MODES[m][0] for m in a.modes]}
        self.results["idle_backends"] = idle_backends

        def pgpilot_pids():
            return {"pgpilot run": self.procs["pgpilot"].pid, "pgpilot fence-guard": self.guard_pid()}

        self.measure_endpoint("pgpilot", "pgpilot GET /metrics", self.ports["api"], PGPILOT_ROLE, pgpilot_pids)
        self.check_alive("pgpilot")
        self.sample_machine()
        for mode in a.modes:
            role, _, title = EXPORTER_MODES[mode]
            pid = self.procs[f"exporter-{mode}"].pid
            self.measure_endpoint(mode, title, self.ports[f"exp_{mode}"], role,
                                  lambda pid=pid, mode=mode: {f"postgres_exporter ({mode})": pid})
            self.check_alive(f"exporter-{mode}")
            self.sample_machine()
        self.read_memory("end")
        end = utcnow()
        self.results["begin"], self.results["end"] = begin.isoformat(), end.isoformat()
        self.results["loads"] = self.loads
        self.results["foreign"] = sorted(self.foreign)
        self.save()
        report = render(self, facts, begin, end)
        print()
        print(report["text"])
        with open(os.path.join(self.dir, "report.md"), "w") as f:
            f.write(report["block"])
        if a.doc:
            write_doc(a.doc, report["block"])
            self.log(f"wrote the generated block of the Metrics section of {a.doc}")
        self.log(f"logs and results in {self.dir}")


# --------------------------------------------------------------------------- report


def ms(x):
    return "—" if x is None else f"{x * 1000:.1f}"


def render(bench, facts, begin, end):
    a = bench.args
    rows = ["| endpoint | scrapes | median ms | p99 ms | max ms | first scrape ms | bytes | series "
            "| databases seen (in per-table series) | backends held: during loop (max) / after "
            "| sessions opened: warm-up / per scrape in the loop | CPU ms per scrape: exporter process / its backends "
            "| its backends' memory after: private (Pss) MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in bench.results["endpoints"]:
        n = len(r["latencies"])
        per_scrape = r["loop_connections"] / n if n else 0
        bm = r["backend_memory"]
        err = f" ({r['errors']} errors)" if r["errors"] else ""
        rows.append(
            f"| {r['title']} | {n}{err} | {ms(r.get('median'))} | {ms(r.get('p99'))} | {ms(r.get('max'))} "
            f"| {ms(r.get('first_scrape_s'))} | {r.get('bytes', '—')} | {r.get('series', '—')} "
            f"| {r.get('databases', '—')} ({r.get('table_databases', '—')}) "
            f"| {r['backends_max']} / {r['backends_after']} "
            f"| {r['warmup_connections']} / {per_scrape:.2f} ({r['loop_connections']} in {n}) "
            f"| {ms(r['process_cpu_s'] / n if n else None)} / {ms(r['backend_cpu_s'] / n if n else None)} "
            f"| {mib(bm['private'])} ({mib(bm['pss'])}) over {bm['n']} |")
    table = "\n".join(rows)

    mem = bench.results["memory"]
    after = {}
    for r in bench.results["endpoints"]:
        after.update(r["process_after"])
    peaks = {next(iter(r["process_after"])): r.get("peak_rss") for r in bench.results["endpoints"]}
    mrows = ["| process | idle: VmRSS MiB | idle: Pss MiB | peak VmRSS during its scrape loop MiB "
             "| after its scrape loop: VmRSS MiB | after: Pss MiB | at the end: VmRSS MiB | threads (idle → end) |",
             "|---|---|---|---|---|---|---|---|"]
    idle, final = mem.get("idle", {}), mem.get("end", {})
    for name in idle:
        i, x, e = idle.get(name), after.get(name), final.get(name)
        mrows.append(f"| {name} | {mib(i and i['rss'])} | {mib(i and i['pss'])} | {mib(peaks.get(name))} "
                     f"| {mib(x and x['rss'])} "
                     f"| {mib(x and x['pss'])} | {mib(e and e['rss'])} "
                     f"| {i and i['threads']} → {e and e['threads']} |")
    side = [idle.get("pgpilot run"), idle.get("pgpilot fence-guard")]
    if all(side):
        total = sum(m["rss"] for m in side)
        mrows.append(f"| pgpilot sidecar in all (run + fence-guard) | {mib(total)} "
                     f"| {mib(sum(m['pss'] for m in side))} | | | | | |")
    mtable = "\n".join(mrows)

    loads = bench.loads
    load_s = load_summary(loads)
    foreign = ", ".join(sorted(bench.foreign)) or "none"
    loaded = (loads and max(loads) > 1.0) or bench.foreign
    minutes = (end - begin).total_seconds() / 60
    idle_b = ", ".join(f"{u} {n}" for u, n in bench.results.get("idle_backends", {}).items())
    notes = "".join(f"\n- {n}" for n in bench.results["notes"])
    block = f"""<!-- bench-metrics:begin (generated by scripts/bench_metrics.py; rerun to replace) -->
Produced by:

```sh
{a.command}
```

- Date: {begin.strftime('%Y-%m-%d %H:%M')}–{end.strftime('%H:%M')} UTC ({minutes:.1f} min).
- pgpilot: {facts['pgpilot']}; {facts['exporter']}; {facts['postgresql']}; {facts['etcd']}.
- Machine: {facts['os']}, kernel {facts['kernel']}, nproc {facts['nproc']} ({facts['cpu']}), {facts['memory']} RAM.
- Load during the run: {load_s}. Other processes seen on the machine: {foreign}.
  {"**The machine was shared with other engineers' builds and tests: figures taken on a loaded 2-core machine.**" if loaded else ""}
- Data: {a.databases} databases of {a.tables} tables ({a.rows} rows, a primary key, analyzed) besides `postgres`.
  Scrapes: {a.warmup} warm-up scrapes, then up to {a.scrapes} (at most {a.time_limit} s) per endpoint, one after
  the other, each on a new HTTP connection, no compression. Client backends per role before any scrape: {idle_b}.

{table}

Columns: latency of one whole scrape as the client sees it (request to last byte); bytes and series of
the last scrape; databases = distinct `datname` label values; backends = client backends of the
endpoint's role in `pg_stat_activity` (sampled every {SAMPLE_PERIOD} s during the loop, and 1 s after);
sessions opened = `connection authorized` lines of its role in the PostgreSQL log (`log_connections`)
during the warm-up, then during the timed loop; CPU = utime + stime from /proc over the timed loop,
divided by the scrapes (pgpilot's process also runs its HA loop meanwhile); backends' memory =
private pages (Private_Clean + Private_Dirty) and Pss of its backends after the loop.

Memory of the processes (VmRSS from /proc/PID/status; Pss from /proc/PID/smaps_rollup counts
shared pages once), idle = after {a.idle} s without any scrape, once the databases existed:

{mtable}
{notes}
<!-- bench-metrics:end -->
"""
    text = f"{table}\n\n{mtable}\n\n{load_s}; other processes: {foreign}"
    return {"block": block, "text": text}


def write_doc(path, block):
    """Replace the generated block of the Metrics section; add the section at the end if missing."""
    begin, end = "<!-- bench-metrics:begin", "<!-- bench-metrics:end -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block.strip() + text[j:]
    else:
        text = (text.rstrip() + "\n\n## Metrics\n\n`scripts/bench-metrics.sh` compares pgpilot's `GET /metrics` "
                "with Debian's prometheus-postgres-exporter against the same PostgreSQL.\n\n" + block.strip() + "\n")
    with open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True, help="work directory (logs, data, results)")
    p.add_argument("--pgpilot", help="the pgpilot binary")
    p.add_argument("--databases", type=int, default=50)
    p.add_argument("--tables", type=int, default=20, help="tables per database")
    p.add_argument("--rows", type=int, default=100, help="rows per table")
    p.add_argument("--scrapes", type=int, default=200, help="timed scrapes per endpoint")
    p.add_argument("--warmup", type=int, default=5, help="untimed scrapes before them")
    p.add_argument("--time-limit", type=float, default=150, help="seconds of timed scrapes per endpoint at most")
    p.add_argument("--scrape-timeout", type=float, default=30, help="seconds one scrape may take")
    p.add_argument("--idle", type=int, default=60, help="idle seconds before reading memory")
    p.add_argument("--start-timeout", type=int, default=180, help="seconds for the member to become primary")
    p.add_argument("--modes", default="default,autodiscover,tables",
                   help=f"postgres_exporter modes, among {','.join(EXPORTER_MODES)} (empty: none)")
    p.add_argument("--doc", default=None, help="Markdown file whose Metrics section receives the results")
    p.add_argument("--command", default=None, help="the command line to print in the report")
    p.add_argument("--keep-data", action="store_true", help="keep the data directory")
    p.add_argument("--cleanup", action="store_true", help="only stop what a previous run in --dir left running")
    args = p.parse_args()
    if args.cleanup:
        cleanup(os.path.abspath(args.dir))
        return
    if os.geteuid() != 0:
        sys.exit("bench_metrics.py: run as root (PostgreSQL runs as the postgres user)")
    if not args.pgpilot:
        sys.exit("bench_metrics.py: --pgpilot BINARY is required")
    args.modes = [m for m in args.modes.split(",") if m]
    for m in args.modes:
        if m not in EXPORTER_MODES:
            sys.exit(f"unknown mode {m}; known: {', '.join(EXPORTER_MODES)}")
    if args.modes and not os.access(EXPORTER, os.X_OK):
        sys.exit(f"{EXPORTER} missing (Debian: apt-get install prometheus-postgres-exporter), or pass --modes ''")
    if args.scrapes < 1 or args.time_limit <= 0:
        sys.exit("--scrapes and --time-limit must be above 0")
    args.command = args.command or " ".join(sys.argv)

    stop_on_signals()
    bench = Bench(args)
    rc = 0
    try:
        bench.main()
    except Interrupted:
        bench.log("interrupted")
        rc = 130
    except (RuntimeError, SqlError) as e:
        bench.log(f"FAILED: {e}")
        rc = 1
    finally:
        if bench.psql is not None:
            bench.psql.close()
        cleanup(bench.dir, log=lambda m: bench.log(m, echo=False))
        if not args.keep_data:
            for sub in ("etcd", "bin", os.path.join("pg1", "data")):
                shutil.rmtree(os.path.join(bench.dir, sub), ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
