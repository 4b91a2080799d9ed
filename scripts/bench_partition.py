"""The etcd-cut scenario of scripts/bench_failover.py: the leader loses etcd, nothing else.

Every member (pgpilot and Patroni alike) reaches etcd through its own EtcdProxy,
a TCP forwarder on 127.0.0.1 in the benchmark's process. Cutting the leader's
proxy stops it forwarding bytes either way while every socket stays open (new
connections are accepted and never forwarded): a blackhole, no reset, no FIN.
Healing closes whatever the cut held and forwards again.

During a run the writer of bench_failover.py writes as in every scenario, and a
ReadProber opens a new connection to the OLD leader's PostgreSQL every 100 ms and
asks `SELECT pg_is_in_recovery()` (2 s limit). The cut lasts ttl + 15 s; then the
proxy heals and the run waits until the new leader's pg_stat_replication shows
the old member `streaming`. measure_cut() turns the logs into the figures;
render_cut() into the "Leader cut from etcd" block of docs/benchmarks.md.

Python 3 standard library only; the PostgreSQL calls come in as functions.
"""

import os
import select
import socket
import statistics
import threading
import time

from benchlib import STOP, sleep

SCENARIO = "etcd-cut"
PROBE_INTERVAL = 0.1
STREAM_BOUND = 120  # seconds after the heal to wait for the old member to stream from the new leader
REWIND_LINE = "running pg_rewind"  # both tools log this line when they start pg_rewind
MARKER = "bench-failover-etcd-cut"


def cut_seconds(ttl):
    """How long the cut lasts: long enough for the lease to expire and a replica to take over."""
    return ttl + 15


# --------------------------------------------------------------------------- proxy


class EtcdProxy(threading.Thread):
    """127.0.0.1:PORT forwarded to 127.0.0.1:UPSTREAM, with cut() and heal()."""

    def __init__(self, port, upstream, name):
        super().__init__(daemon=True, name=f"etcd-proxy-{name}")
        self.port = port
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.peer = {}  # socket -> the other end of its pair
        self.held = []  # accepted during a cut, never forwarded
        self.cutting = False
        self.lock = threading.Lock()
        self.heal_request = None  # an Event the loop sets once it closed what the cut held
        self.halt = threading.Event()

    def cut(self):
        with self.lock:
            self.cutting = True

    def heal(self):
        done = threading.Event()
        with self.lock:
            self.heal_request = done
        done.wait(5)

    def stop(self):
        self.halt.set()
        if self.is_alive():
            self.join(timeout=5)
        else:
            self.listener.close()

    def _drop(self, s):
        other = self.peer.pop(s, None)
        for x in (s, other):
            if x is not None:
                self.peer.pop(x, None)
                x.close()

    def _accept(self, cutting):
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        if cutting:
            self.held.append(client)
            return
        try:
            server = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer[client], self.peer[server] = server, client

    def run(self):
        try:
            while not self.halt.is_set() and not STOP.is_set():
                with self.lock:
                    cutting, healed = self.cutting, self.heal_request
                    if healed is not None:
                        self.cutting = cutting = False
                        self.heal_request = None
                if healed is not None:
                    for s in list(self.peer) + self.held:
                        s.close()
                    self.peer.clear()
                    self.held.clear()
                    healed.set()
                watched = [self.listener] + ([] if cutting else list(self.peer))
                ready, _, _ = select.select(watched, [], [], 0.05)
                for s in ready:
                    if s is self.listener:
                        self._accept(cutting)
                    elif s in self.peer:
                        self._forward(s)
        finally:
            for s in list(self.peer) + self.held + [self.listener]:
                s.close()

    def _forward(self, s):
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(s)
            return
        with self.lock:
            cutting = self.cutting
        if cutting:
            return  # read after the cut began: never delivered (heal closes this pair)
        try:
            self.peer[s].sendall(data)
        except OSError:
            self._drop(s)


# --------------------------------------------------------------------------- read prober


class ReadProber(threading.Thread):
    """PROBE() every 100 ms (never in bursts): True/False is pg_is_in_recovery(), an exception a refusal."""

    def __init__(self, probe):
        super().__init__(daemon=True, name="read-prober")
        self.probe = probe
        self.probes = []  # (start, end, in_recovery or None, error)
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def stop(self):
        self.halt.set()
        self.join(timeout=5)

    def run(self):
        next_tick = time.monotonic()
        while not self.halt.is_set() and not STOP.is_set():
            start = time.monotonic()
            try:
                answer, error = bool(self.probe()), ""
            except Exception as e:  # any failure is a refused read
                answer, error = None, f"{type(e).__name__}: {str(e).strip()[:100]}"
            with self.lock:
                self.probes.append((start, time.monotonic(), answer, error))
            next_tick = max(next_tick + PROBE_INTERVAL, time.monotonic())
            self.halt.wait(next_tick - time.monotonic())

    def snapshot(self):
        with self.lock:
            return list(self.probes)


