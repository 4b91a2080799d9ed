"""The members, the writer and the cluster of scripts/bench_failover.py.

Member: one pgpilot or Patroni member (its configuration, process, REST API).
Writer: one autocommit INSERT every 50 ms into the member answering GET /primary
200, each operation limited to 2 s by closing the socket. Cluster: 3 members,
their health, the bench table, and (for etcd-cut) each member's etcd proxy.
The benchmark object they are given (bench_failover.Bench) provides args, log,
registry and the pgpilot binary.
"""

import concurrent.futures
import http.client
import json
import os
import pwd
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import bench_partition as partition
from benchlib import (
    STOP, cmdline, fence_guard_of, guards_under, kill, password, postmasters_under, sleep, utcnow, wait_gone,
)

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover
    sys.exit("bench_failover.py: psycopg2 missing (Debian: apt-get install python3-psycopg2)")

PG_BIN = "/usr/lib/postgresql/15/bin"
INTERVAL = 0.05  # writer period
OP_TIMEOUT = 2.0  # per writer operation (connect + INSERT, or one GET /primary)
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
DATA_GLOB = os.path.join("*", "*", "data")  # DIR/<tool>-<setting>/pgN/data


# --------------------------------------------------------------------------- helpers


def http_status(host, port, path, method="GET", body=None, timeout=OP_TIMEOUT):
    """Status code of one request, or None when the member does not answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, text.decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None, ""
    finally:
        conn.close()


def pg_connect(port, pw, timeout=OP_TIMEOUT):
    return psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=pw, dbname="postgres",
                            connect_timeout=max(1, int(timeout)), application_name="bench")


def pg_wait(conn, deadline):
    """Drive the asynchronous psycopg2 connection CONN until its operation is done or DEADLINE passed."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("operation exceeded 2 s")
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            r, _, _ = select.select([fd], [], [], remaining)
        elif state == psycopg2.extensions.POLL_WRITE:
            _, r, _ = select.select([], [fd], [], remaining)
        else:
            raise psycopg2.OperationalError(f"poll state {state}")
        if not r:
            raise TimeoutError("operation exceeded 2 s")


def pg_connect_async(port, pw, deadline, application_name):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=SUPERUSER, password=pw, dbname="postgres",
                            connect_timeout=2, application_name=application_name, async_=1)
    try:
        pg_wait(conn, deadline)
    except BaseException:
        conn.close()
        raise
    return conn


def read_probe(port, pw):
    """pg_is_in_recovery() on a new connection, all within OP_TIMEOUT; raises when there is no answer."""
    deadline = time.monotonic() + OP_TIMEOUT
    conn = pg_connect_async(port, pw, deadline, "bench-reader")
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_is_in_recovery()")
        pg_wait(conn, deadline)
        return cur.fetchone()[0]
    finally:
        conn.close()  # closes the socket: no cancel request is ever sent


# --------------------------------------------------------------------------- members


