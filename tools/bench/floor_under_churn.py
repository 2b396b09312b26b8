#!/usr/bin/env python3
"""The floor chain's own step (`bridge` with `host-local` IPAM), idle and
under kube-proxy churn: a diagnostic next to contention.py and
plugin_under_churn.py (prints figures; not a test).

  sudo tools/bench/floor_under_churn.py [--services 5000] [--adds 100] [--trace] [--json out.json]

contention.py finds the floor chain (bridge + host-local, which never touch
xtables) several times slower at p99 under churn on a small VM. This asks
where that time goes. The driver moves itself into a node netns (setns, so
no per-ADD `ip netns exec` mount namespace is created and torn down) and
execs /usr/lib/cni/bridge ADD into a fresh pod netns --adds times idle, then
--adds times while a kube-proxy-shaped iptables-legacy ruleset of
--services Services is re-applied back to back in another netns
(contention.py's Churn, same placement: restores on the last CPU, the rest
on the others). Prints p50/p90/p99/max per phase and the plugins' CPU.

--trace (needs `perf`, Debian package linux-perf) records scheduler events
during each phase and prints, for the bridge and host-local threads, where
they waited: total time blocked in uninterruptible sleep (D) grouped by the
top kernel frames, and total run-queue delay.
"""
import argparse
import collections
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import contention  # noqa: E402

CLONE_NEWNET = 0x40000000
BRIDGE = "/usr/lib/cni/bridge"


def setns(fd, what):
    """Moves this (single-threaded) driver into the network namespace `fd`
    (Python 3.11 has no os.setns)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns {what}")


def d_state_waits(perf_data, tasks=("bridge", "host-local")):
    """(ms blocked in D by top-3 kernel frames, total run-queue delay ms) of
    `tasks`, from `perf sched timehist --state` (wait time is attributed to
    the state the task was in before it ran again)."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", perf_data, "--state"], capture_output=True,
                         text=True).stdout
    blocked = collections.Counter()
    sch_delay = 0.0
    for line in out.splitlines()[3:]:
        f = line.split()
        if len(f) < 7 or not any(f[2].startswith(t + "[") for t in tasks):
            continue
        try:
            wait, delay = float(f[3]), float(f[4])
        except ValueError:
            continue
        sch_delay += delay
        if f[6] == "D":
            frames = " <- ".join(x.strip() for x in " ".join(f[7:]).split("<-")[:3])
            blocked[frames] += wait
    return blocked, sch_delay


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--adds", type=int, default=100, help="bridge ADDs per phase")
    ap.add_argument("--trace", action="store_true", help="perf sched: where the plugins waited (needs perf)")
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("floor_under_churn: needs root")
    if not os.access(BRIDGE, os.X_OK):
        raise SystemExit(f"floor_under_churn: {BRIDGE} missing (containernetworking-plugins)")
    if a.trace and not shutil.which("perf"):
        raise SystemExit("floor_under_churn: --trace needs perf (apt-get install linux-perf)")
    churn_cpus, other_cpus = contention.split_cpus("auto")
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    tag = str(os.getpid())
    node, churn_ns = f"rpfln{tag}", f"rpflc{tag}"
    tmp = tempfile.mkdtemp(prefix="rp-floor-")
    pods = []
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "floor", "type": "bridge", "bridge": "rpfl0",
                       "isGateway": True, "ipMasq": False,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.78.0.0/16"}]],
                                "dataDir": os.path.join(tmp, "ipam")}}).encode()
    churn = None
    results = {}
    try:
        benchlib.netns_add(node)
        benchlib.netns_add(churn_ns)
        rules_path = os.path.join(tmp, "kube-proxy.rules")
        nrules = contention.load_churn_ruleset(churn_ns, rules_path, a.services)
        print(f"N={a.services} Services ({nrules} rules); churn CPUs {churn_cpus or 'any'}, "
              f"the rest on {other_cpus or 'any'}", flush=True)
        fd = os.open(f"/run/netns/{node}", os.O_RDONLY)
        try:
            setns(fd, node)
        finally:
            os.close(fd)

        def phase(name):
            perf = None
            if a.trace:
                perf = subprocess.Popen(["perf", "sched", "record", "-g", "-o", os.path.join(tmp, name + ".data")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            ms, cpu = [], []
            for i in range(a.adds):
                pod = f"rpflp{tag}-{name}-{i}"
                benchlib.netns_add(pod)
                pods.append(pod)
                env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod, "CNI_NETNS": f"/run/netns/{pod}",
                       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
                r = benchlib.bounded_exec([BRIDGE], env, stdin=conf, deadline=time.monotonic() + 30)
                if r.rc != 0 or r.censored:
                    raise SystemExit(f"floor_under_churn: bridge ADD failed ({r.rc}): {r.stdout[-300:]!r}")
                ms.append(r.seconds * 1e3)
                cpu.append((r.cpu_seconds or 0) * 1e3)
            if perf:
                perf.send_signal(2)
                perf.wait(timeout=60)
            s = sorted(ms)
            st = {"adds": len(s), "p50_ms": benchlib.percentile(s, 50), "p90_ms": benchlib.percentile(s, 90),
                  "p99_ms": benchlib.percentile(s, 99), "max_ms": s[-1],
                  "cpu_p50_ms": benchlib.percentile(sorted(cpu), 50), "ms": [round(x, 3) for x in ms]}
            print(f"{name:6s} ADDs {len(s):4d}  p50 {st['p50_ms']:6.1f} ms  p90 {st['p90_ms']:6.1f} ms  "
                  f"p99 {st['p99_ms']:6.1f} ms  max {st['max_ms']:6.1f} ms  bridge CPU p50 {st['cpu_p50_ms']:5.1f} ms",
                  flush=True)
            if a.trace:
                blocked, delay = d_state_waits(os.path.join(tmp, name + ".data"))
                st["d_state_ms"] = dict(blocked.most_common(8))
                st["runqueue_delay_ms"] = delay
                print(f"       run-queue delay {delay:7.1f} ms in total; blocked (D) in total "
                      f"{sum(blocked.values()):7.1f} ms, by top frames:")
                for frames, w in blocked.most_common(5):
                    print(f"       {w:7.1f} ms  {frames}")
            return st

        results["idle"] = phase("idle")
        churn = contention.Churn(churn_ns, rules_path, 100000, 1800, 120, churn_cpus)
        churn.start()
        churn.first_done.wait(timeout=125)
        results["churn"] = phase("churn")
        churn.stop()
        churn = None
        ratio = results["churn"]["p99_ms"] / results["idle"]["p99_ms"]
        print(f"p99 churn / p99 idle: {ratio:.2f}x")
        if a.json:
            benchlib.write_json(a.json, dict(results, services=a.services, rules=nrules, p99_ratio=ratio,
                                             cpus_churn=churn_cpus, cpus_other=other_cpus))
    finally:
        if churn:
            churn.stop()
        setns(home, "back to the driver's own netns")  # before netns_del kills what runs in `node`
        for ns in pods + [node, churn_ns]:
            benchlib.netns_del(ns)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
