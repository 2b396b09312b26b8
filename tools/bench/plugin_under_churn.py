#!/usr/bin/env python3
"""The `ruleplane` plugin alone, idle and under kube-proxy churn: a
diagnostic next to contention.py (prints figures; not a test).

  sudo tools/bench/plugin_under_churn.py [--build build-bench/obj] [--services 5000] [--seconds 25]

One agent in its own netns; the plugin ADD exec'd back to back (synthetic
bridge-shaped prevResult, as plugin_latency.py) for --seconds idle, then for
--seconds while a kube-proxy-shaped iptables-legacy ruleset of --services
Services is re-applied back to back in another netns (contention.py's
Churn). Placement as contention.py --pin auto: restores on the last CPU,
agent, plugin and this driver on the others. Prints per phase: ADDs, p50,
p99, max, how many took over 10 / 20 ms, and the agent's slowest commit and
queue wait from its per-commit log lines. It answers one question: does the
ruleplane path itself (plugin exec, gRPC, queue, nftables commit) slow down
under churn, apart from everything else a chain does?
"""
import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import contention  # noqa: E402
import plugin_latency  # noqa: E402


def phase(run, name, seconds):
    ms = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        s, censored, err, _ = run.plugin_add()
        if err:
            raise SystemExit(f"plugin_under_churn: ADD failed: {err}")
        ms.append(s * 1e3)
    ms.sort()
    n = len(ms)
    stats = {"adds": n, "p50_ms": ms[n // 2], "p99_ms": ms[int(n * 0.99)], "max_ms": ms[-1],
             "over_10ms": sum(x > 10 for x in ms), "over_20ms": sum(x > 20 for x in ms)}
    print(f"{name:6s} ADDs {n:6d}  p50 {ms[n // 2]:6.2f} ms  p99 {ms[int(n * 0.99)]:6.2f} ms  max {ms[-1]:7.2f} ms  "
          f">10 ms {stats['over_10ms']:4d}  >20 ms {stats['over_20ms']:4d}", flush=True)
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-bench/obj")
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=25)
    ap.add_argument("--json", help="write the figures here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("plugin_under_churn: needs root")
    churn_cpus, other_cpus = contention.split_cpus("auto")
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    run = plugin_latency.Run(argparse.Namespace(build=a.build, state_root=None, exec_bound=5.0))
    churn_ns = f"rppuc{os.getpid()}"
    rules_path = os.path.join(run.tmp, "kube-proxy.rules")
    try:
        benchlib.netns_add(churn_ns)
        nrules = contention.load_churn_ruleset(churn_ns, rules_path, a.services)
        print(f"N={a.services} Services ({nrules} rules); churn CPUs {churn_cpus or 'any'}, "
              f"the rest on {other_cpus or 'any'}", flush=True)
        run.setup()
        idle = phase(run, "idle", a.seconds)
        churn = contention.Churn(churn_ns, rules_path, 100000, a.seconds + 600, 120, churn_cpus)
        churn.start()
        churn.first_done.wait(timeout=125)
        busy = phase(run, "churn", a.seconds)
        churn.stop()
        rs = sorted(r["s"] for r in churn.restores)
        print(f"restores {len(rs)}, p50 {rs[len(rs) // 2]:.2f} s" if rs else "restores 0")
        ratio = busy["p99_ms"] / idle["p99_ms"]
        print(f"p99 churn / p99 idle: {ratio:.2f}x")
        with open(os.path.join(run.tmp, "agent.log")) as f:
            lines = [ln for ln in f if "commit id=" in ln]

        def worst(key):
            vals = [float(m.group(1)) for ln in lines if (m := re.search(rf" {key}=([\d.]+)ms", ln))]
            return max(vals) if vals else float("nan")
        print(f"agent: {len(lines)} commits, slowest commit {worst('commit'):.2f} ms, "
              f"longest queue wait {worst('queue_wait_max'):.2f} ms")
        if a.json:
            benchlib.write_json(a.json, {
                "services": a.services, "rules": nrules, "seconds": a.seconds, "cpus_churn": churn_cpus,
                "cpus_other": other_cpus, "idle": idle, "churn": busy, "p99_ratio": ratio,
                "restores": len(rs), "restore_p50_s": rs[len(rs) // 2] if rs else None, "agent_commits": len(lines),
                "agent_slowest_commit_ms": worst("commit"), "agent_longest_queue_wait_ms": worst("queue_wait_max")})
    finally:
        run.cleanup()
        benchlib.netns_del(churn_ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
