"""Shared helpers for the Python benchmark drivers in tools/bench/.

- bounded_exec(): posix_spawn + pidfd + poll. Times one process from spawn to
  exit with a hard deadline; a process still running at the deadline is
  killed and reported as censored (its time is a lower bound), never dropped.
  posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK)) keeps the driver's own
  cost per exec to tens of microseconds, so what is timed is the child.
- Netns: create/delete named network namespaces (ip netns), registered for
  cleanup before they are created.
- Stats: percentiles with censoring flags, summaries as dicts.
- LockSampler: reads /proc/locks (read-only) to see who holds the global
  xtables lock and who waits for it.

Python 3 standard library only.
"""
import json
import math
import os
import select
import signal
import subprocess
import threading
import time

XTABLES_LOCK = "/run/xtables.lock"


class ExecResult:
    __slots__ = ("rc", "stdout", "stderr", "seconds", "censored", "t_start", "t_end", "cpu_seconds")

    def __init__(self, rc, stdout, stderr, seconds, censored, t_start, t_end, cpu_seconds=None):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.seconds, self.censored = seconds, censored
        self.t_start, self.t_end = t_start, t_end
        # user + system CPU of the process (wait4 rusage; its own children
        # only when they were reaped before it exited)
        self.cpu_seconds = cpu_seconds


def bounded_exec(argv, env, stdin=b"", deadline=None, capture=True):
    """Runs argv with exactly `env`, feeding `stdin`, until it exits or
    time.monotonic() reaches `deadline`. Returns ExecResult; censored=True
    means it was killed at the deadline (seconds = time it had run)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe() if capture else (None, None)
    err_r, err_w = os.pipe() if capture else (None, None)
    devnull = None
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0)]
    if capture:
        actions += [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    else:
        devnull = os.open(os.devnull, os.O_WRONLY)
        actions += [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    envlist = {k: v for k, v in env.items() if v is not None}
    t0 = time.monotonic()
    try:
        # Own process group: a censored plugin's children (bridge -> host-local,
        # portmap -> iptables waiting on the lock) are killed with it.
        pid = os.posix_spawn(argv[0], argv, envlist, file_actions=actions, setpgroup=0)
    finally:
        os.close(in_r)
        for fd in (out_w, err_w, devnull):
            if fd is not None:
                os.close(fd)
    pidfd = os.pidfd_open(pid)
    out, err = bytearray(), bytearray()
    censored = False
    try:
        # Configs are a few KB: they fit the pipe buffer, so write then close.
        if stdin:
            try:
                os.write(in_w, stdin)
            except BrokenPipeError:
                pass
        os.close(in_w)
        in_w = None
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        fds = {}
        for fd, buf in ((out_r, out), (err_r, err)):
            if fd is not None:
                poller.register(fd, select.POLLIN)
                fds[fd] = buf
        exited = False
        while not exited or fds:
            if deadline is None:
                timeout_ms = None
            else:
                timeout_ms = max(0, int(math.ceil((deadline - time.monotonic()) * 1000)))
            events = poller.poll(timeout_ms)
            if not events and deadline is not None and time.monotonic() >= deadline:
                if not exited:
                    censored = True
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    _, _, ru = os.wait4(pid, 0)
                    cpu = ru.ru_utime + ru.ru_stime
                    t1 = deadline
                    exited = True
                    rc = -9
                break
            for fd, ev in events:
                if fd == pidfd:
                    if not exited:
                        _, status, ru = os.wait4(pid, 0)
                        t1 = time.monotonic()
                        cpu = ru.ru_utime + ru.ru_stime
                        rc = os.waitstatus_to_exitcode(status)
                        exited = True
                        poller.unregister(pidfd)
                elif fd in fds:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        fds[fd].extend(chunk)
                    else:
                        poller.unregister(fd)
                        del fds[fd]
    finally:
        os.close(pidfd)
        for fd in (in_w, out_r, err_r):
            if fd is not None:
                os.close(fd)
    return ExecResult(rc, bytes(out), bytes(err), (t1 - t0), censored, t0, t1, cpu)


# ---------------------------------------------------------------- netns

def wait_healthy(ctl, sock, proc=None, tries=200, interval=0.05):
    """Polls `ruleplanectl health` on the agent's socket until it answers
    SERVING: True then; False after `tries` polls, or as soon as `proc` (the
    agent's Popen, when given) has exited."""
    for _ in range(tries):
        if subprocess.run([ctl, f"--socket={sock}", "--timeout=300ms", "health"], capture_output=True).returncode == 0:
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(interval)
    return False


def netns_add(name):
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def netns_del(name):
    """Kills what still runs inside and deletes the namespace; never raises."""
    r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for p in r.stdout.split():
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def netns_exec(name, argv):
    return ["/usr/bin/nsenter", f"--net=/run/netns/{name}", "--"] + argv


# ---------------------------------------------------------------- stats

def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, int(math.ceil(p / 100.0 * len(v))))
    return v[k - 1]


def summarize(samples):
    """samples: list of (seconds, censored). A censored sample is a lower
    bound; it sorts as its bound (at the top, since the bound is the
    largest time allowed), and a percentile that lands on one is flagged."""
    if not samples:
        return {"n": 0}
    order = sorted(samples, key=lambda s: (s[0], s[1]))
    def pick(p):
        k = max(1, int(math.ceil(p / 100.0 * len(order))))
        s = order[k - 1]
        return {"ms": s[0] * 1000, "censored": bool(s[1])}
    return {
        "n": len(order),
        "censored": sum(1 for s in order if s[1]),
        "p50": pick(50), "p90": pick(90), "p99": pick(99), "max": pick(100),
        "mean_ms": sum(s[0] for s in order) * 1000 / len(order),
        "ms": [round(s[0] * 1000, 3) for s in samples],
        "censored_flags": [bool(s[1]) for s in samples],
    }