class Member:
    def __init__(self, cluster, n):
        self.cluster = cluster
        self.tool = cluster.tool
        self.n = n
        self.name = f"pg{n}"
        self.dir = os.path.join(cluster.dir, self.name)
        self.data_dir = os.path.join(self.dir, "data")
        self.pg_port = cluster.base_port + 10 + cluster.index * 10 + n
        self.api_port = cluster.base_port + 60 + cluster.index * 10 + n
        self.log_path = os.path.join(self.dir, "sidecar.log")
        self.config_path = os.path.join(self.dir, "pgpilot.toml" if self.tool == "pgpilot" else "patroni.yml")
        self.proc = None

    # -- configuration
    def write_config(self):
        c = self.cluster
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        pg = pwd.getpwnam("postgres")
        os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        if self.tool == "pgpilot":
            text = f"""# Member {self.name} of the failover benchmark (scripts/bench_failover.py)
[cluster]
scope = "{c.scope}"
name = "{self.name}"
namespace = "pgpilot-bench"

[dcs]
endpoints = ["http://{c.dcs_address(self)}"]

[postgresql]
bin_dir = "{PG_BIN}"
data_dir = "{self.data_dir}"
listen = "127.0.0.1"
port = {self.pg_port}
connect_address = "127.0.0.1:{self.pg_port}"
socket_dir = "{self.dir}"
log_file = "{self.dir}/postgresql.log"

[postgresql.authentication.superuser]
username = "{SUPERUSER}"
password = "{c.su_password}"

[postgresql.authentication.replication]
username = "{REPLICATION_USER}"
password = "{c.repl_password}"

[api]
listen = "127.0.0.1:{self.api_port}"

[bootstrap]
ttl = {c.ttl}
loop_wait = {c.loop_wait}
retry_timeout = {c.retry_timeout}
maximum_lag_on_failover = 1048576
primary_start_timeout = 300
"""
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        else:
            conf = {
                "scope": c.scope,
                "namespace": "/patroni-bench/",
                "name": self.name,
                "log": {"level": "INFO"},
                "restapi": {"listen": f"127.0.0.1:{self.api_port}",
                            "connect_address": f"127.0.0.1:{self.api_port}"},
                "etcd3": {"hosts": [c.dcs_address(self)]},
                "bootstrap": {
                    "dcs": {
                        "ttl": c.ttl, "loop_wait": c.loop_wait, "retry_timeout": c.retry_timeout,
                        "maximum_lag_on_failover": 1048576, "primary_start_timeout": 300,
                        "postgresql": {
                            "use_pg_rewind": True, "use_slots": True,
                            # the values pgpilot renders by default (sidecar/src/postgres/conf.rs)
                            "parameters": {"wal_level": "replica", "hot_standby": "on", "max_wal_senders": 10,
                                           "max_replication_slots": 10, "wal_log_hints": "on",
                                           "wal_keep_size": "128MB", "max_connections": 100,
                                           "password_encryption": "scram-sha-256"},
                        },
                    },
                    "initdb": ["data-checksums", {"encoding": "UTF8"}],
                },
                "postgresql": {
                    "listen": f"127.0.0.1:{self.pg_port}",
                    "connect_address": f"127.0.0.1:{self.pg_port}",
                    "data_dir": self.data_dir,
                    "bin_dir": PG_BIN,
                    "pgpass": os.path.join(self.dir, "pgpass"),
                    "authentication": {
                        "superuser": {"username": SUPERUSER, "password": c.su_password},
                        "replication": {"username": REPLICATION_USER, "password": c.repl_password},
                    },
                    "parameters": {"unix_socket_directories": self.dir, "logging_collector": "on",
                                   "log_directory": self.dir, "log_filename": "postgresql.log",
                                   "log_file_mode": "0644"},
                    "pg_hba": [
                        "local all all scram-sha-256",
                        "host all all 127.0.0.1/32 scram-sha-256",
                        f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256",
                    ],
                },
                "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
            }
            if c.proxies:
                # Else Patroni asks etcd for its members' client URLs and goes around the proxy.
                conf["etcd3"]["use_proxies"] = True
            # JSON is YAML: no YAML library needed.
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(conf, f, indent=2)
            os.chown(self.config_path, pg.pw_uid, pg.pw_gid)

    # -- processes
    def start(self):
        c = self.cluster
        logf = open(self.log_path, "a")
        logf.write(f"\n===== bench: starting {self.name} at {utcnow().isoformat()} =====\n")
        logf.flush()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PATRONI_", "PGPILOT_", "PG", "ETCD"))}
        if self.tool == "pgpilot":
            args = [c.bench.pgpilot, "run", "--config", self.config_path]
            kw = {}
        else:
            args = ["/usr/bin/patroni", self.config_path]
            pg = pwd.getpwnam("postgres")
            env.update(HOME=pg.pw_dir, USER="postgres", LOGNAME="postgres")
            kw = {"user": pg.pw_uid, "group": pg.pw_gid, "extra_groups": []}
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.dir,
                                     env=env, start_new_session=True, **kw)
        logf.close()
        c.bench.registry.add(self.proc.pid, f"{self.tool} {self.name}")
        c.bench.log(f"[{c.label}] started {self.name} ({self.tool}) pid {self.proc.pid}, "
                    f"PostgreSQL :{self.pg_port}, API :{self.api_port}, log {self.log_path}", echo=False)

    def sidecar_alive(self):
        return self.proc is not None and self.proc.poll() is None

    def sidecar_pid(self):
        return self.proc.pid if self.sidecar_alive() else None

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return None
        args = cmdline(pid)
        if args and os.path.basename(args[0]) == "postgres" and self.data_dir in args:
            return pid
        return None

    def guard_pid(self):
        """pgpilot's fence-guard: the child of the sidecar started as `pgpilot fence-guard`."""
        sidecar = self.sidecar_pid()
        return None if sidecar is None else fence_guard_of(sidecar)

    def wait_exit(self, timeout):
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def primary_status(self):
        return http_status("127.0.0.1", self.api_port, "/primary")[0]


