#!/usr/bin/env python3
"""The headline benchmark: pod network setup while kube-proxy rewrites a big
iptables ruleset.

  sudo tools/bench/contention.py [--quick] [--build build-bench] [--json out.json]

What it does, all inside network namespaces it creates and removes:

  churn ns   a kube-proxy-shaped iptables-legacy ruleset (N Services x 3
             endpoints, tools/bench/kube_proxy_rules.py) re-applied back to
             back with `iptables-legacy-restore --wait --noflush`, as
             kube-proxy's iptables mode does on every sync. /run/xtables.lock
             is one file for the whole machine, so every other xtables user
             on the node (here: portmap and bridge's ipMasq in other
             namespaces) queues behind these restores.
  node ns x3 one per chain, each with its own bridge and host-local range:
             (a) reference: bridge(ipMasq) + host-local + portmap, where
                 `iptables` on the plugins' PATH is iptables-legacy (a temp
                 dir of symlinks; the machine's alternatives are untouched)
             (b) ruleplane: bridge + host-local + ruleplane (agent running in
                 that node ns), same hostPort mapping
             (c) floor:     bridge + host-local
  pod ns     one per ADD, created before the ADD is timed.

Every chain is driven by a worker process living in its node ns (started
with `ip netns exec`, like tools/cnirun) that follows the CNI protocol as a
runtime does: exec each plugin with the CNI_* environment, config on stdin,
prevResult threaded through, capability args as runtimeConfig. The same
legacy PATH is given to every chain, so a hidden xtables call in any plugin
would show up in its chain too.

Per N (ascending): idle phase (ruleset loaded once, no restores running),
then churn phase (restores back to back), each with S sequential ADDs per
chain (round-robin across chains so they see the same conditions) and C
concurrent ADDs per chain (one batch per chain, all C started together).
Timed: the chain (first plugin spawn -> last plugin exit) and the last
plugin alone. Every ADD has a deadline (--add-bound); an ADD still running
there is killed and reported as censored (its time is a lower bound,
printed with >=). A chain whose sequential ADDs use up --seq-budget stops
starting new ones; the pods it did not start are reported as not run.

The xtables lock is observed from /proc/locks (read-only, sampled every
5 ms): holders by program, hold times, share of time held, waiters. When the
agent offers `ruleplanectl locks` its view is recorded too.

This is a measurement: it prints figures and a headline (p99 churn / p99
idle per chain; target ruleplane <= 1.1 at the largest N) and exits 0
whether the target is met or not; exit 1 means it could not run.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import kube_proxy_rules  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CNI_DIR = "/usr/lib/cni"
CHAINS = ("reference", "ruleplane", "floor")
LAST_PLUGIN = {"reference": "portmap", "ruleplane": "ruleplane", "floor": "bridge"}
LEGACY = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")


# ============================================================== worker side

def worker_main(conflist_path, cni_path, path_env):
    """Runs inside a node ns. Reads JSON lines {"pods": [...]} from stdin,
    ADDs them (concurrently when more than one) and writes one JSON line of
    results per request."""
    with open(conflist_path) as f:
        conf = json.load(f)
    plugins = []
    for pl in conf["plugins"]:
        for d in cni_path.split(":"):
            p = os.path.join(d, pl["type"])
            if os.access(p, os.X_OK):
                plugins.append((pl, p))
                break
        else:
            raise SystemExit(f"worker: plugin {pl['type']} not found in {cni_path}")

    def add(pod):
        env = {"PATH": path_env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": pod["cid"], "CNI_NETNS": pod["netns"],
               "CNI_IFNAME": "eth0", "CNI_PATH": cni_path,
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={pod['cid']};"
                           f"K8S_POD_UID=uid-{pod['cid']}"}
        caps = {"portMappings": [{"hostPort": pod["port"], "containerPort": 80, "protocol": "tcp"}]}
        prev, steps, out = None, [], {"cid": pod["cid"], "rc": 0, "censored": False, "error": ""}
        deadline = pod["deadline"]
        for pl, path in plugins:
            cfg = dict(pl, name=conf["name"], cniVersion=conf["cniVersion"])
            rc_cfg = {c: caps[c] for c, on in pl.get("capabilities", {}).items() if on and c in caps}
            if rc_cfg:
                cfg["runtimeConfig"] = rc_cfg
            if prev is not None:
                cfg["prevResult"] = prev
            r = benchlib.bounded_exec([path], env, json.dumps(cfg).encode(), deadline)
            steps.append({"type": pl["type"], "s": r.seconds, "censored": r.censored, "rc": r.rc,
                          "t0": r.t_start, "t1": r.t_end})
            if r.censored:
                out["censored"] = True
                break
            if r.rc != 0:
                out["rc"] = r.rc
                out["error"] = (r.stdout + r.stderr).decode(errors="replace")[-400:]
                break
            try:
                prev = json.loads(r.stdout)
            except ValueError:
                out["rc"] = -1
                out["error"] = f"{pl['type']}: undecodable result: {r.stdout[:200]!r}"
                break
        out["steps"] = steps
        out["t0"] = steps[0]["t0"]
        out["chain_s"] = steps[-1]["t1"] - steps[0]["t0"]
        last = steps[-1] if len(steps) == len(plugins) else None
        out["last_s"] = last["s"] if last else None
        out["last_censored"] = bool(last and last["censored"])
        return out

    for line in sys.stdin:
        req = json.loads(line)
        pods = req["pods"]
        if len(pods) == 1:
            res = [add(pods[0])]
        else:
            res = [None] * len(pods)
            barrier = threading.Barrier(len(pods))

            def run(i):
                barrier.wait()
                res[i] = add(pods[i])
            ts = [threading.Thread(target=run, args=(i,)) for i in range(len(pods))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        sys.stdout.write(json.dumps({"results": res}) + "\n")
        sys.stdout.flush()


# ============================================================== driver side

def load_churn_ruleset(ns, rules_path, services):
    """Writes the kube-proxy-shaped ruleset for `services` to `rules_path`
    and applies it once in `ns` (base jumps first), as kube-proxy's first
    sync does; returns the rule count. Churn then re-applies the file."""
    text, nrules = kube_proxy_rules.ruleset(services)
    with open(rules_path, "w") as f:
        f.write(text)
    for data in (kube_proxy_rules.base_jumps().encode(), text.encode()):
        subprocess.run(["ip", "netns", "exec", ns, "iptables-legacy-restore", "--wait", "--noflush"],
                       input=data, check=True, capture_output=True, timeout=600)
    return nrules


class Churn:
    """Re-applies the ruleset in the churn ns back to back, until stopped or
    until max_restores / max_seconds. Records every restore."""

    def __init__(self, ns, rules_path, max_restores, max_seconds, restore_bound, cpus=None):
        self.ns, self.rules_path, self.cpus = ns, rules_path, cpus
        self.max_restores, self.max_seconds, self.restore_bound = max_restores, max_seconds, restore_bound
        self.restores = []
        self._stop = threading.Event()
        self._proc = None
        self._thread = None
        self.first_done = threading.Event()

    def _run(self):
        t_end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and len(self.restores) < self.max_restores and time.monotonic() < t_end:
            with open(self.rules_path, "rb") as f:
                t0 = time.monotonic()
                self._proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "iptables-legacy-restore", "--wait",
                                               "--noflush"], stdin=f, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE, preexec_fn=self._pin)
                try:
                    _, err = self._proc.communicate(timeout=self.restore_bound)
                    rc = self._proc.returncode
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    _, err = self._proc.communicate()
                    rc = "timeout"
                t1 = time.monotonic()
            self.restores.append({"t0": t0, "t1": t1, "s": t1 - t0, "rc": rc,
                                  "err": err.decode(errors="replace")[-200:] if rc else ""})
            self.first_done.set()

    def _pin(self):
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def start(self):
        self._thread = threading.Thread(target=self._run, daemon=True, name="churn")
        self._thread.start()

    def stop(self):
        self._stop.set()
        p = self._proc
        if self._thread:
            self._thread.join(timeout=self.restore_bound + 5)
            if self._thread.is_alive() and p and p.poll() is None:
                p.kill()
                self._thread.join()

    def between(self, t0, t1):
        return [r for r in self.restores if r["t1"] >= t0 and r["t0"] <= t1]


class Bench:
    def __init__(self, a):
        self.a = a
        self.build = os.path.join(REPO, a.build) if not os.path.isabs(a.build) else a.build
        self.agent_bin = os.path.join(self.build, "agent", "ruleplane-agent")
        self.ctl_bin = os.path.join(self.build, "tools", "ruleplanectl")
        self.plugin_dir = os.path.join(self.build, "cni")
        for f in (self.agent_bin, self.ctl_bin, os.path.join(self.plugin_dir, "ruleplane"), "/usr/sbin/iptables-legacy",
                  "/usr/sbin/iptables-legacy-restore", f"{CNI_DIR}/bridge", f"{CNI_DIR}/host-local",
                  f"{CNI_DIR}/portmap"):
            if not os.access(f, os.X_OK):
                raise SystemExit(f"contention: {f} missing (build first; tools/setup.sh installs the rest)")
        self.tag = f"rpcb{os.getpid()}"
        self.tmp = tempfile.mkdtemp(prefix="rp-contention.")
        self.namespaces = []
        self.procs = []
        self.legacy_bin = os.path.join(self.tmp, "legacy-bin")
        os.makedirs(self.legacy_bin)
        for n in LEGACY:
            os.symlink(f"/usr/sbin/{n.replace('tables', 'tables-legacy', 1)}", os.path.join(self.legacy_bin, n))
        self.path_env = f"{self.legacy_bin}:/usr/sbin:/usr/bin:/sbin:/bin"
        self.pod_seq = 0
        self.results = {"config": vars(a).copy(), "runs": []}

    # ---------------------------------------------------------- namespaces
    def ns(self, name):
        full = f"{self.tag}-{name}"
        self.namespaces.append(full)
        benchlib.netns_add(full)
        return full

    def drop_ns(self, full):
        benchlib.netns_del(full)
        if full in self.namespaces:
            self.namespaces.remove(full)

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        for n in list(self.namespaces):
            benchlib.netns_del(n)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------- per-N setup
    def conflist(self, chain, idx, sock):
        subnet = f"10.{60 + idx}.0.0/16"
        bridge = {"type": "bridge", "bridge": "cb0", "isGateway": True, "ipMasq": chain == "reference",
                  "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                           "dataDir": os.path.join(self.tmp, f"ipam-{chain}-{self.cur_n}")}}
        plugins = [bridge]
        if chain == "reference":
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
        elif chain == "ruleplane":
            plugins.append({"type": "ruleplane", "socket": sock, "timeout": "5s",
                            "capabilities": {"portMappings": True}})
        path = os.path.join(self.tmp, f"{chain}-{self.cur_n}.conflist")
        with open(path, "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": f"bench-{chain}", "plugins": plugins}, f)
        return path

    def start_agent(self, node):
        state = os.path.join(self.tmp, f"agent-state-{self.cur_n}")
        sock = os.path.join(self.tmp, f"agent-{self.cur_n}.sock")
        log = open(os.path.join(self.tmp, f"agent-{self.cur_n}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", node, self.agent_bin, f"--socket={sock}", f"--state-dir={state}",
                              "--metrics-address=127.0.0.1:9464"], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        if benchlib.wait_healthy(self.ctl_bin, sock, p):
            return p, sock
        raise SystemExit(f"contention: agent did not become healthy; log {log.name}")

    def start_worker(self, node, conflist):
        cni_path = f"{self.plugin_dir}:{CNI_DIR}"
        p = subprocess.Popen(["ip", "netns", "exec", node, sys.executable, os.path.abspath(__file__), "--worker",
                              "--conflist", conflist, "--cni-path", cni_path, "--path-env", self.path_env],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def ask(self, worker, pods):
        worker.stdin.write(json.dumps({"pods": pods}) + "\n")
        worker.stdin.flush()
        line = worker.stdout.readline()
        if not line:
            raise SystemExit("contention: a chain worker died")
        return json.loads(line)["results"]

    def new_pods(self, chain, count, bound):
        pods = []
        for _ in range(count):
            self.pod_seq += 1
            name = self.ns(f"p{self.pod_seq}")
            pods.append({"cid": f"{chain[:3]}-{self.cur_n}-{self.pod_seq}", "netns": f"/run/netns/{name}",
                         "port": 20000 + self.pod_seq, "ns": name})
        return pods

    # ---------------------------------------------------------- phases
    def run_phase(self, load, workers, churn):
        a = self.a
        out = {c: {"seq": [], "conc": [], "seq_not_run": 0} for c in CHAINS}
        t_phase0 = time.monotonic()
        # Sequential, round-robin across chains; per-chain time budget.
        spent = {c: 0.0 for c in CHAINS}
        for i in range(a.seq_pods):
            for c in CHAINS:
                if spent[c] >= a.seq_budget:
                    out[c]["seq_not_run"] += 1
                    continue
                pod = self.new_pods(c, 1, a.add_bound)[0]
                pod["deadline"] = time.monotonic() + a.add_bound
                r = self.ask(workers[c], [{k: pod[k] for k in ("cid", "netns", "port", "deadline")}])[0]
                spent[c] += r["chain_s"]
                out[c]["seq"].append(r)
            self.progress(load, "seq", i + 1, a.seq_pods, out)
        # Concurrent: one batch per chain, all started together.
        for c in CHAINS:
            pods = self.new_pods(c, a.conc_pods, a.add_bound)
            dl = time.monotonic() + a.add_bound + 0.5  # + barrier/thread start
            reqs = [{"cid": p["cid"], "netns": p["netns"], "port": p["port"], "deadline": dl} for p in pods]
            out[c]["conc"] = self.ask(workers[c], reqs)
            self.progress(load, f"conc {c}", 1, 1, out)
        t_phase1 = time.monotonic()
        return out, t_phase0, t_phase1

    def progress(self, load, what, i, n, out):
        if self.a.verbose or i == n:
            bits = []
            for c in CHAINS:
                s = out[c]["seq"]
                if s:
                    bits.append(f"{c} last {s[-1]['chain_s'] * 1000:.0f} ms")
            print(f"  [{load}] {what} {i}/{n}  " + ", ".join(bits), file=sys.stderr, flush=True)

    def locks_from_agent(self, sock):
        """The agent's xtables lock monitor (Diagnostics.GetLockStats via
        `ruleplanectl --json locks`): totals per holder since the agent
        started. Exit 1 with JSON means it answered but flags a problem
        (e.g. both iptables backends in use); the JSON is kept either way."""
        r = subprocess.run([self.ctl_bin, f"--socket={sock}", "--json", "--recent=20", "locks"], capture_output=True,
                           text=True, timeout=10)
        try:
            return {"available": True, "rc": r.returncode, "data": json.loads(r.stdout)}
        except ValueError:
            pass
        if "locks" not in (r.stdout + r.stderr).split("commands:")[-1]:
            return {"available": False, "note": "ruleplanectl has no `locks` command in this build"}
        return {"available": False, "note": (r.stderr or r.stdout).strip()[-200:]}

    def lock_metrics(self, node):
        """ruleplane_xtables_lock_* from the agent's /metrics, when its lock
        monitor is wired in (empty list otherwise)."""
        r = subprocess.run(["ip", "netns", "exec", node, "curl", "-s", "--max-time", "5",
                            "http://127.0.0.1:9464/metrics"], capture_output=True, text=True)
        return [l for l in r.stdout.splitlines() if l.startswith("ruleplane_xtables_lock")]

    def run_n(self, n, sampler):
        a = self.a
        self.cur_n = n
        print(f"== N={n} Services x 3 endpoints", file=sys.stderr, flush=True)
        rules_text, nrules = kube_proxy_rules.ruleset(n)
        rules_path = os.path.join(self.tmp, f"kube-proxy-{n}.rules")
        with open(rules_path, "w") as f:
            f.write(rules_text)
        churn_ns = self.ns(f"churn{n}")
        base = subprocess.run(["ip", "netns", "exec", churn_ns, "iptables-legacy-restore", "--wait", "--noflush"],
                              input=kube_proxy_rules.base_jumps().encode(), capture_output=True)
        if base.returncode != 0:
            raise SystemExit(f"contention: base jumps failed: {base.stderr.decode()}")
        t0 = time.monotonic()
        first = subprocess.run(["ip", "netns", "exec", churn_ns, "iptables-legacy-restore", "--wait", "--noflush"],
                               stdin=open(rules_path, "rb"), capture_output=True, timeout=600)
        initial_s = time.monotonic() - t0
        if first.returncode != 0:
            raise SystemExit(f"contention: initial sync failed: {first.stderr.decode()[-500:]}")
        print(f"  ruleset: {nrules} rules, {len(rules_text) / 1e6:.1f} MB, initial sync {initial_s:.2f} s",
              file=sys.stderr, flush=True)

        nodes, workers = {}, {}
        sock = None
        for idx, c in enumerate(CHAINS):
            nodes[c] = self.ns(f"node-{c[:3]}{n}")
            subprocess.run(["ip", "netns", "exec", nodes[c], "sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        agent, sock = self.start_agent(nodes["ruleplane"])
        for idx, c in enumerate(CHAINS):
            workers[c] = self.start_worker(nodes[c], self.conflist(c, idx, sock))

        run = {"n": n, "rules": nrules, "ruleset_mb": len(rules_text) / 1e6, "initial_sync_s": initial_s,
               "phases": {}}
        idle, ti0, ti1 = self.run_phase("idle", workers, None)
        run["phases"]["idle"] = self.summarize(idle, ti0, ti1, sampler, None)
        run["phases"]["idle"]["locks_agent"] = self.locks_from_agent(sock)
        run["phases"]["idle"]["lock_metrics"] = self.lock_metrics(nodes["ruleplane"])

        churn = Churn(churn_ns, rules_path, a.max_restores, a.churn_max_s, a.restore_bound, a.cpus_churn)
        churn.start()
        churn.first_done.wait(timeout=a.restore_bound + 5)  # steady state: restores already back to back
        busy, tc0, tc1 = self.run_phase("churn", workers, churn)
        churn.stop()
        run["phases"]["churn"] = self.summarize(busy, tc0, tc1, sampler, churn)
        run["phases"]["churn"]["locks_agent"] = self.locks_from_agent(sock)
        run["phases"]["churn"]["lock_metrics"] = self.lock_metrics(nodes["ruleplane"])
        st = subprocess.run([self.ctl_bin, f"--socket={sock}", "--json", "status"], capture_output=True, text=True)
        try:
            run["agent_status"] = json.loads(st.stdout)
        except ValueError:
            run["agent_status"] = {"raw": st.stdout[-500:]}

        # Tear down this N: workers, agent, every namespace but none of the host's.
        for c in CHAINS:
            workers[c].stdin.close()
            workers[c].wait(timeout=30)
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
        for ns in [x for x in self.namespaces]:
            self.drop_ns(ns)
        return run

    def summarize(self, ph, t0, t1, sampler, churn):
        out = {"t0": t0, "t1": t1, "chains": {}}
        for c in CHAINS:
            d = {}
            for mode in ("seq", "conc"):
                rs = ph[c][mode]
                chain = [(r["chain_s"], r["censored"]) for r in rs if r["rc"] == 0]
                last = [(r["last_s"], r["last_censored"]) for r in rs if r["rc"] == 0 and r["last_s"] is not None]
                d[mode] = {"chain": benchlib.summarize(chain), "last": benchlib.summarize(last),
                           "errors": [r["error"] for r in rs if r["rc"] != 0],
                           "last_not_reached": sum(1 for r in rs if r["rc"] == 0 and r["last_s"] is None),
                           "planned": self.a.seq_pods if mode == "seq" else self.a.conc_pods,
                           "not_run": ph[c]["seq_not_run"] if mode == "seq" else 0,
                           "plugins": self.per_plugin(rs)}
            out["chains"][c] = d
        out["locks_proc"] = sampler.window(t0, t1)
        out["locks_proc"]["max_waiters_run"] = sampler.max_waiters
        if churn:
            rs = churn.between(t0, t1)
            durs = sorted(r["s"] for r in rs)
            out["restores"] = {"count": len(rs), "failed": sum(1 for r in rs if r["rc"] != 0),
                               "p50_s": benchlib.percentile(durs, 50), "max_s": durs[-1] if durs else None,
                               "errors": [r["err"] for r in rs if r["rc"] != 0][:3]}
        return out

    @staticmethod
    def per_plugin(rs):
        by = {}
        for r in rs:
            for s in r["steps"]:
                by.setdefault(s["type"], []).append(s["s"])
        return {k: {"n": len(v), "p50_ms": benchlib.percentile(v, 50) * 1000, "max_ms": max(v) * 1000}
                for k, v in by.items()}


def print_report(res, out=sys.stdout):
    w = out.write
    for run in res["runs"]:
        n = run["n"]
        w(f"\nN = {n} Services x 3 endpoints ({run['rules']} rules, {run['ruleset_mb']:.1f} MB, "
          f"initial sync {run['initial_sync_s']:.2f} s)\n")
        ch = run["phases"]["churn"]
        rs = ch.get("restores", {})
        lk = ch["locks_proc"]
        w(f"  churn: {rs.get('count', 0)} restores (failed {rs.get('failed', 0)}), "
          f"p50 {benchlib.fmt_ms((rs.get('p50_s') or 0) * 1000)} (ms) each; xtables lock held "
          f"{100 * lk['held_fraction']:.0f}% of the churn phase, someone waiting for it "
          f"{100 * lk['waiting_fraction']:.0f}% of the time, up to {lk['max_waiters']} waiters (sampled /proc/locks)\n")
        w(f"  {'chain':10} {'load':6} {'mode':5} {'n':>4} {'cens':>4} {'err':>3} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'max ms':>9}   last plugin: {'p50':>8} {'p99':>8}\n")
        for c in CHAINS:
            for load in ("idle", "churn"):
                for mode in ("seq", "conc"):
                    d = run["phases"][load]["chains"][c][mode]
                    s, l = d["chain"], d["last"]
                    nr = f" (+{d['not_run']} not run)" if d["not_run"] else ""
                    lnr = f" ({d['last_not_reached']} not reached)" if d["last_not_reached"] else ""
                    w(f"  {c:10} {load:6} {mode:5} {s.get('n', 0):>4} {s.get('censored', 0):>4} "
                      f"{len(d['errors']):>3} {benchlib.fmt_ms(s.get('p50')):>9} {benchlib.fmt_ms(s.get('p99')):>9} "
                      f"{benchlib.fmt_ms(s.get('max')):>9}   {LAST_PLUGIN[c]:>11} {benchlib.fmt_ms(l.get('p50')):>8} "
                      f"{benchlib.fmt_ms(l.get('p99')):>8}{nr}{lnr}\n")
        w(f"  xtables lock during churn (from /proc/locks, one sample per {1000 * lk['period_s']:.1f} ms):\n")
        for prog, d in sorted(lk["by_program"].items(), key=lambda kv: -(kv[1]["held_s"] + kv[1]["waited_s"])):
            w(f"    {prog[:40]:40} holds {d['holds']:>5}  held ~{d['held_s']:7.2f} s  longest {d['max_hold_s']:.2f} s"
              f"  waited ~{d['waited_s']:7.2f} s\n")
        la = ch.get("locks_agent", {})
        w(f"  agent lock monitor (ruleplanectl locks): "
          f"{'' if la.get('available') else 'not available: ' + la.get('note', '')[:80]}\n")
        for h in agent_lock_delta(run):
            w(f"    {h['holder'][:30]:30} holds {h['holds']:>5}  held {h['total_seconds']:8.2f} s  longest "
              f"{h['longest_seconds']:.2f} s  e.g. {h['example'][:60]}\n")
        lm = ch.get("lock_metrics", [])
        w(f"  agent metrics ruleplane_xtables_lock_*: {len(lm)} series" + (" (in JSON)\n" if lm else "\n"))
    w("\nheadline: p99 under churn / p99 idle (chain exec, first plugin spawn -> last plugin exit)\n"
      "  [/floor: the same ratio divided by the floor chain's, i.e. what is left after the CPU the restores\n"
      "   take from everyone; the floor chain never touches xtables]\n")
    for h in headline(res):
        w(f"  N={h['n']:<5} {h['chain']:10} seq {h['seq_txt']:>8} [/floor {h['seq_vs_floor_txt']:>7}]   "
          f"conc {h['conc_txt']:>8} [/floor {h['conc_vs_floor_txt']:>7}]{h['target']}\n")


def agent_lock_delta(run):
    """Per holder, what the agent's monitor saw during the churn phase: its
    totals at the end of churn minus those at the end of idle (the monitor
    counts from agent start, which was before the idle phase)."""
    def totals(phase):
        d = run["phases"][phase].get("locks_agent", {})
        if not d.get("available"):
            return None
        return {h["holder"]: h for h in d["data"].get("holders", [])}
    end, start = totals("churn"), totals("idle") or {}
    if end is None:
        return []
    out = []
    for name, h in end.items():
        b = start.get(name, {})
        holds = int(h.get("holds", 0)) - int(b.get("holds", 0))
        if holds <= 0:
            continue
        out.append({"holder": name, "holds": holds,
                    "total_seconds": float(h.get("total_seconds", 0)) - float(b.get("total_seconds", 0)),
                    "longest_seconds": float(h.get("longest_seconds", 0)), "example": h.get("example", "")})
    return sorted(out, key=lambda x: -x["total_seconds"])


def ratio(churn, idle):
    if not churn or not idle or "p99" not in churn or "p99" not in idle:
        return None, "-"
    r = churn["p99"]["ms"] / max(1e-6, idle["p99"]["ms"])
    lb = churn["p99"]["censored"]
    return r, (">=" if lb else "") + (f"{r:.2f}x" if r < 10 else f"{r:.0f}x")


def headline(res):
    rows = []
    nmax = max(r["n"] for r in res["runs"])
    for run in res["runs"]:
        per = {}
        for c in CHAINS:
            i, b = run["phases"]["idle"]["chains"][c], run["phases"]["churn"]["chains"][c]
            per[c] = (ratio(b["seq"]["chain"], i["seq"]["chain"]), ratio(b["conc"]["chain"], i["conc"]["chain"]))
        for c in CHAINS:
            (rs, ts), (rc, tc) = per[c]
            (fs, _), (fc, _) = per["floor"]
            vs = (rs / fs) if rs and fs else None
            vc = (rc / fc) if rc and fc else None
            target = ""
            if c == "ruleplane" and run["n"] == nmax:
                ok = rs is not None and rc is not None and rs <= 1.1 and rc <= 1.1
                target = f"   target <= 1.1: {'PASS' if ok else 'MISS'}"
            rows.append({"n": run["n"], "chain": c, "seq": rs, "conc": rc, "seq_txt": ts, "conc_txt": tc,
                         "seq_vs_floor": vs, "conc_vs_floor": vc,
                         "seq_vs_floor_txt": f"{vs:.2f}x" if vs else "-", "conc_vs_floor_txt": f"{vc:.2f}x" if vc else "-",
                         "target": target})
    return rows


def split_cpus(pin):
    """(churn CPUs, other CPUs) for --pin, or (None, None) when not pinning."""
    allowed = sorted(os.sched_getaffinity(0))
    if pin == "off" or len(allowed) < 2:
        return None, None
    return [allowed[-1]], allowed[:-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--conflist", help=argparse.SUPPRESS)
    ap.add_argument("--cni-path", help=argparse.SUPPRESS)
    ap.add_argument("--path-env", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~2-3 min): 10 sequential + 5 concurrent pods, 20 s ADD bound, 40 s budget")
    ap.add_argument("--build", default="build-bench", help="build dir (relative to the repo or absolute)")
    ap.add_argument("--services", default=None, help="comma separated N (default 1000,5000)")
    ap.add_argument("--seq-pods", type=int, default=None, help="sequential ADDs per chain per phase (50)")
    ap.add_argument("--conc-pods", type=int, default=None, help="concurrent ADDs per chain per phase (20)")
    ap.add_argument("--add-bound", type=float, default=None, help="deadline of one ADD in seconds (60)")
    ap.add_argument("--seq-budget", type=float, default=None,
                    help="seconds of sequential ADDs per chain per phase before it stops starting new ones (300)")
    ap.add_argument("--restore-bound", type=float, default=120, help="deadline of one iptables-legacy-restore")
    ap.add_argument("--max-restores", type=int, default=2000, help="restores per churn phase at most")
    ap.add_argument("--churn-max-s", type=float, default=1800, help="churn phase length at most (seconds)")
    ap.add_argument("--pin", choices=("auto", "off"), default="auto",
                    help="auto (default): the churn restores run on the last CPU, everything else (agent, chains, "
                         "this driver) on the others, as on a node with many CPUs where kube-proxy's restore does "
                         "not take the CPU the CNI runs on; off: let the scheduler place everything (on a 2-CPU "
                         "machine that mostly measures CPU contention, which slows every chain alike)")
    ap.add_argument("--json", help="write all samples and summaries here")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    if a.worker:
        return worker_main(a.conflist, a.cni_path, a.path_env)
    if os.geteuid() != 0:
        raise SystemExit("contention: needs root (network namespaces, iptables)")
    quick = a.quick
    a.services = a.services or "1000,5000"
    a.seq_pods = a.seq_pods if a.seq_pods is not None else (10 if quick else 50)
    a.conc_pods = a.conc_pods if a.conc_pods is not None else (5 if quick else 20)
    a.add_bound = a.add_bound if a.add_bound is not None else (20.0 if quick else 60.0)
    a.seq_budget = a.seq_budget if a.seq_budget is not None else (40.0 if quick else 300.0)
    sizes = sorted(int(x) for x in a.services.split(","))
    a.cpus_churn, a.cpus_pods = split_cpus(a.pin)
    if a.cpus_pods:
        os.sched_setaffinity(0, a.cpus_pods)  # inherited by the agent, the workers and every plugin they exec
    print(f"contention: CPUs for the churn restores {a.cpus_churn or 'any'}, for everything else "
          f"{a.cpus_pods or 'any'}", file=sys.stderr)

    b = Bench(a)

    def on_signal(sig, _):
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    sampler = benchlib.LockSampler(cpus=a.cpus_churn).start()
    t_start = time.monotonic()
    try:
        for n in sizes:
            b.results["runs"].append(b.run_n(n, sampler))
    finally:
        sampler.stop()
        b.cleanup()
    b.results["total_s"] = time.monotonic() - t_start
    b.results["headline"] = headline(b.results)
    print_report(b.results)
    print(f"\n(total {b.results['total_s']:.0f} s)")
    if a.json:
        benchlib.write_json(a.json, b.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
