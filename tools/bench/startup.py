#!/usr/bin/env python3
"""Agent start -> SERVING and RSS against the size of its checkpoint.

  sudo tools/bench/startup.py [--sizes 0,1000,10000,100000] [--repeats 3] [--build build-bench] [--json out.json]

For each size N, in network namespaces created and removed here:
  1. start an agent on an empty state dir and register N attachments through
     its public gRPC API (Cni.Add, the call the plugin makes; one IPv4
     address each, no host ports; ruleplane-agent-bench load, 64 client
     threads), note its RSS, stop it with SIGTERM (kernel state stays);
  2. table present: restart it in the same namespace --repeats times;
  3. table absent: start it --repeats times in a fresh namespace with a copy
     of the state dir as it was right after step 1 (checkpoint present, the
     table must be built from scratch in one transaction).
Each start is timed by ruleplane-agent-bench startup: posix_spawn of the agent
(already inside the namespace) -> first grpc.health.v1 Check answering
SERVING (polled every 1 ms), then VmRSS/VmHWM at SERVING and 1 s later, and
the attachment count the agent reports (must be N).

Targets (issue 6): <= 200 ms and <= 40 MB at 10k. Printed as PASS/MISS; exit
0 either way, 1 if something could not run or a count was wrong.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def dir_bytes(d):
    out = {}
    for f in sorted(os.listdir(d)):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            out[f] = os.path.getsize(p)
    return out


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Startup:
    def __init__(self, a):
        self.a = a
        build = a.build if os.path.isabs(a.build) else os.path.join(REPO, a.build)
        self.agent = os.path.join(build, "agent", "ruleplane-agent")
        self.tool = os.path.join(build, "tools", "ruleplane-agent-bench")
        self.ctl = os.path.join(build, "tools", "ruleplanectl")
        for f in (self.agent, self.tool, self.ctl):
            if not os.access(f, os.X_OK):
                raise SystemExit(f"startup: {f} missing (build the ruleplane-agent-bench target)")
        self.tmp = tempfile.mkdtemp(prefix="rp-startup.", dir=a.state_root or None)
        self.tag = f"rpst{os.getpid()}"
        self.namespaces = []
        self.children = []
        self.seq = 0

    def ns(self):
        self.seq += 1
        name = f"{self.tag}-{self.seq}"
        self.namespaces.append(name)
        benchlib.netns_add(name)
        return name

    def drop(self, name):
        benchlib.netns_del(name)
        self.namespaces.remove(name)

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in list(self.namespaces):
            benchlib.netns_del(n)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def agent_args(self, sock, state):
        return [self.agent, f"--socket={sock}", f"--state-dir={state}"]

    def timed_start(self, ns, sock, state):
        if os.path.exists(sock):
            os.unlink(sock)
        r = subprocess.run([self.tool, "startup", f"--socket={sock}", f"--netns={ns}", "--stop", "--timeout=120s",
                            "--"] + self.agent_args(sock, state), capture_output=True, text=True, timeout=300)
        try:
            d = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise SystemExit(f"startup: no result from ruleplane-agent-bench: {r.stdout} {r.stderr}")
        if r.returncode != 0:
            d["error"] = d.get("error") or r.stderr[-300:]
        return d

    def size(self, n):
        a = self.a
        print(f"== {n} attachments", file=sys.stderr, flush=True)
        ns = self.ns()
        state = os.path.join(self.tmp, f"state-{n}")
        sock = os.path.join(self.tmp, f"agent-{n}.sock")
        log = open(os.path.join(self.tmp, f"agent-{n}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + self.agent_args(sock, state), stdout=log,
                             stderr=subprocess.STDOUT)
        self.children.append(p)
        if not benchlib.wait_healthy(self.ctl, sock, p, tries=400):
            raise SystemExit(f"startup: loading agent not healthy, see {log.name}")
        load = {"n": 0, "seconds": 0.0, "errors": 0}
        if n:
            r = subprocess.run([self.tool, "load", f"--socket={sock}", f"--n={n}", "--concurrency=64"],
                               capture_output=True, text=True, timeout=a.load_bound)
            load = json.loads(r.stdout)
            if r.returncode != 0:
                raise SystemExit(f"startup: load failed: {r.stdout} {r.stderr}")
        loaded_rss = rss_kb(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        pristine = os.path.join(self.tmp, f"pristine-{n}")
        shutil.copytree(state, pristine)
        files = dir_bytes(pristine)
        print(f"  loaded {n} in {load['seconds']:.1f} s; state dir {files}", file=sys.stderr, flush=True)

        present = []
        for _ in range(a.repeats):
            present.append(self.timed_start(ns, sock, state))
        self.drop(ns)
        absent = []
        for r in range(a.repeats):
            fresh = self.ns()
            st = os.path.join(self.tmp, f"state-{n}-fresh{r}")
            shutil.copytree(pristine, st)
            absent.append(self.timed_start(fresh, sock, st))
            self.drop(fresh)
            shutil.rmtree(st, ignore_errors=True)
        shutil.rmtree(pristine, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        return {"n": n, "load": load, "rss_kb_after_load": loaded_rss, "state_files": files,
                "table_present": self.summ(present), "table_absent": self.summ(absent)}

    @staticmethod
    def summ(runs):
        ms = [r["start_to_serving_ms"] for r in runs if r["start_to_serving_ms"] >= 0]
        rss = [r["rss_kb_settled"] for r in runs if r["rss_kb_settled"] > 0]
        hwm = [r["hwm_kb_settled"] for r in runs if r["hwm_kb_settled"] > 0]
        return {"runs": runs,
                "serving_ms": {"median": benchlib.percentile(ms, 50), "min": min(ms) if ms else None,
                               "max": max(ms) if ms else None},
                "rss_kb": {"median": benchlib.percentile(rss, 50), "min": min(rss) if rss else None,
                           "max": max(rss) if rss else None},
                "hwm_kb": {"median": benchlib.percentile(hwm, 50), "max": max(hwm) if hwm else None},
                "attachments": sorted({r["attachments"] for r in runs}),
                "errors": [r["error"] for r in runs if r.get("error")]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--sizes", default="0,1000,10000,100000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--load-bound", type=float, default=900, help="seconds allowed for loading one size")
    ap.add_argument("--state-root", default="", help="parent of the state dirs (default $TMPDIR or /tmp)")
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("startup: needs root (netns, nftables)")
    s = Startup(a)
    res = {"config": vars(a).copy(), "sizes": []}

    def on_signal(sig, _):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for n in [int(x) for x in a.sizes.split(",")]:
            res["sizes"].append(s.size(n))
    finally:
        s.cleanup()
    bad = False
    print(f"agent start -> SERVING (median of {a.repeats}, [min-max]) and RSS 1 s after SERVING")
    print(f"  {'attachments':>11} {'table':8} {'serving ms':>22} {'RSS MB':>16} {'peak MB':>8}  count")
    for z in res["sizes"]:
        for key, label in (("table_present", "present"), ("table_absent", "absent")):
            d = z[key]
            sv, rs = d["serving_ms"], d["rss_kb"]
            counts = d["attachments"]
            ok_count = counts == [z["n"]]
            bad |= not ok_count or bool(d["errors"])
            print(f"  {z['n']:>11} {label:8} {sv['median'] or -1:>9.1f} [{sv['min'] or -1:.1f}-{sv['max'] or -1:.1f}]"
                  f" {(rs['median'] or 0) / 1024:>7.1f} [{(rs['min'] or 0) / 1024:.1f}-{(rs['max'] or 0) / 1024:.1f}]"
                  f" {(d['hwm_kb']['max'] or 0) / 1024:>8.1f}  {counts}{'' if ok_count else ' WRONG'}"
                  f"{'  errors: ' + d['errors'][0][:80] if d['errors'] else ''}")
    for z in res["sizes"]:
        if z["n"] == 10000:
            for key in ("table_present", "table_absent"):
                d = z[key]
                t_ok = (d["serving_ms"]["median"] or 1e9) <= 200
                m_ok = (d["rss_kb"]["median"] or 1e9) <= 40 * 1024
                print(f"target at 10k ({key.replace('_', ' ')}): start->SERVING <= 200 ms "
                      f"{'PASS' if t_ok else 'MISS'}, RSS <= 40 MB {'PASS' if m_ok else 'MISS'}")
    if a.json:
        benchlib.write_json(a.json, res)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