def fmt_ms(x):
    if x is None:
        return "-"
    if isinstance(x, dict):
        if "ms" not in x:
            return "-"
        return (">=" if x.get("censored") else "") + fmt_ms(x["ms"])
    if x >= 10000:
        return f"{x / 1000:.1f}s"
    if x >= 1000:
        return f"{x / 1000:.2f}s"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


# ---------------------------------------------------------------- /proc/locks

class LockSampler:
    """Samples /proc/locks every `interval` seconds (read-only) and keeps,
    for the xtables lock file, each holder's observed hold intervals and the
    number of waiters. Holds shorter than the interval can be missed; the
    report says it is sampled."""

    def __init__(self, path=XTABLES_LOCK, interval=0.005, cpus=None):
        self.path, self.interval, self.cpus = path, interval, cpus
        self._stop = threading.Event()
        self._thread = None
        self.holds = []          # finished: {pid, comm, start, end}
        self.max_waiters = 0
        self.samples = 0
        self.samples_waiting = 0
        self._cur = None         # (pid, comm, start, last_seen)
        self.waiting = []        # (t, waiters) for samples with waiters
        self._comm = {}

    def _key(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"

    def _comm_of(self, pid):
        """argv[0]'s base name, plus the parent's name for short-lived
        xtables users (which plugin ran this iptables?)."""
        c = self._comm.get(pid)
        if c is None:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    c = os.path.basename(f.read().split(b"\0")[0].decode(errors="replace")) or "(exited)"
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{ppid}/comm") as f:
                    c += f" (parent {f.read().strip()})"
            except (OSError, ValueError, IndexError):
                c = c or "(exited before it was named)"
            self._comm[pid] = c
        return c

    def _run(self):
        if self.cpus:
            os.sched_setaffinity(threading.get_native_id(), self.cpus)  # off the CPUs being measured
        key = None
        while not self._stop.is_set():
            if key is None:
                key = self._key()
            now = time.monotonic()
            holder, waiter_pids = None, []
            if key is not None:
                with open("/proc/locks") as f:
                    for line in f:
                        if key not in line:
                            continue
                        parts = line.split()
                        # "1: FLOCK ADVISORY WRITE <pid> ..." holds;
                        # "1: -> FLOCK ADVISORY WRITE <pid> ..." waits.
                        if parts[1] == "->":
                            waiter_pids.append(int(parts[5]))
                        else:
                            holder = int(parts[4])
            self.samples += 1
            if self.samples == 1:
                self.t_first = now
            self.t_last = now
            waiters = len(waiter_pids)
            if waiters:
                self.samples_waiting += 1
                self.waiting.append((now, waiters, tuple(self._comm_of(p) for p in waiter_pids)))
            self.max_waiters = max(self.max_waiters, waiters)
            if self._cur and (holder is None or holder != self._cur[0]):
                pid, comm, start, last, n = self._cur
                self.holds.append({"pid": pid, "comm": comm, "start": start, "end": last, "samples": n})
                self._cur = None
            if holder is not None:
                if self._cur is None:
                    self._cur = (holder, self._comm_of(holder), now, now, 1)
                else:
                    self._cur = (self._cur[0], self._cur[1], self._cur[2], now, self._cur[4] + 1)
            self._stop.wait(self.interval)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True, name="lock-sampler")
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self._cur:
            pid, comm, start, last, n = self._cur
            self.holds.append({"pid": pid, "comm": comm, "start": start, "end": last, "samples": n})
            self._cur = None

    def window(self, t0, t1):
        """Summary of [t0, t1], grouped by program (argv[0] + parent):
        holds seen, held time estimated as samples x sampling period (a hold
        seen in one sample counts one period), the longest hold seen
        (first..last sample, a lower bound), and the time each program spent
        waiting for the lock, estimated the same way."""
        period = self.period()
        by = {}
        held = 0.0
        for h in self.holds:
            s, e = max(h["start"], t0), min(h["end"], t1)
            if e < s:
                continue
            prog = h["comm"] or "?"
            d = by.setdefault(prog, {"holds": 0, "held_s": 0.0, "max_hold_s": 0.0, "waited_s": 0.0})
            d["holds"] += 1
            share = (e - s) / (h["end"] - h["start"]) if h["end"] > h["start"] else 1.0
            d["held_s"] += h["samples"] * period * share
            d["max_hold_s"] = max(d["max_hold_s"], h["end"] - h["start"])
            held += h["samples"] * period * share
        w = [x for x in self.waiting if t0 <= x[0] <= t1]
        for _, _, names in w:
            for prog in names:
                d = by.setdefault(prog, {"holds": 0, "held_s": 0.0, "max_hold_s": 0.0, "waited_s": 0.0})
                d["waited_s"] += period
        span = max(1e-9, t1 - t0)
        return {"span_s": span, "held_fraction": min(1.0, held / span), "by_program": by,
                "max_waiters": max((x[1] for x in w), default=0),
                # samples with waiters x the mean sampling period
                "waiting_fraction": len(w) * period / span,
                "period_s": period}

    def period(self):
        if self.samples < 2:
            return self.interval
        return (self.t_last - self.t_first) / (self.samples - 1)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