# --------------------------------------------------------------------------- figures


def measure_cut(old, t_cut, t_heal, acks, probes, t_stream):
    """The figures of one run (seconds; None where the event did not happen). Pure.

    ACKS: (time, id, member) of the writer; PROBES: (start, end, in_recovery or None, error) on OLD."""
    on_old = [t for t, _, m in acks if m == old and t < t_heal]
    first_new = next(((t, m) for t, _, m in acks if t > t_cut and m != old), (None, None))
    f = {"new_leader": first_new[1]}
    f["last_old_ack"] = max(on_old) - t_cut if on_old else None
    f["first_new_ack"] = first_new[0] - t_cut if first_new[0] is not None else None
    late = [t for t in on_old if first_new[0] is not None and t > first_new[0]]
    f["dual_acks"] = len(late)
    f["dual_window"] = max(late) - first_new[0] if late else 0.0
    # The old member answered as a writable primary after the new leader's first ack: two primaries.
    as_primary = [end for _, end, ans, _ in probes
                  if ans is False and first_new[0] is not None and end > first_new[0] and end < t_heal]
    f["old_primary_after_new"] = max(as_primary) - first_new[0] if as_primary else 0.0
    refused = next((p for p in probes if p[0] >= t_cut and p[2] is None), None)
    f["reads_refused"] = refused[0] - t_cut if refused else None
    back = None
    if refused:
        back = next((p for p in probes if p[0] > refused[0] and p[2] is True), None)
    f["read_only_after"] = back[1] - refused[0] if back else None
    during = [p for p in probes if back and back[1] <= p[0] < t_heal]
    f["unanswered"] = sum(1 for p in during if p[2] is None)
    f["probes_during_cut"] = len(during)
    f["stream_after_heal"] = t_stream - t_heal if t_stream is not None else None
    return f


def log_has(path, offset, text):
    """Whether PATH has a line containing TEXT after byte OFFSET."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return any(text.encode() in line for line in f)
    except OSError:
        return False


# --------------------------------------------------------------------------- one run


def run_cut(bench, c, leader, writer, tag, result, wall, probe):
    """Cut LEADER from etcd for cut_seconds(ttl), heal, wait for it to stream from the new leader.

    PROBE() asks the old leader pg_is_in_recovery(). Fills RESULT with measure_cut()'s figures (value = first
    ack on the new leader); returns the cut's time."""
    old = leader.name
    proxy = c.proxies[old]
    log_offset = os.path.getsize(leader.log_path) if os.path.exists(leader.log_path) else 0
    prober = ReadProber(probe)
    prober.start()
    sleep(1.0)  # a few probes that find the old leader a primary
    t_cut = time.monotonic()
    proxy.cut()
    bench.log(f"{tag}: cut {old} from etcd (proxy :{proxy.port}) at {wall(t_cut)} for {cut_seconds(c.ttl)} s")
    sleep(max(0.0, t_cut + cut_seconds(c.ttl) - time.monotonic()))
    t_heal = time.monotonic()
    proxy.heal()
    bench.log(f"{tag}: healed {old}'s etcd proxy at {wall(t_heal)}")
    t_stream, new = None, None
    while time.monotonic() < t_heal + STREAM_BOUND:
        acks, _ = writer.snapshot()
        new = next((c.member(m) for _, _, m in reversed(acks) if m != old), None)
        if new is not None and old in c.streaming_replicas(new):
            t_stream = time.monotonic()
            break
        sleep(0.1)
    prober.stop()
    sleep(1.0)  # a little more writing on the new leader
    writer.stop()
    writer.join(timeout=5)
    acks, _ = writer.snapshot()
    probes = prober.snapshot()
    f = measure_cut(old, t_cut, t_heal, acks, probes, t_stream)
    f["rewind"] = log_has(leader.log_path, log_offset, REWIND_LINE)
    result.update({k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items()})
    result["value"] = result["first_new_ack"]
    result["t_heal"] = wall(t_heal)
    if t_stream is None:
        result["note"] += f"{old} not streaming from {new.name if new else 'a new leader'} " \
                          f"within {STREAM_BOUND} s of the heal; "
    with open(os.path.join(c.dir, f"probes-{SCENARIO}-{result['run']}.tsv"), "w") as out:
        out.write(f"# read probes on {old}; cut at {wall(t_cut)}, heal at {wall(t_heal)} UTC; columns: start (UTC), "
                  f"ms from the cut, ms taken, pg_is_in_recovery or error\n")
        for start, end, ans, err in probes:
            out.write(f"{wall(start)}\t{(start - t_cut) * 1000:+.0f}\t{(end - start) * 1000:.0f}\t"
                      f"{err if ans is None else ans}\n")
    bench.log(f"{tag}: {describe(result)}")
    return t_cut


# --------------------------------------------------------------------------- report


