#!/usr/bin/env python3
"""SNAT datapath benchmark: prints figures, not a test.

One topology, one run, four variants interleaved over --rounds:

    pod ns --(bridge + host-local + ruleplane CNI chain)-- node ns --veth-- outside ns

  no-nat    agent snat_mode off; the outside routes the pod subnet back (the ceiling)
  bpf       agent snat_mode bpf (tc programs on the node's egress veth: tcx links on Linux >= 6.6)
  nftables  agent snat_mode nftables (conntrack NAT from our table)
  iptables  agent off + `iptables-legacy -t nat -A POSTROUTING ... -j MASQUERADE --random-fully`
  bpf-clsact  (opt-in) snat_mode bpf with snat_bpf_attach clsact
  nftables-keepport  (opt-in) snat_mode nftables with snat_fully_random false
  iptables-keepport  (opt-in) iptables, MASQUERADE without --random-fully

Modes are switched on the running agent with SIGHUP (the same switch the
product does). All NAT variants use the same port range (1024-65535) and
random ports (but the -keepport variants, which keep the pod's port when
free, to weigh the fully-random default). Figures per variant: TCP throughput (iperf3, one stream,
--seconds) and new-connection rate (connrate: --count short connections
from --parallel threads, each connect + 1-byte request/response + close;
every run uses a fresh server port so no variant inherits another's
conntrack/NAT state). The variant order rotates every round. Prints the
median over rounds and ratios to no-nat. On a shared machine the noise can
exceed the differences: use many rounds and look at the spread.

Usage: sudo tools/bench/snat_bench.py [--build build] [--rounds 3] [--seconds 5]
                                      [--count 10000] [--parallel 4] [--json out.json]
                                      [--variants bpf,nftables,iptables]
RP_SNAT_BENCH_EXTRA='{"snat_stats_interval_ms": 5000}' merges extra agent
config (JSON) into every mode, for experiments; the page never uses it.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
NODE_IP, OUTSIDE_IP, POD_SUBNET = "192.168.79.1", "192.168.79.2", "10.96.0.0/24"
VARIANTS = ("no-nat", "bpf", "nftables", "iptables")
# Opt-in (--variants): the bpf backend hooked as clsact filters instead of
# the default (tcx links where the kernel has them), to weigh the hook itself.
# The -keepport variants: conntrack NAT without the random flags (the pod's
# port is kept when free), the other side of the `fully-random` default.
EXTRA_VARIANTS = ("bpf-clsact", "nftables-keepport", "iptables-keepport")
KEEPPORT = ("nftables-keepport", "iptables-keepport")


def tcx_progs(dev, ns=None):
    """[(name, id)] of the programs tcx runs on `dev` (both directions), or
    None on a kernel without tcx (tools/tcx_progs.py; bpftool 7.1 cannot)."""
    r = sh(sys.executable, os.path.join(REPO, "tools", "tcx_progs.py"), dev, ns=ns, check=False)
    if r.returncode != 0:
        return None
    return [(p["name"], p["id"]) for progs in json.loads(r.stdout).values() for p in progs]


def sh(*args, ns=None, check=True, timeout=120):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {p.returncode}: {p.stderr.strip()}")
    return p


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.agent_bin = os.path.join(self.build, "agent/ruleplane-agent")
        self.ctl = os.path.join(self.build, "tools/ruleplanectl")
        self.connrate = os.path.join(self.build, "tools/connrate")
        for b in (self.agent_bin, self.ctl, self.connrate, os.path.join(self.build, "cni/ruleplane")):
            if not os.access(b, os.X_OK):
                sys.exit(f"snat_bench: missing {b} (build first: cmake --build {args.build})")
        tag = os.getpid()
        self.node, self.outside, self.pod = f"rpb-n-{tag}", f"rpb-o-{tag}", f"rpb-p-{tag}"
        self.dir = tempfile.mkdtemp(prefix="rp-snat-bench-")
        self.sock = os.path.join(self.dir, "ruleplane.sock")
        self.config = os.path.join(self.dir, "agent.json")
        self.pin_dir = f"/sys/fs/bpf/rp-bench-{tag}"
        self.procs = []
        self.agent = None
        self.port = 9000
        # kernel.bpf_stats_enabled: a global switch, on only for the bpf
        # variant's unscored probe runs and put back as found by close().
        self.stats_path = ("/proc/sys/kernel/bpf_stats_enabled" if any(v.startswith("bpf") for v in args.variants)
                           else None)
        # What snat_bpf_attach auto picks on this kernel (tcx on Linux >= 6.6).
        self.bpf_attach = "clsact" if tcx_progs("lo") is None else "tcx"
        self.stats_was = None

    def set_bpf_stats(self, on):
        if self.stats_was is None:
            try:
                with open(self.stats_path) as f:
                    self.stats_was = f.read().strip()
            except OSError:
                self.stats_path = None  # no such switch here: no per-program figures
                return
        with open(self.stats_path, "w") as f:
            f.write("1" if on else "0")

    def setup(self):
        if self.stats_path:
            self.set_bpf_stats(False)
        with open("/proc/mounts") as f:
            if not any(l.split()[1] == "/sys/fs/bpf" and l.split()[2] == "bpf" for l in f):
                os.makedirs("/sys/fs/bpf", exist_ok=True)
                sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")
        for ns in (self.node, self.outside, self.pod):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        a, b = f"rpba{os.getpid() % 100000}", f"rpbb{os.getpid() % 100000}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.node)
        sh("ip", "link", "set", b, "netns", self.outside)
        sh("ip", "link", "set", a, "name", "eth-out", ns=self.node)
        sh("ip", "link", "set", b, "name", "eth0", ns=self.outside)
        sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth-out", ns=self.node)
        sh("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0", ns=self.outside)
        sh("ip", "link", "set", "eth-out", "up", ns=self.node)
        sh("ip", "link", "set", "eth0", "up", ns=self.outside)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.node)
        conflist = os.path.join(self.dir, "bench.conflist")
        with open(conflist, "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "bench", "plugins": [
                {"type": "bridge", "bridge": "rpb0", "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(self.dir, "ipam")}},
                {"type": "ruleplane", "socket": self.sock, "timeout": "2s"}]}, f)
        self.write_config("off")
        self.start_agent()
        out = sh(os.path.join(REPO, "tools/cnirun"), "--conflist", conflist, "--cni-path",
                 f"{os.path.join(self.build, 'cni')}:/usr/lib/cni", "--cache-dir", os.path.join(self.dir, "cache"),
                 "add", "bench-pod", f"/run/netns/{self.pod}", "eth0", "--args", "IgnoreUnknown=1",
                 ns=self.node).stdout
        self.pod_ip = json.loads(out)["ips"][0]["address"].split("/")[0]
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", self.outside, "iperf3", "-s", "-p", "5201"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)

    def write_config(self, mode, attach="auto", fully_random=True):
        with open(self.config, "w") as f:
            json.dump(dict({"snat_mode": mode, "snat_egress_interfaces": ["eth-out"], "snat_port_range": "1024-65535",
                            "snat_exclude": [POD_SUBNET], "bpf_pin_dir": self.pin_dir, "snat_bpf_attach": attach,
                            "snat_fully_random": fully_random},
                           **json.loads(os.environ.get("RP_SNAT_BENCH_EXTRA", "{}"))), f)

    def start_agent(self):
        with open(os.path.join(self.dir, "agent.log"), "a") as log:
            self.agent = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.node}", self.agent_bin, f"--socket={self.sock}",
                 f"--state-dir={os.path.join(self.dir, 'state')}", "--metrics-address=", f"--config={self.config}"],
                stdout=log, stderr=log)
        if benchlib.wait_healthy(self.ctl, self.sock, self.agent):
            return
        sys.exit("snat_bench: agent not ready; log in " + self.dir)

    def set_mode(self, variant):
        mode = {"no-nat": "off", "iptables": "off", "bpf": "bpf", "bpf-clsact": "bpf", "nftables": "nftables",
                "nftables-keepport": "nftables", "iptables-keepport": "off"}[variant]
        random_fully = variant not in KEEPPORT
        self.write_config(mode, "clsact" if variant == "bpf-clsact" else "auto", random_fully)
        self.agent.send_signal(signal.SIGHUP)
        for _ in range(200):
            st = json.loads(sh(self.ctl, f"--socket={self.sock}", "--json", "status").stdout)
            if st.get("snat_backend") == mode and (mode != "bpf" or self.hook_kind() == (
                    "clsact" if variant == "bpf-clsact" else self.bpf_attach)) and (
                    mode != "nftables" or self.nft_fully_random() == random_fully):
                break
            time.sleep(0.05)
        else:
            sys.exit(f"snat_bench: agent did not switch to {variant}")
        ipt = ["iptables-legacy", "-t", "nat"]
        rule = ["POSTROUTING", "-s", POD_SUBNET, "-o", "eth-out", "-j", "MASQUERADE"]
        for flags in (["--random-fully"], []):
            sh(*ipt, "-D", *rule, *flags, ns=self.node, check=False)
        if variant in ("iptables", "iptables-keepport"):
            sh(*ipt, "-A", *rule, *(["--random-fully"] if random_fully else []), ns=self.node)
        sh("ip", "route", "del", POD_SUBNET, ns=self.outside, check=False)
        if variant == "no-nat":
            sh("ip", "route", "add", POD_SUBNET, "via", NODE_IP, ns=self.outside)
        time.sleep(0.3)

    def nft_fully_random(self):
        """Whether the agent's nftables SNAT rules carry fully-random now
        (nftables mode and nftables-keepport share a mode: the rule tells
        them apart once the reload has committed)."""
        r = sh("nft", "list", "chain", "inet", "ruleplane", "snat-v4", ns=self.node, check=False)
        return "fully-random" in r.stdout if " snat " in r.stdout else None

    def hook_kind(self):
        """"tcx" or "clsact": how the bpf programs hook eth-out right now."""
        return "tcx" if tcx_progs("eth-out", self.node) else "clsact"

    def check_source(self, variant):
        # The server's view of the pod: the egress address, or the pod itself without NAT.
        self.port += 1
        srv = subprocess.Popen(["ip", "netns", "exec", self.outside, "python3", "-c",
                                "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                                f"s.bind(('0.0.0.0',{self.port}));s.listen();c,a=s.accept();print(a[0])"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        sh("python3", "-c", f"import socket;socket.create_connection(('{OUTSIDE_IP}',{self.port}),timeout=3).close()",
           ns=self.pod)
        seen = srv.communicate(timeout=10)[0].strip()
        want = self.pod_ip if variant == "no-nat" else NODE_IP
        if seen != want:
            sys.exit(f"snat_bench: {variant}: the outside sees {seen}, expected {want}")

    def throughput(self):
        r = sh("iperf3", "-c", OUTSIDE_IP, "-p", "5201", "-t", str(self.args.seconds), "-J", ns=self.pod,
               timeout=self.args.seconds + 30)
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9

    def conn_rate(self):
        self.port += 1
        srv = subprocess.Popen(["ip", "netns", "exec", self.outside, self.connrate, "serve", str(self.port), "2"],
                               stdout=subprocess.PIPE, text=True)
        self.procs.append(srv)
        srv.stdout.readline()
        r = sh(self.connrate, "run", OUTSIDE_IP, str(self.port), str(self.args.count), str(self.args.parallel),
               ns=self.pod, check=False, timeout=600)
        srv.kill()
        srv.wait()
        fields = dict(kv.split("=") for kv in r.stdout.split())
        return float(fields["rate"]), int(fields["failed"])

    def syn_retrans(self):
        """The pod's TcpExtTCPSynRetrans counter (nstat, absolute): a SYN
        retransmitted after the 1 s initial timeout, e.g. when the server
        still holds the translated tuple in TIME_WAIT and answers the new SYN
        with an ACK of the old connection (the client resets, then retries)."""
        out = sh("nstat", "-az", "TcpExtTCPSynRetrans", ns=self.pod, check=False).stdout
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] == "TcpExtTCPSynRetrans":
                return int(f[1])
        return 0

    def ts_offset_per_port(self):
        """Whether this kernel derives a TCP socket's timestamp offset from
        its ports too (Linux commit 165573e41f2f): four loopback connections
        from adjacent source ports to one listener, in the pod netns, and
        their TCP_TIMESTAMP (socket clock + offset) compared. With a per-
        address offset they read within a few ms of each other."""
        probe = ("import socket,struct\n"
                 "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(8);a=s.getsockname()\n"
                 "v=[]\n"
                 "for i in range(4):\n"
                 " c=socket.socket();c.connect(a);v.append(struct.unpack('I',c.getsockopt(6,24,4))[0])\n"
                 "print(max(v)-min(v))")
        r = sh("python3", "-c", probe, ns=self.pod, check=False)
        try:
            return int(r.stdout.strip()) > 10000
        except ValueError:
            return None

    def bpf_prog_stats(self):
        """{program name: (run_cnt, run_time_ns)} of the tc programs (clsact
        filters or tcx links) on the node's egress interface (the kernel counts them while
        kernel.bpf_stats_enabled is 1), or {} when none is attached."""
        r = sh("bpftool", "net", "show", "dev", "eth-out", "-j", ns=self.node, check=False)
        try:
            ids = [(p["name"], p["id"]) for e in json.loads(r.stdout) for p in e.get("tc", [])]
        except (ValueError, KeyError, TypeError):
            ids = []
        # tcx links (snat_bpf_attach auto on Linux >= 6.6): bpftool 7.1 does not list them.
        ids += tcx_progs("eth-out", self.node) or []
        out = {}
        for name, pid in ids:
            r = sh("bpftool", "prog", "show", "id", str(pid), "-j", check=False)
            try:
                info = json.loads(r.stdout)
            except ValueError:
                continue  # detached between the two calls: no figure this round
            out[info.get("name", name)] = (info.get("run_cnt", 0), info.get("run_time_ns", 0))
        return out

    @staticmethod
    def machine_cpu_s():
        """CPU seconds the whole machine spent busy so far (user, nice,
        system, irq, softirq; not idle, iowait or steal): everything the
        variants run on this machine (iperf3, connrate, softirq NAT work)."""
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    def agent_cpu_s(self):
        """User + system CPU seconds the agent has used so far."""
        with open(f"/proc/{self.agent.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(self):
        vs = self.args.variants
        results = {v: {"gbit": [], "conn_s": [], "failed": 0, "agent_cpu_ms_per_1k_conns": [], "syn_retrans": [],
                       "cpu_s_per_100gbit": [], "cpu_us_per_conn": []}
                   for v in vs}
        for rnd in range(self.args.rounds):
            # Rotate the order every round so no variant always runs first
            # (or right after the same neighbour) on a busy machine.
            for v in vs[rnd % len(vs):] + vs[:rnd % len(vs)]:
                self.set_mode(v)
                self.check_source(v)
                m0 = self.machine_cpu_s()
                g = self.throughput()
                m1 = self.machine_cpu_s()
                cpu0, syn0 = self.agent_cpu_s(), self.syn_retrans()
                cpu_mark = self.machine_cpu_s()
                c, failed = self.conn_rate()
                m2 = self.machine_cpu_s()
                syn1, cpu1 = self.syn_retrans(), self.agent_cpu_s()
                # Busy CPU per unit of work: less sensitive than the rates to
                # where the scheduler places the processes on this 2-vCPU VM.
                results[v]["cpu_s_per_100gbit"].append((m1 - m0) / (g * self.args.seconds) * 100 if g else 0)
                results[v]["cpu_us_per_conn"].append((m2 - cpu_mark) * 1e6 / self.args.count)
                if v.startswith("bpf") and self.stats_path:
                    # What the programs cost in the kernel, caches as they
                    # are under this load: ns per run, runs per connection.
                    # From an extra, unscored connection run: with
                    # kernel.bpf_stats_enabled every program run also reads
                    # the clock twice, which must not load the scored runs.
                    self.set_bpf_stats(True)
                    prog0 = self.bpf_prog_stats()
                    self.conn_rate()
                    prog1 = self.bpf_prog_stats()
                    self.set_bpf_stats(False)
                    for name, (n1, t1) in prog1.items():
                        n0, t0 = prog0.get(name, (0, 0))
                        if n1 > n0:
                            st = results[v].setdefault("prog", {}).setdefault(
                                name, {"ns_per_run": [], "runs_per_conn": []})
                            st["ns_per_run"].append((t1 - t0) / (n1 - n0))
                            st["runs_per_conn"].append((n1 - n0) / self.args.count)
                results[v]["syn_retrans"].append(syn1 - syn0)
                results[v]["agent_cpu_ms_per_1k_conns"].append((cpu1 - cpu0) * 1e3 / (self.args.count / 1000))
                results[v]["gbit"].append(g)
                results[v]["conn_s"].append(c)
                results[v]["failed"] += failed
                print(f"round {rnd + 1} {v:17s} tcp {g:7.2f} Gbit/s  new conns {c:9.0f}/s  failed {failed}  "
                      f"agent CPU {results[v]['agent_cpu_ms_per_1k_conns'][-1]:.1f} ms per 1000 conns  "
                      f"SYN retransmits {results[v]['syn_retrans'][-1]}", flush=True)
        return results

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        if self.agent:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait(timeout=15)
        for ns in (self.pod, self.node, self.outside):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.stats_was is not None:
            with open(self.stats_path, "w") as f:
                f.write(self.stats_was)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma separated subset of " + ",".join(VARIANTS + EXTRA_VARIANTS)
                    + " (no-nat is always run: the ceiling)")
    args = ap.parse_args()
    args.variants = tuple(v for v in VARIANTS + EXTRA_VARIANTS if v == "no-nat" or v in args.variants.split(","))
    if os.geteuid() != 0:
        sys.exit("snat_bench: needs root (network namespaces, nftables, bpf, iptables-legacy)")
    bench = Bench(args)
    try:
        bench.setup()
        ts_per_port = bench.ts_offset_per_port()
        results = bench.run()
    finally:
        bench.close()
    med = {v: (statistics.median(r["gbit"]), statistics.median(r["conn_s"])) for v, r in results.items()}
    spread = {v: (min(r["gbit"]), max(r["gbit"]), min(r["conn_s"]), max(r["conn_s"])) for v, r in results.items()}
    base_g, base_c = med["no-nat"]
    print(f"\nmedian of {args.rounds} rounds; {args.seconds} s iperf3, {args.count} connections x {args.parallel} threads")
    print(f"bpf hooks tc as {bench.bpf_attach} links" if bench.bpf_attach == "tcx" else "bpf hooks tc as clsact filters")
    print(f"{'variant':17s} {'TCP Gbit/s':>11s} {'ratio':>7s} {'conn/s':>10s} {'ratio':>7s} {'failed':>7s}")
    for v in args.variants:
        g, c = med[v]
        lo_g, hi_g, lo_c, hi_c = spread[v]
        print(f"{v:17s} {g:11.2f} {g / base_g:7.3f} {c:10.0f} {c / base_c:7.3f} {results[v]['failed']:7d}"
              f"   (Gbit/s {lo_g:.2f}-{hi_g:.2f}, conn/s {lo_c:.0f}-{hi_c:.0f})")
    if all(v in args.variants for v in VARIANTS):
        order_g = med["bpf"][0] >= med["nftables"][0] >= med["iptables"][0]
        order_c = med["bpf"][1] >= med["nftables"][1] >= med["iptables"][1]
        print(f"\nbpf >= nftables >= iptables: throughput {'yes' if order_g else 'no'}, "
              f"new conns {'yes' if order_c else 'no'}")
    if all(v in args.variants for v in ("bpf",) + KEEPPORT):
        nk, ik = med["nftables-keepport"], med["iptables-keepport"]
        print(f"without fully-random, bpf >= nftables-keepport >= iptables-keepport: throughput "
              f"{'yes' if med['bpf'][0] >= nk[0] >= ik[0] else 'no'}, "
              f"new conns {'yes' if med['bpf'][1] >= nk[1] >= ik[1] else 'no'}")
    if "bpf" in med:
        print(f"bpf vs ceiling: throughput {med['bpf'][0] / base_g:.3f} (target 0.98), "
              f"new conns {med['bpf'][1] / base_c:.3f} (target 0.95)")
    print("\nbusy CPU of the whole machine per unit of work (median; ÷ no-nat per round, median), "
          "includes starting the client processes:")
    for v in args.variants:
        r, b = results[v], results["no-nat"]
        pc = [x / y for x, y in zip(r["cpu_us_per_conn"], b["cpu_us_per_conn"]) if y]
        pg = [x / y for x, y in zip(r["cpu_s_per_100gbit"], b["cpu_s_per_100gbit"]) if y]
        print(f"  {v:17s} {statistics.median(r['cpu_us_per_conn']):7.1f} us per connection ({statistics.median(pc):.3f})"
              f"   {statistics.median(r['cpu_s_per_100gbit']):6.2f} CPU s per 100 Gbit ({statistics.median(pg):.3f})")
    for v in (v for v in args.variants if v.startswith("bpf")):
        paired_g = [b / a for a, b in zip(results["no-nat"]["gbit"], results[v]["gbit"]) if a]
        paired_c = [b / a for a, b in zip(results["no-nat"]["conn_s"], results[v]["conn_s"]) if a]
        print(f"{v} / no-nat per round, median: throughput {statistics.median(paired_g):.3f}, "
              f"new conns {statistics.median(paired_c):.3f}")
    for v, name, st in sorted((v, n, st) for v in args.variants if v.startswith("bpf")
                              for n, st in results[v].get("prog", {}).items()):
        ns, runs = statistics.median(st["ns_per_run"]), statistics.median(st["runs_per_conn"])
        print(f"{v} {name}: {ns:.0f} ns per packet, {runs:.1f} packets per connection "
              f"({ns * runs / 1000:.2f} us per connection; kernel run_time_ns in an unscored connection run)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "median": med, "bpf_attach": bench.bpf_attach,
                       "ts_offset_per_port": ts_per_port}, f, indent=1)


if __name__ == "__main__":
    main()