# --------------------------------------------------------------------------- writer


class Writer(threading.Thread):
    """One autocommit INSERT every 50 ms into the member answering GET /primary 200."""

    def __init__(self, cluster, id_base, max_seconds):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.next_id = id_base
        self.id_base = id_base
        self.max_seconds = max_seconds
        self.max_count = int(max_seconds / INTERVAL) + 1
        self.acks = []  # (mono time, id, member name)
        self.failures = []  # (mono time, member name or None, what)
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=12)

    def discover(self):
        members = self.cluster.members
        futures = {self.pool.submit(m.primary_status): m for m in members}
        try:
            for f in concurrent.futures.as_completed(futures, timeout=OP_TIMEOUT + 0.5):
                if f.result() == 200:
                    return futures[f]
        except concurrent.futures.TimeoutError:
            pass
        return None

    def stop(self):
        self.halt.set()

    def run(self):
        start = time.monotonic()
        end = start + self.max_seconds
        next_tick = start
        target = None
        conn = None
        count = 0
        while not self.halt.is_set() and not STOP.is_set() and count < self.max_count:
            now = time.monotonic()
            if now >= end:
                break
            if now < next_tick:
                if self.halt.wait(next_tick - now):
                    break
            next_tick += INTERVAL
            if next_tick < time.monotonic():
                next_tick = time.monotonic()  # never burst to catch up
            count += 1
            if target is None:
                target = self.discover()
                if target is None:
                    with self.lock:
                        self.failures.append((time.monotonic(), None, "no member answers /primary 200"))
                    continue
            op_deadline = time.monotonic() + OP_TIMEOUT
            row_id = self.next_id
            self.next_id += 1
            try:
                if conn is None:
                    conn = pg_connect_async(target.pg_port, self.cluster.su_password, op_deadline,
                                            "bench-writer")
                cur = conn.cursor()
                cur.execute("INSERT INTO bench (id) VALUES (%s)", (row_id,))
                pg_wait(conn, op_deadline)
                t = time.monotonic()
                with self.lock:
                    self.acks.append((t, row_id, target.name))
            except (psycopg2.Error, OSError, TimeoutError) as e:
                t = time.monotonic()
                with self.lock:
                    self.failures.append((t, target.name, f"{type(e).__name__}: {str(e).strip()[:120]}"))
                if conn is not None:
                    try:
                        conn.close()  # closes the socket: no cancel request is ever sent
                    except Exception:
                        pass
                conn = None
                target = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        self.pool.shutdown(wait=False)

    def snapshot(self):
        with self.lock:
            return list(self.acks), list(self.failures)


# --------------------------------------------------------------------------- cluster