def secs(v):
    return "—" if v is None else f"{v:.2f}"


def describe(r):
    """One run's figures on one line."""
    return (f"last ack on {r.get('old_leader')} {secs(r.get('last_old_ack'))} s, first ack on "
            f"{r.get('new_leader')} {secs(r.get('first_new_ack'))} s after the cut; dual-write acks "
            f"{r.get('dual_acks')}; reads refused {secs(r.get('reads_refused'))} s after the cut, read-only "
            f"{secs(r.get('read_only_after'))} s later, {r.get('unanswered')}/{r.get('probes_during_cut')} "
            f"unanswered until the heal; streaming {secs(r.get('stream_after_heal'))} s after the heal; "
            f"pg_rewind {'yes' if r.get('rewind') else 'no'}")


def cell(runs, key, unit=" s"):
    """Median (min–max) of KEY over RUNS; '[k/n runs]' when some runs lack it."""
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "—"
    med = statistics.median(values)
    text = f"{med:.2f}{unit} ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else f"{med:.2f}{unit}"
    if len(values) < len(runs):
        text += f" [{len(values)}/{len(runs)} runs]"
    return text


def overlap_cell(runs, key):
    """'no' when no run had any, else the median (min–max) with how many runs had one."""
    hits = [r for r in runs if r.get(key)]
    return "no" if not hits else f"yes, {len(hits)}/{len(runs)} runs: {cell(hits, key)}"


def count_cell(runs, key):
    values = [r.get(key) for r in runs]
    if any(v is None for v in values):
        return "?"
    total = sum(values)
    return "0" if total == 0 else f"{total} ({sum(1 for v in values if v)}/{len(values)} runs)"


def render_cut(results, settings, tools, tool_titles, header):
    """The generated block: HEADER (command, date, versions, machine), the table, every run."""
    rows = ["| tool | ttl / loop_wait / retry_timeout | last ack on old leader | first ack on new leader "
            "| acks on old after new's first | old answered as primary after new's first ack "
            "| reads refused | read-only again after | unanswered reads until heal "
            "| streams from new leader after heal | pg_rewind | lost rows |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runs_rows = ["| tool | setting | run | old → new | last old ack | first new ack | acks on old after | "
                 "reads refused | read-only after | unanswered | streams after heal | pg_rewind | lost | note |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, ttl, lw, rt in settings:
        for tool in tools:
            runs = results.get((tool, name, SCENARIO))
            if not runs:
                continue
            done = [r for r in runs if r.get("first_new_ack") is not None or r.get("reads_refused") is not None]
            unans = sum(r.get("unanswered") or 0 for r in done)
            probes = sum(r.get("probes_during_cut") or 0 for r in done)
            rewinds = sum(1 for r in done if r.get("rewind"))
            rows.append(
                f"| {tool_titles[tool]} | {ttl} / {lw} / {rt} | {cell(done, 'last_old_ack')} "
                f"| {cell(done, 'first_new_ack')} | {count_cell(done, 'dual_acks')} "
                f"| {overlap_cell(done, 'old_primary_after_new')} | {cell(done, 'reads_refused')} "
                f"| {cell(done, 'read_only_after')} | {unans} of {probes} "
                f"| {cell(done, 'stream_after_heal')} | {rewinds}/{len(done)} runs | {count_cell(done, 'lost')} |")
            for r in runs:
                runs_rows.append(
                    f"| {tool_titles[tool]} | {ttl}/{lw}/{rt} | {r['run']} | {r.get('old_leader')} → "
                    f"{r.get('new_leader') or '—'} | {secs(r.get('last_old_ack'))} | {secs(r.get('first_new_ack'))} "
                    f"| {r.get('dual_acks', '—')} | {secs(r.get('reads_refused'))} | {secs(r.get('read_only_after'))} "
                    f"| {r.get('unanswered', '—')}/{r.get('probes_during_cut', '—')} "
                    f"| {secs(r.get('stream_after_heal'))} | {'yes' if r.get('rewind') else 'no'} "
                    f"| {r.get('lost') if r.get('lost') is not None else '?'} | {(r.get('note') or '').rstrip('; ')} |")
    table, runs_table = "\n".join(rows), "\n".join(runs_rows)
    block = f"""<!-- {MARKER}:begin (generated by scripts/bench_failover.py --scenarios {SCENARIO}; rerun to replace) -->
{header}

Seconds after the cut (after the heal for streaming), median (min–max) over the runs. "Reads refused":
the first probe on the old leader that got no answer; "read-only again after": from then to the first
answer `pg_is_in_recovery() = true`; "unanswered reads until heal": failed probes from then until the
heal, of all probes in that span; lost rows summed over the runs.

{table}

Every run (seconds; acks on the old leader after the new leader's first ack; unanswered/all probes
between read-only again and the heal):

{runs_table}

<!-- {MARKER}:end -->
"""
    return {"table": table, "block": block}
