"""Shared pieces of scripts/bench_failover.py, scripts/bench_metrics.py and scripts/bench_snap.py.

Python 3 standard library only (bench_metrics.py needs nothing else): stopping
on a signal, processes told apart by pid and start time, the pid registry a
run writes to DIR/pids.jsonl, the leftovers found under a work directory, a
time-stamped event log, and the generated block of a docs/benchmarks.md section.
"""

import datetime
import glob
import json
import os
import platform
import random
import signal
import statistics
import string
import threading
import time

STOP = threading.Event()  # set on SIGINT/SIGTERM


class Interrupted(Exception):
    pass


def sleep(seconds):
    if STOP.wait(max(0.0, seconds)):
        raise Interrupted()


def stop_on_signals():
    """SIGTERM and SIGINT set STOP, so that sleep() raises Interrupted and the run cleans up."""

    def on_signal(signum, frame):
        STOP.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def password(n=20):
    return "".join(random.SystemRandom().choice(string.ascii_letters + string.digits) for _ in range(n))


# --------------------------------------------------------------------------- processes


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        if rest[0] == "Z":
            return None
        return int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def alive(pid):
    return pid is not None and pid > 0 and proc_start_time(pid) is not None


def kill(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


class Registry:
    """Every process the benchmark starts, as (pid, start time, what) lines in DIR/pids.jsonl."""

    def __init__(self, dir):
        self.path = os.path.join(dir, "pids.jsonl")

    def add(self, pid, what):
        st = proc_start_time(pid)
        with open(self.path, "a") as f:
            f.write(json.dumps({"pid": pid, "start": st, "what": what}) + "\n")

    def entries(self):
        try:
            with open(self.path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except OSError:
            return []


def ours_still(entry):
    """Whether a registry entry's pid still runs the process we started (same start time)."""
    return entry["start"] is not None and proc_start_time(entry["pid"]) == entry["start"]


def postmasters_under(dir, data_glob):
    """Postmasters of the data directories DIR/DATA_GLOB: pid from postmaster.pid, checked on its command line."""
    found = []
    for pidfile in glob.glob(os.path.join(dir, data_glob, "postmaster.pid")):
        data_dir = os.path.dirname(pidfile)
        try:
            with open(pidfile) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            continue
        args = cmdline(pid)
        if args and os.path.basename(args[0]) == "postgres" and data_dir in args:
            found.append(pid)
    return found


def guards_under(dir):
    """pgpilot fence-guard processes whose --data-dir lies under DIR."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = cmdline(int(entry))
        if "fence-guard" in args and any(a.startswith(dir + "/") for a in args):
            found.append(int(entry))
    return found


def fence_guard_of(sidecar):
    """The `pgpilot fence-guard` child of the sidecar SIDECAR (spawned from any of its threads), or None."""
    try:
        tids = os.listdir(f"/proc/{sidecar}/task")
    except OSError:
        return None
    # The main thread first: that is where the sidecar usually spawns it.
    for tid in [str(sidecar)] + [t for t in tids if t != str(sidecar)]:
        try:
            with open(f"/proc/{sidecar}/task/{tid}/children") as f:
                for pid in (int(x) for x in f.read().split()):
                    if "fence-guard" in cmdline(pid):
                        return pid
        except OSError:
            pass
    return None


def stop_group(pids, timeout, log=print, label="", show_cmdline=False):
    """SIGTERM PIDS, SIGKILL those still alive after TIMEOUT seconds, then wait up to 5 s more."""
    for pid in pids:
        shown = f" ({' '.join(cmdline(pid))[:80]})" if show_cmdline else ""
        log(f"cleanup: SIGTERM {label}pid {pid}{shown}")
        kill(pid, signal.SIGTERM)
    if not wait_gone(pids, timeout):
        for pid in pids:
            if alive(pid):
                log(f"cleanup: SIGKILL {label}pid {pid}")
                kill(pid, signal.SIGKILL)
        wait_gone(pids, 5)


def stop_etcd(pids, log=print):
    """SIGTERM the benchmark's etcd, SIGKILL after 10 s; etcd goes last so members can still reach it."""
    for pid in pids:
        log(f"cleanup: SIGTERM etcd pid {pid}")
        kill(pid, signal.SIGTERM)
    if not wait_gone(pids, 10):
        for pid in pids:
            kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- machine


def load1():
    """The 1-minute load average, or None when /proc/loadavg cannot be read."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def load_summary(loads):
    """One line on the load samples of a run, for the report."""
    if not loads:
        return "load not sampled"
    return (f"1-minute load average {min(loads):.2f}–{max(loads):.2f} (median {statistics.median(loads):.2f}) "
            f"over {len(loads)} samples")


def others_running(dir, names, name_part=None):
    """Other people's processes (builds, tests) outside DIR: basenames among NAMES or containing NAME_PART,
    and "test binary" for cargo test executables (under target/*/deps/)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = cmdline(int(entry))
        if not args or dir in " ".join(args):
            continue
        base = os.path.basename(args[0])
        if "/deps/" in args[0]:
            found.add("test binary")
        elif base in names or (name_part is not None and name_part in base):
            found.add(base)
    return found


def first_line_value(path, prefix):
    """The rest of the first line of PATH that starts with PREFIX, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line[len(prefix):]
    except OSError:
        pass
    return None


def machine():
    """What the report says about the machine: os, kernel, nproc, cpu, memory."""
    cpu = first_line_value("/proc/cpuinfo", "model name")
    os_name = first_line_value("/etc/os-release", "PRETTY_NAME=")
    mem = first_line_value("/proc/meminfo", "MemTotal:")
    mem_kb = int(mem.split()[0]) if mem else None
    return {
        "nproc": os.cpu_count(),
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB" if mem_kb else "?",
        "cpu": cpu.split(":", 1)[1].strip() if cpu else "?",
        "os": os_name.strip().strip('"') if os_name else "?",
        "kernel": platform.release(),
    }


# --------------------------------------------------------------------------- event log


class EventLog:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, msg, echo=True):
        line = f"{utcnow().strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z {msg}"
        with self.lock:
            self.f.write(line + "\n")
        if echo:
            print(line, flush=True)


# --------------------------------------------------------------------------- report


def write_doc_block(path, marker, section, intro, block):
    """Replace the generated block <!-- MARKER:begin ... --> ... <!-- MARKER:end --> of PATH (a Markdown
    file); without one, append "## SECTION", INTRO and the block at the end (creating the file if needed)."""
    begin, end = f"<!-- {marker}:begin", f"<!-- {marker}:end -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in text and end in text:
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block.strip() + text[j:]
    else:
        text = text.rstrip() + f"\n\n## {section}\n\n" + intro.strip() + "\n\n" + block.strip() + "\n"
    with open(path, "w") as f:
        f.write(text)