class Cluster:
    def __init__(self, bench, index, tool, setting):
        self.bench = bench
        self.index = index
        self.tool = tool
        self.setting_name, self.ttl, self.loop_wait, self.retry_timeout = setting
        self.label = f"{tool} {self.ttl}/{self.loop_wait}/{self.retry_timeout}"
        self.scope = f"bench-{index}"
        self.dir = os.path.join(bench.dir, f"{tool}-{self.ttl}-{self.loop_wait}-{self.retry_timeout}")
        self.base_port = bench.base_port
        self.etcd_port = bench.etcd_port
        self.su_password = password()
        self.repl_password = password()
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.members = [Member(self, n) for n in (1, 2, 3)]
        self.proxies = {}  # member name -> its partition.EtcdProxy, when etcd-cut is among the scenarios
        if partition.SCENARIO in bench.args.scenarios:
            for m in self.members:
                port = self.base_port + 14 + index * 10 + m.n - 1  # beside the PostgreSQL ports
                self.proxies[m.name] = partition.EtcdProxy(port, self.etcd_port, m.name)

    def dcs_address(self, member):
        """host:port of etcd as MEMBER reaches it: its own proxy, or etcd itself."""
        proxy = self.proxies.get(member.name)
        return f"127.0.0.1:{proxy.port if proxy else self.etcd_port}"

    def start(self):
        for proxy in self.proxies.values():
            proxy.start()
        for m in self.members:
            m.write_config()
        for m in self.members:
            m.start()
            sleep(0.3)

    def leaders(self):
        return [m for m in self.members if m.primary_status() == 200]

    def streaming_replicas(self, leader):
        try:
            conn = pg_connect(leader.pg_port, self.su_password)
        except psycopg2.Error:
            return set()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'")
                return {r[0] for r in cur.fetchall()}
        except psycopg2.Error:
            return set()
        finally:
            conn.close()

    def wait_healthy(self, timeout):
        """One member answers /primary 200 and streams to the two others; returns it or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leaders = self.leaders()
            if len(leaders) == 1 and all(m.sidecar_alive() for m in self.members):
                others = {m.name for m in self.members if m is not leaders[0]}
                if others <= self.streaming_replicas(leaders[0]):
                    return leaders[0]
            sleep(0.5)
        return None

    def member(self, name):
        return next(m for m in self.members if m.name == name)

    def ensure_table(self, leader):
        conn = pg_connect(leader.pg_port, self.su_password, timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE TABLE IF NOT EXISTS bench (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")
        finally:
            conn.close()

    def present_ids(self, leader, lo, hi):
        conn = pg_connect(leader.pg_port, self.su_password, timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM bench WHERE id BETWEEN %s AND %s", (lo, hi))
                return {r[0] for r in cur.fetchall()}
        finally:
            conn.close()

    def stop(self, remove_data=True):
        """Stop the members by pid (replicas first, so the leader need not wait for a hand-over)."""
        leaders = []
        try:
            leaders = [m for m in self.members if m.sidecar_alive() and m.primary_status() == 200]
        except Exception:
            pass
        order = [m for m in self.members if m not in leaders] + leaders
        for group in (order[:-1], order[-1:]):
            for m in group:
                if m.sidecar_alive():
                    kill(m.proc.pid, signal.SIGTERM)
            for m in group:
                if not m.wait_exit(60):
                    self.bench.log(f"[{self.label}] {m.name} did not stop within 60 s: SIGKILL")
                    kill(m.proc.pid, signal.SIGKILL)
                    m.wait_exit(5)
        for pid in postmasters_under(self.dir, DATA_GLOB) + guards_under(self.dir):
            kill(pid, signal.SIGQUIT)
            if not wait_gone([pid], 10):
                kill(pid, signal.SIGKILL)
        for proxy in self.proxies.values():
            proxy.stop()
        if remove_data:
            for m in self.members:
                shutil.rmtree(m.data_dir, ignore_errors=True)
