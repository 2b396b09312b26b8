#!/usr/bin/env python3
"""Plugin ADD latency: the `ruleplane` CNI plugin alone, exec to exit, next to
the process floor, in the same run.

  sudo tools/bench/plugin_latency.py [--pods 200] [--concurrency 20] [--build build-bench] [--json out.json]

An agent runs in a private network namespace (created and removed here). The
plugin is exec'd as a runtime execs a chained plugin: CNI_* environment,
config on stdin with a prevResult shaped like bridge + host-local's (fed
directly, so what is timed is our plugin alone) and one hostPort mapping in
runtimeConfig. Every ADD is a new attachment (fresh container id, address and
host port), i.e. one gRPC round trip and one real nftables commit.

The floor is `/usr/lib/cni/host-local` with CNI_COMMAND=VERSION: a reference
plugin process that starts, answers and exits without doing any work.
`/bin/true` is shown too (the cost of exec itself on this machine).

Modes: sequential (one at a time) and --concurrency-way concurrent (that many
threads, each exec'ing one process at a time). In both, each iteration runs
the plugin ADD, the floor and /bin/true back to back (order rotated), so the
three see the same machine conditions. Timing is posix_spawn -> exit
(tools/bench/benchlib.py), every exec bounded by --exec-bound.

Prints p50/p99/max per mode and the ratio plugin p50 / floor p50 (target
<= 1.5). Exit 0 whether or not the target is met; 1 if it could not run or an
ADD failed.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FLOOR = "/usr/lib/cni/host-local"


def prev_result(i, netns):
    a, b = (i >> 8) & 255, i & 255
    return {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cb0", "mac": "4a:11:22:33:44:55"},
            {"name": f"veth{i:08x}", "mac": "6e:11:22:33:44:55"},
            {"name": "eth0", "mac": f"0a:58:0a:46:{a:02x}:{b:02x}", "sandbox": netns},
        ],
        "ips": [{"address": f"10.70.{a}.{b}/16", "gateway": "10.70.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }


class Run:
    def __init__(self, a):
        self.a = a
        build = a.build if os.path.isabs(a.build) else os.path.join(REPO, a.build)
        self.agent_bin = os.path.join(build, "agent", "ruleplane-agent")
        self.ctl_bin = os.path.join(build, "tools", "ruleplanectl")
        self.plugin = os.path.join(build, "cni", "ruleplane")
        for f in (self.agent_bin, self.ctl_bin, self.plugin, FLOOR):
            if not os.access(f, os.X_OK):
                raise SystemExit(f"plugin_latency: {f} missing (build first)")
        self.tmp = tempfile.mkdtemp(prefix="rp-plugin-lat.")
        # The agent writes its journal before acknowledging a commit (and
        # fdatasyncs it with journal_fsync), so the state dir's filesystem is
        # part of every ADD; --state-root picks it.
        self.state_dir = tempfile.mkdtemp(prefix="rp-plugin-lat-state.", dir=a.state_root or None)
        self.ns = f"rppl{os.getpid()}"
        self.sock = os.path.join(self.tmp, "agent.sock")
        self.agent = None
        self.next_id = 0
        self.lock = threading.Lock()

    def setup(self):
        benchlib.netns_add(self.ns)
        self.netns_path = f"/run/netns/{self.ns}"
        log = open(os.path.join(self.tmp, "agent.log"), "w")
        self.agent = subprocess.Popen(["ip", "netns", "exec", self.ns, self.agent_bin, f"--socket={self.sock}",
                                       f"--state-dir={self.state_dir}/state", "--metrics-address="],
                                      stdout=log, stderr=subprocess.STDOUT)
        if benchlib.wait_healthy(self.ctl_bin, self.sock, self.agent):
            return
        raise SystemExit("plugin_latency: agent did not become healthy")

    def cleanup(self):
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        benchlib.netns_del(self.ns)
        subprocess.run(["rm", "-rf", self.tmp, self.state_dir])

    def plugin_add(self):
        with self.lock:
            self.next_id += 1
            i = self.next_id
        cid = f"lat-{i}"
        cfg = {"cniVersion": "1.0.0", "name": "bench", "type": "ruleplane", "socket": self.sock, "timeout": "2s",
               "capabilities": {"portMappings": True},
               "runtimeConfig": {"portMappings": [{"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}]},
               "prevResult": prev_result(i, self.netns_path)}
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid,
               "CNI_NETNS": self.netns_path, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid};K8S_POD_UID=uid-{i}"}
        r = benchlib.bounded_exec([self.plugin], env, json.dumps(cfg).encode(), time.monotonic() + self.a.exec_bound)
        err = None if r.rc == 0 and not r.censored else (r.stdout + r.stderr).decode(errors="replace")[-300:]
        return r.seconds, r.censored, err, r.cpu_seconds

    def floor(self):
        r = benchlib.bounded_exec([FLOOR], {"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                  b'{"cniVersion":"1.0.0"}', time.monotonic() + self.a.exec_bound)
        return r.seconds, r.censored, None if r.rc == 0 else r.stdout.decode(errors="replace"), r.cpu_seconds

    def true(self):
        r = benchlib.bounded_exec(["/bin/true"], {}, b"", time.monotonic() + self.a.exec_bound)
        return r.seconds, r.censored, None if r.rc == 0 else "rc", r.cpu_seconds

    def agent_cpu(self):
        """The agent's user+system CPU seconds so far (/proc/<pid>/stat)."""
        try:
            with open(f"/proc/{self.agent.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def iteration(self, k, rec):
        order = [("plugin", self.plugin_add), ("floor", self.floor), ("true", self.true)]
        k %= 3
        for name, fn in order[k:] + order[:k]:
            s, cens, err, cpu = fn()
            rec[name].append((s, cens))
            rec["cpu_" + name].append(cpu)
            if err:
                rec["errors"].append(f"{name}: {err}")

    def mode(self, concurrency):
        rec = {"plugin": [], "floor": [], "true": [], "errors": [], "cpu_plugin": [], "cpu_floor": [], "cpu_true": []}
        n = self.a.pods
        agent_cpu0 = self.agent_cpu()
        if concurrency <= 1:
            t0 = time.monotonic()
            for k in range(n):
                self.iteration(k, rec)
        else:
            counter = iter(range(n))
            lock = threading.Lock()
            barrier = threading.Barrier(concurrency)

            def work():
                barrier.wait()
                while True:
                    with lock:
                        k = next(counter, None)
                    if k is None:
                        return
                    self.iteration(k, rec)
            ts = [threading.Thread(target=work) for _ in range(concurrency)]
            t0 = time.monotonic()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        wall = time.monotonic() - t0
        agent_cpu1 = self.agent_cpu()
        out = {k: benchlib.summarize(v) for k, v in rec.items() if k in ("plugin", "floor", "true")}
        # CPU per exec does not depend on how loaded the machine is, unlike
        # wall time: it says what the process itself costs.
        out["cpu_ms_p50"] = {k: 1000 * benchlib.percentile([c for c in rec["cpu_" + k] if c is not None], 50)
                             for k in ("plugin", "floor", "true")}
        if agent_cpu0 is not None and agent_cpu1 is not None:
            out["agent_cpu_ms_per_add"] = 1000 * (agent_cpu1 - agent_cpu0) / n
        out["errors"] = rec["errors"]
        out["wall_s"] = wall
        out["concurrency"] = concurrency
        p, f = out["plugin"], out["floor"]
        out["ratio_p50"] = p["p50"]["ms"] / f["p50"]["ms"]
        out["ratio_p99"] = p["p99"]["ms"] / f["p99"]["ms"]
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--pods", type=int, default=200, help="ADDs per mode")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations first (page cache, agent warm-up)")
    ap.add_argument("--exec-bound", type=float, default=10.0, help="deadline of one exec (censored beyond)")
    ap.add_argument("--state-root", default="",
                    help="parent of the agent's state dir (default $TMPDIR or /tmp); e.g. /dev/shm to take the "
                         "journal's fdatasync out of the figure")
    ap.add_argument("--json")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("plugin_latency: needs root (netns, nftables)")
    r = Run(a)
    res = {"config": vars(a).copy()}
    try:
        r.setup()
        warm = {"plugin": [], "floor": [], "true": [], "errors": [], "cpu_plugin": [], "cpu_floor": [], "cpu_true": []}
        for k in range(a.warmup):
            r.iteration(k, warm)
        res["seq"] = r.mode(1)
        res["conc"] = r.mode(a.concurrency)
        st = subprocess.run([r.ctl_bin, f"--socket={r.sock}", "--json", "status"], capture_output=True, text=True)
        try:
            res["attachments"] = int(json.loads(st.stdout).get("attachments", -1))
        except ValueError:
            res["attachments"] = -1
        res["expected_attachments"] = a.warmup + 2 * a.pods - len(warm["errors"])
    finally:
        r.cleanup()
    errors = res["seq"]["errors"] + res["conc"]["errors"]
    res["state_fs"] = subprocess.run(["stat", "-f", "-c", "%T", a.state_root or tempfile.gettempdir()],
                                     capture_output=True, text=True).stdout.strip()
    print(f"plugin ADD latency (exec -> exit), {a.pods} ADDs per mode, same run; agent attachments "
          f"{res['attachments']} (expected {res['expected_attachments']}); agent state dir on {res['state_fs']}")
    print(f"  {'mode':14} {'process':22} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for m in ("seq", "conc"):
        d = res[m]
        label = "sequential" if m == "seq" else f"{d['concurrency']}-way"
        for k, name in (("plugin", "ruleplane ADD"), ("floor", "host-local VERSION"), ("true", "/bin/true")):
            s = d[k]
            print(f"  {label:14} {name:22} {s['n']:>4} {benchlib.fmt_ms(s['p50']):>8} {benchlib.fmt_ms(s['p99']):>8} "
                  f"{benchlib.fmt_ms(s['max']):>8}")
        cpu = d["cpu_ms_p50"]
        print(f"  {label:14} CPU per exec p50: ruleplane ADD {cpu['plugin']:.2f} ms, host-local VERSION "
              f"{cpu['floor']:.2f} ms, /bin/true {cpu['true']:.2f} ms; agent CPU per ADD "
              f"{d.get('agent_cpu_ms_per_add', -1):.2f} ms")
        ok = d["ratio_p50"] <= 1.5
        print(f"  {label:14} ratio ruleplane/host-local: p50 {d['ratio_p50']:.2f}x  p99 {d['ratio_p99']:.2f}x   "
              f"target p50 <= 1.5x: {'PASS' if ok else 'MISS'}")
    if errors:
        print(f"  errors: {len(errors)}; first: {errors[0]}")
    if a.json:
        benchlib.write_json(a.json, res)
    return 1 if errors or res["attachments"] != res["expected_attachments"] else 0


if __name__ == "__main__":
    sys.exit(main())
