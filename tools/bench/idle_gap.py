#!/usr/bin/env python3
"""A request after an idle second: does the agent answer it at once?

  sudo tools/bench/idle_gap.py [--repeats 6] [--build build] [--json out.json]

gRPC 1.51's callback API (every ruleplane service) runs handlers on a few
"nexting" threads that, after 1 s without events, sleep 100 ms without
polling; a request that arrives in that window waits for the end of the
sleep. The agent keeps them awake with an in-process ping
(--grpc_poller_keepalive_ms, agent/api/poller_keeper.h). This benchmark
starts the agent twice in a private network namespace (created and removed
here), once as shipped and once with the keeper off (the baseline, same run),
and times a grpc.health.v1 Check on a fresh connection (as each CNI plugin
exec makes one) after idle gaps around 1 s and 2 s
(`ruleplane-agent-bench gaps`). The gaps are visited in the same order in
both runs.

Prints per gap the median and max ms of both agents and how many calls took
longer than --slow-ms (default 30). Exit 0 whether or not stalls are seen; 1
if it could not run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
GAPS = ["0.5", "0.98", "1.0", "1.02", "1.04", "1.06", "1.08", "1.1", "1.3", "2.06", "2.1"]


def run_variant(args, name, extra_flags):
    ns = f"rp-gap-{os.getpid()}-{name}"
    tmp = tempfile.mkdtemp(prefix=f"rp-gap-{name}-")
    sock = os.path.join(tmp, "ruleplane.sock")
    agent = os.path.join(args.build, "agent", "ruleplane-agent")
    bench = os.path.join(args.build, "tools", "ruleplane-agent-bench")
    benchlib.netns_add(ns)
    proc = None
    try:
        with open(os.path.join(tmp, "agent.log"), "w") as log:
            proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", agent, f"--socket={sock}",
                                     f"--state-dir={os.path.join(tmp, 'state')}", "--metrics-address=",
                                     "--xtables_lock_monitor=false"] + extra_flags, stdout=log, stderr=log)
        if not benchlib.wait_healthy(os.path.join(args.build, "tools", "ruleplanectl"), sock, proc, tries=600):
            raise SystemExit(f"idle_gap: agent ({name}) did not serve; log in {tmp}")
        r = subprocess.run([bench, "gaps", f"--socket={sock}", "--gaps=" + ",".join(GAPS),
                            f"--repeats={args.repeats}"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(f"idle_gap: gaps run failed ({name}): {r.stderr.strip()}")
        return json.loads(r.stdout)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        benchlib.netns_del(ns)
        subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--slow-ms", type=float, default=30.0)
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("idle_gap: needs root (network namespaces)")
    args.build = os.path.abspath(args.build)
    results = {"keeper": run_variant(args, "keeper", []),
               "off": run_variant(args, "off", ["--grpc_poller_keepalive_ms=0"])}
    print(f"grpc.health.v1 Check on a fresh connection after an idle gap; {args.repeats} calls per gap")
    print(f"{'gap s':>6s} | {'keeper: median':>15s} {'max':>7s} | {'off: median':>12s} {'max':>7s}")
    slow = {}
    for v in results:
        slow[v] = sum(1 for row in results[v]["ms"] for x in row if x > args.slow_ms)
    for i, g in enumerate(results["keeper"]["gaps_s"]):
        k, o = results["keeper"]["ms"][i], results["off"]["ms"][i]
        print(f"{g:6.2f} | {statistics.median(k):15.1f} {max(k):7.1f} | {statistics.median(o):12.1f} {max(o):7.1f}")
    total = len(GAPS) * args.repeats
    print(f"\ncalls slower than {args.slow_ms:.0f} ms: keeper {slow['keeper']} of {total}, off {slow['off']} of {total}")
    if args.json:
        benchlib.write_json(args.json, {"args": {"repeats": args.repeats, "slow_ms": args.slow_ms},
                                        "results": results, "slow": slow, "calls": total})
    return 0


if __name__ == "__main__":
    sys.exit(main())
