#!/usr/bin/env python3
"""e2e: pod egress SNAT with real traffic, for the nftables and the bpf backend.

Topology per test (all private network namespaces, removed afterwards):

    pod ns --(bridge + host-local + ruleplane CNI chain)-- node ns --veth-- outside ns
    10.96.0.x/24                       eth-out 192.168.79.1/24    eth0 192.168.79.2/24
                                       (+ 192.168.79.3 as a      (+ 172.31.9.1/24: an
                                        second egress address)     excluded destination)

The outside namespace runs a TCP and a UDP echo server (snat_peer.py) that
answer with the source address they see. The agent runs in the node
namespace through nsenter (not `ip netns exec`, which remounts /sys and would
hide bpffs), with its own --bpf-pin-dir under /sys/fs/bpf.

Needs root. Binaries from the environment (ctest sets them): RULEPLANE_AGENT,
RULEPLANE_PLUGIN_DIR, RULEPLANECTL.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import AGENT, CNIRUN, CTL, HERE, PLUGIN_DIR, REPO, LabTestCase, sh  # noqa: E402,F401
PEER = os.path.join(HERE, "snat_peer.py")

NODE_IP, EGRESS2, OUTSIDE_IP, EXCLUDED_IP = "192.168.79.1", "192.168.79.3", "192.168.79.2", "172.31.9.1"
POD_SUBNET = "10.96.0.0/24"
NODE_IP6, OUTSIDE_IP6, POD_SUBNET6 = "fd00:79::1", "fd00:79::2", "fd00:96::/64"
PORT = 7000
BPF_MAX_FLOWS = 4096  # snat_bpf_max_flows in every agent config here
RP_FILTER_HANDLE = "0x7270"  # kRuleplaneTcFilter (agent/kernel/bpf/tc_hook.h)
TCX_PROGS = os.path.join(REPO, "tools", "tcx_progs.py")  # tc/bpftool of Debian 12 predate tcx


def ensure_bpffs():
    """bpffs is global; mount it at /sys/fs/bpf when nothing is there yet."""
    with open("/proc/mounts") as f:
        if any(line.split()[1] == "/sys/fs/bpf" and line.split()[2] == "bpf" for line in f):
            return
    os.makedirs("/sys/fs/bpf", exist_ok=True)
    sh("mount", "-t", "bpf", "bpf", "/sys/fs/bpf")


def wait_for(pred, timeout=10, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Client:
    """A snat_peer.py client in a pod: persistent TCP connections + UDP."""

    def __init__(self, pod_ns, host, timeout=8):
        env = dict(os.environ, SNAT_PEER_TIMEOUT=str(timeout))
        self.p = subprocess.Popen(["ip", "netns", "exec", pod_ns, sys.executable, PEER, "client", host, str(PORT)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def open(self):
        """Returns (index, source address the server saw) or (-1, error)."""
        idx, rest = self.cmd("open").split(" ", 1)
        return int(idx), rest.split()[0] if not rest.startswith("ERR") else rest

    def ask(self, i):
        out = self.cmd(f"ask {i}")
        return out.split()[0] if not out.startswith("ERR") else out

    def udp(self):
        out = self.cmd("udp")
        return out.split()[0] if not out.startswith("ERR") else out

    def close(self):
        if self.p.poll() is None:
            try:
                self.cmd("quit")
            except (BrokenPipeError, OSError):
                pass
            self.p.kill()
        self.p.wait()
        self.p.stdin.close()
        self.p.stdout.close()


class SnatLab:
    def __init__(self, name, snat, ipv6=False):
        self.id = f"{name}-{os.getpid()}"
        self.node = f"rps-n-{self.id}"[:30]
        self.outside = f"rps-o-{self.id}"[:30]
        self.dir = tempfile.mkdtemp(prefix=f"rp-snat-{name}-")
        self.sock = os.path.join(self.dir, "run/ruleplane.sock")
        self.pin_dir = f"/sys/fs/bpf/rp-e2e-{self.id}"
        self.config = os.path.join(self.dir, "agent.json")
        self.pods, self.procs, self.clients = [], [], []
        self.agent = None
        ensure_bpffs()
        for ns in (self.node, self.outside):
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
        self.veth = (f"rpsa{os.getpid() % 100000}{len(name)}", f"rpsb{os.getpid() % 100000}{len(name)}")
        self.make_uplink()
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.node)
        ranges, routes = [[{"subnet": POD_SUBNET}]], [{"dst": "0.0.0.0/0"}]
        if ipv6:
            sh("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1", ns=self.node)
            sh("ip", "addr", "add", f"{NODE_IP6}/64", "dev", "eth-out", "nodad", ns=self.node)
            sh("ip", "addr", "add", f"{OUTSIDE_IP6}/64", "dev", "eth0", "nodad", ns=self.outside)
            sh("ip", "route", "add", POD_SUBNET6, "via", NODE_IP6, ns=self.outside)
            ranges.append([{"subnet": POD_SUBNET6}])
            routes.append({"dst": "::/0"})
        self.conflist = os.path.join(self.dir, "lab.conflist")
        with open(self.conflist, "w") as f:
            json.dump({
                "cniVersion": "1.0.0", "name": "snat",
                "plugins": [
                    {"type": "bridge", "bridge": "rps0", "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "ranges": ranges,
                              "routes": routes, "dataDir": os.path.join(self.dir, "ipam")}},
                    {"type": "ruleplane", "socket": self.sock, "timeout": "2s"},
                ]}, f)
        self.write_config(snat)
        server = subprocess.Popen(["ip", "netns", "exec", self.outside, sys.executable, PEER, "server", str(PORT)],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(server)
        assert server.stdout.readline().strip() == "ready"

    def make_uplink(self):
        """The veth pair node eth-out <-> outside eth0, addressed and routed."""
        a, b = self.veth
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.node)
        sh("ip", "link", "set", b, "netns", self.outside)
        sh("ip", "link", "set", a, "name", "eth-out", ns=self.node)
        sh("ip", "link", "set", b, "name", "eth0", ns=self.outside)
        sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth-out", ns=self.node)
        sh("ip", "addr", "add", f"{EGRESS2}/24", "dev", "eth-out", ns=self.node)  # secondary: primary stays .1
        sh("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0", ns=self.outside)
        sh("ip", "addr", "add", f"{EXCLUDED_IP}/24", "dev", "eth0", ns=self.outside)
        sh("ip", "link", "set", "eth-out", "up", ns=self.node)
        sh("ip", "link", "set", "eth0", "up", ns=self.outside)
        sh("ip", "route", "add", "172.31.9.0/24", "via", OUTSIDE_IP, ns=self.node)
        # Untranslated pod traffic (excluded destinations, mode off) needs a way back.
        sh("ip", "route", "add", POD_SUBNET, "via", NODE_IP, ns=self.outside)

    def rebuild_uplink(self):
        """Deletes the veth pair and creates it again under the same names (a
        bond or VLAN rebuilt): new devices, new ifindexes, no tc hooks."""
        sh("ip", "link", "del", "eth-out", ns=self.node)
        self.make_uplink()

    # --- agent ---

    def write_config(self, snat):
        cfg = {"snat_egress_interfaces": ["eth-out"], "bpf_pin_dir": self.pin_dir, "snat_stats_interval_ms": 200,
               "snat_exclude": ["172.31.9.0/24", POD_SUBNET], "snat_bpf_max_flows": BPF_MAX_FLOWS}
        cfg.update(snat)
        with open(self.config, "w") as f:
            json.dump(cfg, f)

    def start_agent(self):
        with open(os.path.join(self.dir, "agent.log"), "a") as log:
            self.agent = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.node}", AGENT, f"--socket={self.sock}",
                 f"--state-dir={os.path.join(self.dir, 'state')}", "--metrics-address=127.0.0.1:9464",
                 f"--config={self.config}"],
                stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise AssertionError("agent exited:\n" + self.log())
            if self.ctl("health").returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("agent not ready:\n" + self.log())

    def kill_agent(self):
        self.agent.send_signal(signal.SIGKILL)
        self.agent.wait(timeout=10)
        self.agent = None

    def stop_agent(self):
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait(timeout=15)
        self.agent = None

    def reload(self, snat):
        self.write_config(snat)
        mode = snat["snat_mode"]
        before = self.log().count("SIGHUP: configuration reloaded")
        self.agent.send_signal(signal.SIGHUP)
        wait_for(lambda: self.log().count("SIGHUP: configuration reloaded") > before or "reload failed" in self.log(),
                 timeout=20, what="reload")
        assert "reload failed" not in self.log(), self.log()
        assert self.status()["snat_backend"] == mode, self.status()
        # The monitor follows the reload with its next scan.
        wait_for(lambda: self.snat_stats().get("mode") == mode and self.snat_stats().get("collected_unix_us"),
                 what="snat stats after reload")

    def ctl(self, *args):
        return sh(CTL, f"--socket={self.sock}", "--timeout=2s", *args, check=False)

    def status(self):
        return json.loads(sh(CTL, f"--socket={self.sock}", "--json", "status").stdout)

    def snat_stats(self):
        # ruleplanectl may exit 1 to flag a full egress address; the JSON is
        # printed all the same.
        r = self.ctl("--json", "snat")
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {}

    def log(self):
        with open(os.path.join(self.dir, "agent.log")) as f:
            return f.read()

    def metrics(self):
        """Prometheus text from the agent (loopback of the node namespace)."""
        r = sh("curl", "-s", "--max-time", "2", "http://127.0.0.1:9464/metrics", ns=self.node, check=False)
        return r.stdout.decode()

    # --- pods and traffic ---

    def add_pod(self, i):
        ns = f"rps-p{i}-{self.id}"[:30]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        self.pods.append(ns)
        out = sh(CNIRUN, "--conflist", self.conflist, "--cni-path", f"{PLUGIN_DIR}:/usr/lib/cni", "--cache-dir",
                 os.path.join(self.dir, "cache"), "add", f"c{i}-{self.id}", f"/run/netns/{ns}", "eth0",
                 "--args", f"IgnoreUnknown=1;K8S_POD_NAMESPACE=snat;K8S_POD_NAME=p{i};K8S_POD_UID=u{i}",
                 ns=self.node).stdout
        ips = [ip["address"].split("/")[0] for ip in json.loads(out)["ips"]]
        self.pod_ipv6 = next((ip for ip in ips if ":" in ip), None)
        return ns, next(ip for ip in ips if ":" not in ip)

    def client(self, pod_ns, host=OUTSIDE_IP, timeout=8):
        c = Client(pod_ns, host, timeout)
        self.clients.append(c)
        return c

    def view(self, pod_ns, proto, host=OUTSIDE_IP, sport=None):
        """One round trip from the pod: [address, port] the server saw, or ["ERR"]."""
        r = sh(sys.executable, PEER, "once", proto, host, str(PORT), *([str(sport)] if sport else []), ns=pod_ns,
               check=False, timeout=30)
        return r.stdout.decode().split() if r.returncode == 0 else ["ERR"]

    def once(self, pod_ns, proto, host=OUTSIDE_IP):
        return self.view(pod_ns, proto, host)[0]

    # --- kernel state ---

    def nft_table(self):
        r = sh("nft", "-j", "list", "table", "inet", "ruleplane", ns=self.node, check=False)
        return json.loads(r.stdout)["nftables"] if r.returncode == 0 else []

    def snat_objects(self):
        names = []
        for o in self.nft_table():
            for kind in ("chain", "set", "map", "rule"):
                if kind in o:
                    obj = o[kind]
                    tag = obj.get("name", "") if kind != "rule" else obj.get("comment", "")
                    if "snat" in tag:
                        names.append(f"{kind} {tag}")
        return names

    def tcx(self, dev="eth-out"):
        """{"ingress": [program names], "egress": [...]} that tcx runs on
        `dev`, or None on a kernel without tcx."""
        r = sh(sys.executable, TCX_PROGS, dev, ns=self.node, check=False)
        if r.returncode == 3:
            return None
        if r.returncode != 0:
            raise AssertionError(f"tcx query failed: {r.stderr.decode()}")
        return {d: [p["name"] for p in progs] for d, progs in json.loads(r.stdout).items()}

    def hooked(self):
        """How our programs hook eth-out: "tcx" (and no clsact qdisc left),
        "clsact", or None (nothing: no links, filters or qdisc). Anything
        else fails the test; nobody but the agent hooks tc in these labs."""
        tcx = self.tcx() or {}
        qdisc, filters = self.tc()
        ours_tcx = sorted(tcx.get("ingress", []) + tcx.get("egress", [])) == ["snat_egress", "snat_ingress"]
        ours_cls = RP_FILTER_HANDLE in filters
        if ours_tcx and not ours_cls and "clsact" not in qdisc:
            return "tcx"
        if ours_cls and not tcx.get("ingress") and not tcx.get("egress"):
            return "clsact"
        if not ours_tcx and not ours_cls and not any(tcx.values()) and "clsact" not in qdisc:
            return None
        raise AssertionError(f"unexpected hooks on eth-out: tcx {tcx}, qdisc {qdisc!r}, filters {filters!r}")

    def tc(self, dev="eth-out"):
        qdisc = sh("tc", "qdisc", "show", "dev", dev, ns=self.node).stdout.decode()
        filters = ""
        for d in ("ingress", "egress"):
            filters += sh("tc", "filter", "show", "dev", dev, d, ns=self.node, check=False).stdout.decode()
        return qdisc, filters

    def close(self):
        for c in self.clients:
            c.close()
        for p in self.procs:
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        self.stop_agent()
        for ns in self.pods + [self.node, self.outside]:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.pin_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def nft_snat(**kw):
    return dict({"snat_mode": "nftables"}, **kw)


def bpf_snat(**kw):
    return dict({"snat_mode": "bpf"}, **kw)


class SnatTest(LabTestCase):
    def lab(self, name, snat, ipv6=False):
        lab = self.own(SnatLab(name, snat, ipv6=ipv6))
        lab.start_agent()
        return lab

    # --- the behaviour both backends share ---

    def check_egress_reply_and_exclusion(self, lab):
        ns, pod_ip = lab.add_pod(1)
        # TCP and UDP: the outside sees the egress address, the reply reaches the pod.
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        # An excluded destination sees the pod address.
        self.assertEqual(lab.once(ns, "tcp", EXCLUDED_IP), pod_ip)
        self.assertEqual(lab.once(ns, "udp", EXCLUDED_IP), pod_ip)
        # A persistent connection: saturation stats see it on the egress address.
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))
        # The counts are JSON strings (int64): "0" is truthy, so compare numbers.
        stats = wait_for(lambda: (s := lab.snat_stats()) and int(s.get("translations") or 0) >= 1 and s,
                         what="snat translations")
        egress = {e["address"]: e for e in stats["egress"]}
        self.assertGreaterEqual(int(egress[NODE_IP].get("translations", 0)), 1, stats)
        busiest = stats["busiest"][0]
        self.assertEqual((busiest["egress_ip"], busiest["dst_ip"]), (NODE_IP, OUTSIDE_IP), stats)
        return ns, pod_ip

    def check_failover(self, lab, drop_reasons):
        ns, _ = lab.add_pod(1)
        c = lab.client(ns, timeout=7)
        seen = [c.open()[1] for _ in range(4)]
        # Two ports per address: two flows on the first, then the second.
        self.assertEqual(seen, [NODE_IP, NODE_IP, EGRESS2, EGRESS2])
        # Every address full: dropped (the connect times out) and counted.
        idx, err = c.open()
        self.assertEqual(idx, -1, err)
        stats = wait_for(lambda: (s := lab.snat_stats()) and any(int(s.get("drops", {}).get(r, 0)) > 0
                                                                  for r in drop_reasons) and s,
                         what=f"drop counted as one of {drop_reasons}")
        self.assertGreaterEqual(int(stats.get("failovers", 0)), 1, stats)
        egress = {e["address"]: e for e in stats["egress"]}
        self.assertEqual(int(egress[NODE_IP]["translations"]), 2, stats)
        self.assertEqual(int(egress[EGRESS2]["translations"]), 2, stats)
        self.assertEqual(stats["busiest"][0]["utilization"], 1, stats)
        # The established flows keep working.
        self.assertEqual([c.ask(i) for i in range(4)], [NODE_IP, NODE_IP, EGRESS2, EGRESS2])
        # The same, as Prometheus metrics.
        metrics = lab.metrics()
        backend = stats["mode"]
        self.assertIn(f'ruleplane_snat_translations{{egress_ip="{EGRESS2}"}} 2', metrics)
        self.assertIn(f'ruleplane_snat_busiest_utilization_ratio{{dst_ip="{OUTSIDE_IP}",dst_port="{PORT}",'
                      f'egress_ip="{NODE_IP}",proto="tcp",rank=', metrics)
        self.assertRegex(metrics, rf'ruleplane_snat_failovers_total{{backend="{backend}"}} [1-9]')
        self.assertRegex(metrics, rf'ruleplane_snat_drops_total{{backend="{backend}",reason="no_port"}} [1-9]')
        # bpf: the NAT map size the operator configured, next to the translations that fill it.
        capacity = BPF_MAX_FLOWS if backend == "bpf" else 0
        self.assertEqual(int(stats["flow_table_capacity"]), capacity, stats)
        self.assertIn(f"ruleplane_snat_flow_table_capacity {capacity}\n", metrics)

    def check_survives_sigkill(self, lab):
        ns, _ = lab.add_pod(1)
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))
        lab.kill_agent()
        self.assertEqual(c.ask(0), NODE_IP, "established flow after SIGKILL")
        self.assertEqual(c.udp(), NODE_IP, "new flow while the agent is down")
        lab.start_agent()
        self.assertEqual(c.ask(0), NODE_IP, "established flow after the restart")
        self.assertEqual(c.open(), (1, NODE_IP))
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)

    def check_fully_random_off_keeps_the_pods_port(self, lab, snat):
        # snat_fully_random false: a free pod port in the range is kept (as
        # conntrack NAT without the random flags does), in both backends.
        ns, _ = lab.add_pod(1)
        self.assertEqual(lab.view(ns, "udp", sport=45678), [NODE_IP, "45678"])
        self.assertEqual(lab.view(ns, "udp", sport=45679), [NODE_IP, "45679"])
        lab.reload(dict(snat, snat_fully_random=True))
        seen = [lab.view(ns, "udp", sport=p) for p in range(45680, 45690)]
        self.assertTrue(all(v and v[0] == NODE_IP for v in seen), seen)
        kept = sum(int(v[1]) == p for v, p in zip(seen, range(45680, 45690)))
        self.assertLessEqual(kept, 1, f"fully random: each flow keeps its port by a 1 in 64512 chance: {seen}")

    # --- nftables ---

    def test_nftables_fully_random_off_keeps_the_pods_port(self):
        snat = nft_snat(snat_port_range="1024-65535", snat_fully_random=False)
        self.check_fully_random_off_keeps_the_pods_port(self.lab("nftkeep", snat), snat)

    def test_nftables_egress_reply_and_exclusion(self):
        lab = self.lab("nft", nft_snat())
        self.check_egress_reply_and_exclusion(lab)
        self.assertIn("chain snat-v4", lab.snat_objects())
        self.assertIsNone(lab.hooked(), "no tc hooks in nftables mode")
        self.assertEqual(lab.snat_stats().get("bpf_l4_checksum"), "", "no bpf datapath in nftables mode")
        self.assertNotIn("ruleplane_snat_bpf_datapath_info{", lab.metrics())

    def test_nftables_failover_tiny_range(self):
        # Port exhaustion in nftables is seen in conntrack by the agent; until
        # its steering element lands (one scan), the kernel drops the SYN and
        # the client retransmits it onto the next address.
        lab = self.lab("nftfo", nft_snat(snat_egress_ips=[NODE_IP, EGRESS2], snat_port_range="61000-61001"))
        self.check_failover(lab, ["no_port"])
        # Both addresses full for (outside, tcp, 7000): steering now drops
        # its new flows in our rule (counted) instead of letting them clash.
        table = lab.nft_table()
        full = [o["set"].get("elem") for o in table if "set" in o and o["set"]["name"] == "snat-full-v4"]
        self.assertTrue(full and full[0], table)
        self.assertEqual(int(lab.snat_stats().get("exhausted_destinations", 0)), 1)

    def test_nftables_established_flow_survives_agent_sigkill(self):
        self.check_survives_sigkill(self.lab("nftkill", nft_snat()))

    def test_nftables_egress_address_follows_the_interface(self):
        # The agent starts while its egress interface has no address yet
        # (boot: DHCP not done): SNAT waits instead of the agent failing,
        # pods start, and the first address is taken once it appears; a
        # removed address is kept until the interface has another, which is
        # then taken.
        lab = self.own(SnatLab("nftfollow", nft_snat()))
        sh("ip", "addr", "flush", "dev", "eth-out", ns=lab.node)
        lab.start_agent()
        stats = wait_for(lambda: (s := lab.snat_stats()).get("collected_unix_us") and s, what="snat stats")
        self.assertEqual(stats["mode"], "off", stats)
        self.assertEqual(stats.get("egress_waiting"), "snat_mode nftables waits: interface eth-out has no IPv4 address")
        r = lab.ctl("snat")
        self.assertEqual(r.returncode, 1, "a waiting SNAT is worth an alert")
        self.assertIn("WAITING:        snat_mode nftables waits", r.stdout.decode())
        self.assertIn("ruleplane_snat_egress_waiting 1\n", lab.metrics())
        self.assertIn("snat backend:   off (WAITING: snat_mode nftables waits", lab.ctl("status").stdout.decode())
        self.assertEqual(lab.snat_objects(), [], "nothing translated while waiting")
        ns, _ = lab.add_pod(1)  # pod setup does not wait for SNAT
        # A reload while waiting keeps waiting (and does not fail).
        lab.agent.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP: configuration reloaded" in lab.log(), what="reload while waiting")
        self.assertIn("SIGHUP: snat mode=off (nftables waits)", lab.log())
        self.assertEqual(lab.snat_stats().get("egress_waiting"),
                         "snat_mode nftables waits: interface eth-out has no IPv4 address")

        sh("ip", "addr", "add", "192.168.79.5/24", "dev", "eth-out", ns=lab.node)
        wait_for(lambda: lab.snat_stats().get("mode") == "nftables", what="nftables once eth-out has an address")
        self.assertEqual(lab.once(ns, "tcp"), "192.168.79.5")
        self.assertEqual(lab.once(ns, "udp"), "192.168.79.5")
        self.assertEqual(lab.snat_stats().get("egress_waiting"), "")
        self.assertIn("ruleplane_snat_egress_waiting 0\n", lab.metrics())
        self.assertEqual(lab.ctl("snat").returncode, 0)
        # The bring-up report says how long SNAT waited, and for what.
        report = json.loads(lab.ctl("--json", "bringup").stdout)
        waits = [p for p in report["current"]["phases"] if p["name"] == "waiting for egress address"]
        self.assertEqual(len(waits), 1, report)
        self.assertEqual((waits[0]["status"], waits[0]["detail"]), ("ok", "192.168.79.5 on eth-out"))
        self.assertGreater(waits[0]["end_seconds"], waits[0]["start_seconds"])

        # Gone without a successor: kept, and said so.
        sh("ip", "addr", "del", "192.168.79.5/24", "dev", "eth-out", ns=lab.node)
        stats = wait_for(lambda: "keep using" in (s := lab.snat_stats()).get("egress_waiting", "") and s,
                         what="the vanished address kept")
        self.assertEqual(stats["mode"], "nftables")
        self.assertIn("new flows keep using 192.168.79.5 until it has one", stats["egress_waiting"])
        self.assertIn("ruleplane_snat_egress_waiting 1\n", lab.metrics())
        # Another address: taken.
        sh("ip", "addr", "add", "192.168.79.6/24", "dev", "eth-out", ns=lab.node)
        wait_for(lambda: lab.snat_stats().get("egress_waiting") == "", what="the new address taken")
        self.assertEqual(lab.once(ns, "tcp"), "192.168.79.6")
        self.assertEqual(lab.once(ns, "udp"), "192.168.79.6")
        self.assertIn("egress interface eth-out changed: snat mode=nftables ifaces=eth-out egress=192.168.79.6",
                      lab.log())

    # --- bpf ---

    def test_bpf_follows_a_rebuilt_egress_device_and_its_new_primary_address(self):
        lab = self.lab("bpffollow", bpf_snat())
        ns, _ = lab.add_pod(1)
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        kind = lab.hooked()
        self.assertIn(kind, ("tcx", "clsact"))
        # The device is deleted and created again: our hooks went with the
        # old one, and the new one gets them.
        lab.rebuild_uplink()
        wait_for(lambda: lab.hooked() == kind, what=f"{kind} hooks on the new eth-out")
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        self.assertRegex(lab.log(), r"interface eth-out \(ifindex \d+\) (was replaced|is gone)")
        # Renamed away while up: the device keeps nothing of ours under its
        # new name (no notification names eth-out; the agent notices that
        # the name is gone).
        sh("ip", "link", "set", "eth-out", "name", "eth-old", ns=lab.node)

        def ours_on_old():
            return any((lab.tcx("eth-old") or {}).values()) or RP_FILTER_HANDLE in lab.tc("eth-old")[1]
        wait_for(lambda: not ours_on_old(), what="our hooks off the renamed device")
        stats = wait_for(lambda: "does not exist" in (s := lab.snat_stats()).get("egress_waiting", "") and s,
                         what="the missing interface reported")
        self.assertEqual(stats["mode"], "bpf")
        self.assertIn(f"new flows keep using {NODE_IP} until it has one", stats["egress_waiting"])
        # Renamed back: hooked again. (The kernel relabels the secondary
        # address "eth-out:2" on a rename; the address lookup goes by
        # ifindex, so the promotion below still finds it.)
        sh("ip", "link", "set", "eth-old", "name", "eth-out", ns=lab.node)
        wait_for(lambda: lab.hooked() == kind, what=f"{kind} hooks back with the name")
        wait_for(lambda: lab.snat_stats().get("egress_waiting") == "", what="the wait over")
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        # The primary address goes; the secondary is promoted and taken.
        sh("sysctl", "-qw", "net.ipv4.conf.eth-out.promote_secondaries=1", ns=lab.node)
        sh("ip", "addr", "del", f"{NODE_IP}/24", "dev", "eth-out", ns=lab.node)
        wait_for(lambda: EGRESS2 in lab.snat_stats().get("settings", ""), what="the promoted address taken")
        self.assertEqual(lab.once(ns, "tcp"), EGRESS2)
        self.assertEqual(lab.once(ns, "udp"), EGRESS2)
        self.assertEqual(lab.snat_stats().get("egress_waiting"), "")

    def test_bpf_egress_reply_and_exclusion(self):
        lab = self.lab("bpf", bpf_snat())
        self.check_egress_reply_and_exclusion(lab)
        self.assertEqual(lab.snat_objects(), [], "no SNAT rules in nftables in bpf mode")
        # snat_bpf_attach auto: tcx links where the kernel has them, and
        # GetSnatStats says which.
        kind = "clsact" if lab.tcx() is None else "tcx"
        self.assertEqual(lab.hooked(), kind)
        self.assertEqual(wait_for(lambda: lab.snat_stats().get("bpf_hook"), what="bpf_hook in GetSnatStats"), kind)
        # How the programs run here, as the agent loaded them; the info
        # metric says the same.
        stats = wait_for(lambda: (s := lab.snat_stats()).get("bpf_l4_checksum") and s, what="bpf datapath")
        self.assertIn(stats["bpf_l4_checksum"], ("direct", "helper"))
        self.assertIn(stats.get("bpf_clock"), ("jiffies", "ktime"))
        self.assertEqual(stats.get("bpf_exclusions"), "array", "two exclusion prefixes fit the inline array")
        self.assertIn('ruleplane_snat_bpf_datapath_info{clock="%s",exclusions="array",l4_checksum="%s"} 1'
                      % (stats["bpf_clock"], stats["bpf_l4_checksum"]), lab.metrics())

    def test_bpf_fully_random_off_keeps_the_pods_port(self):
        snat = bpf_snat(snat_port_range="1024-65535", snat_fully_random=False)
        self.check_fully_random_off_keeps_the_pods_port(self.lab("bpfkeep", snat), snat)

    def test_bpf_restart_while_the_address_is_missing_keeps_flows(self):
        # The agent restarts while the egress interface has lost its
        # address: it keeps the address the pinned maps hold (as a running
        # agent keeps a vanished one) instead of starting in mode off, which
        # would remove the maps; the established flow works again once the
        # address is back.
        lab = self.lab("bpfrestart", bpf_snat())
        ns, _ = lab.add_pod(1)
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))
        lab.kill_agent()
        sh("ip", "addr", "flush", "dev", "eth-out", ns=lab.node)
        lab.start_agent()
        stats = wait_for(lambda: "keep using" in (s := lab.snat_stats()).get("egress_waiting", "") and s,
                         what="the pinned address kept")
        self.assertEqual(stats["mode"], "bpf")
        self.assertIn(f"new flows keep using {NODE_IP} until it has one", stats["egress_waiting"])
        self.assertIn(f"keeping {NODE_IP} from the maps pinned in {lab.pin_dir}", lab.log())
        sh("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth-out", ns=lab.node)
        wait_for(lambda: lab.snat_stats().get("egress_waiting") == "", what="the address back")
        self.assertEqual(c.ask(0), NODE_IP, "the established flow after the restart and the address's return")
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)

    def test_bpf_pod_flow_does_not_take_a_port_a_node_connection_holds(self):
        # The node's own TCP connection from the egress address, on a port
        # of the SNAT range, to the same server the pod then talks to. The
        # programs must skip that port: reverse-translating the node's
        # replies to the pod broke the node's connection before.
        # One port per address: the flow must fail over to the second
        # address, whichever port a random start would have tried first.
        lab = self.lab("bpfnode", bpf_snat(snat_port_range="61000-61000", snat_egress_ips=[NODE_IP, EGRESS2]))
        ns, _ = lab.add_pod(1)
        node = subprocess.Popen(
            ["ip", "netns", "exec", lab.node, sys.executable, "-c",
             "import socket,sys\n"
             f"s=socket.socket();s.bind(('{NODE_IP}',61000));s.settimeout(5);s.connect(('{OUTSIDE_IP}',{PORT}))\n"
             "f=s.makefile('rw')\n"
             "for line in sys.stdin:\n"
             "  f.write('x\\n');f.flush();print(f.readline().strip(),flush=True)\n"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(lambda: (node.kill(), node.wait(), node.stdin.close(), node.stdout.close()))

        def node_ask():
            node.stdin.write("\n")
            node.stdin.flush()
            return node.stdout.readline().split()

        self.assertEqual(node_ask(), [NODE_IP, "61000"])
        self.assertEqual(lab.view(ns, "tcp"), [EGRESS2, "61000"], "the pod flow went to the next address")
        self.assertEqual(node_ask(), [NODE_IP, "61000"], "the node's connection still works")
        wait_for(lambda: int(lab.snat_stats().get("node_socket_skips", 0)) >= 1, what="node_socket_skips")
        self.assertIn("ruleplane_snat_bpf_node_socket_skips_total 1\n", lab.metrics())
        self.assertIn("node sockets:   1 candidate ports skipped", lab.ctl("snat").stdout.decode())

    def test_bpf_reports_ports_it_shares_with_the_nodes_ephemeral_ports(self):
        # The node's connect() does not see the translated flows: the agent
        # says how many ports of its range the node may also pick for itself.
        lab = self.lab("bpfeph", bpf_snat())
        sysctl = lambda knob, value: sh("sysctl", "-qw", f"net.ipv4.{knob}={value}", ns=lab.node)
        sysctl("ip_local_port_range", "32768 60999")  # Linux's default, below the bpf default range
        stats = wait_for(lambda: (s := lab.snat_stats()).get("node_ephemeral_ports") == "32768-60999" and s,
                         what="node_ephemeral_ports in GetSnatStats")
        self.assertEqual(stats["port_range"], "61000-65535")
        self.assertEqual(int(stats.get("ports_shared_with_node", 0)), 0, stats)
        self.assertIn("ruleplane_snat_ports_shared_with_node 0\n", lab.metrics())
        self.assertNotIn("ephemeral", lab.ctl("snat").stdout.decode())

        sysctl("ip_local_port_range", "60000 62001")  # 61000-62001 shared
        stats = wait_for(lambda: (s := lab.snat_stats()).get("ports_shared_with_node") == 1002 and s,
                         what="1002 shared ports")
        self.assertEqual(stats["node_ephemeral_ports"], "60000-62001")
        self.assertIn("ruleplane_snat_ports_shared_with_node 1002\n", lab.metrics())
        text = lab.ctl("snat").stdout.decode()
        self.assertIn("1002 of these ports are also the node's ephemeral ports (net.ipv4.ip_local_port_range "
                      "60000-62001)", text)
        self.assertIn("ports of the bpf SNAT range 61000-65535 (from 61000-62001) are also the node's ephemeral",
                      lab.log())

        # Reserved ports are never handed out as ephemeral ones.
        sysctl("ip_local_reserved_ports", "61000-61999")
        wait_for(lambda: lab.snat_stats().get("ports_shared_with_node") == 2, what="2 shared ports")
        sysctl("ip_local_reserved_ports", "61000-65535")
        wait_for(lambda: int(lab.snat_stats().get("ports_shared_with_node", 0)) == 0, what="no shared ports")
        self.assertIn("no longer shares ports with the node's ephemeral ports", lab.log())

    def test_bpf_attach_switch_between_clsact_and_tcx_keeps_flows(self):
        lab = self.lab("bpfatt", bpf_snat(snat_bpf_attach="clsact"))
        if lab.tcx() is None:
            self.skipTest("kernel without tcx (Linux < 6.6)")
        ns, _ = lab.add_pod(1)
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))
        self.assertEqual(lab.hooked(), "clsact")
        self.assertEqual(wait_for(lambda: lab.snat_stats().get("bpf_hook"), what="bpf_hook"), "clsact")
        lab.reload(bpf_snat(snat_bpf_attach="tcx"))
        self.assertEqual(lab.hooked(), "tcx")
        wait_for(lambda: lab.snat_stats().get("bpf_hook") == "tcx", what="bpf_hook tcx after the switch")
        self.assertEqual(c.ask(0), NODE_IP, "established flow after clsact -> tcx (same maps)")
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        # A restart finds its pinned links and keeps them.
        lab.kill_agent()
        self.assertEqual(c.ask(0), NODE_IP, "established flow while the agent is down")
        lab.start_agent()
        self.assertEqual(lab.hooked(), "tcx")
        lab.reload(bpf_snat(snat_bpf_attach="clsact"))
        self.assertEqual(lab.hooked(), "clsact")
        self.assertEqual(c.ask(0), NODE_IP, "established flow after tcx -> clsact")
        self.assertEqual(c.open(), (1, NODE_IP))

    def test_bpf_checksums_hold_when_the_kernel_finishes_them(self):
        # Between namespaces a CHECKSUM_PARTIAL packet is never checksummed:
        # the receiver trusts it. With tx checksum offload off on the node's
        # devices the kernel computes each checksum after our programs, from
        # the seed they left in the field, and the receiver verifies it. So
        # a translated packet whose checksum (or seed) the programs got
        # wrong is dropped and counted in the receiver's InCsumErrors.
        lab = self.lab("bpfcsum", bpf_snat())
        ns, _ = lab.add_pod(1)
        ports = sh("ip", "-o", "link", "show", "master", "rps0", ns=lab.node).stdout.decode().splitlines()
        host_veths = [line.split(":")[1].strip().split("@")[0] for line in ports]
        self.assertEqual(len(host_veths), 1, ports)
        for dev in ["eth-out"] + host_veths:
            sh("ethtool", "-K", dev, "tx", "off", ns=lab.node)

        def csum_errors(netns):
            rows = [line.split() for line in sh("cat", "/proc/net/snmp", ns=netns).stdout.decode().splitlines()]
            out = {}
            for head, vals in zip(rows[::2], rows[1::2]):
                if "InCsumErrors" in head:
                    out[head[0].rstrip(":")] = int(vals[head.index("InCsumErrors")])
            return out

        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        sh("ping", "-c", "2", "-i", "0.2", "-W", "2", OUTSIDE_IP, ns=ns)
        # Bulk both ways: GSO packets are segmented in software from the
        # seed after our hooks.
        server = subprocess.Popen(["ip", "netns", "exec", lab.outside, "iperf3", "-s", "-p", "5201"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lab.procs.append(server)

        def bulk(extra):
            # (bytes received, or None and why): the server may not listen
            # yet, and a run that failed still prints JSON with an "error".
            p = sh("iperf3", "-c", OUTSIDE_IP, "-p", "5201", "-t", "1", "-J", *extra, ns=ns, check=False)
            try:
                j = json.loads(p.stdout)
            except ValueError:
                return None, p.stderr.decode()[-300:]
            got = j.get("end", {}).get("sum_received", {}).get("bytes")
            return (got, None) if p.returncode == 0 and got else (None, j.get("error", "no sum_received"))

        for extra in ([], ["-R"]):
            errors = []

            def attempt():
                got, why = bulk(extra)
                if got is None:
                    errors.append(why)
                return got

            try:
                got = wait_for(attempt, timeout=20, what="iperf3 " + " ".join(extra))
            except AssertionError as e:
                raise AssertionError(f"{e}; last iperf3 errors: {errors[-3:]}") from None
            self.assertGreater(got, 1 << 20, f"iperf3 {extra}: {got} bytes")
        for netns in (ns, lab.outside):
            self.assertEqual(set(csum_errors(netns).values()), {0}, (netns, csum_errors(netns)))
        stats = lab.snat_stats()
        self.assertFalse([k for k, v in stats.get("drops", {}).items() if "csum" in k and int(v)], stats)

    def test_bpf_failover_tiny_range(self):
        lab = self.lab("bpffo", bpf_snat(snat_egress_ips=[NODE_IP, EGRESS2], snat_port_range="61000-61001"))
        self.check_failover(lab, ["no_port"])

    def test_bpf_established_flow_survives_agent_sigkill(self):
        lab = self.lab("bpfkill", bpf_snat())
        self.check_survives_sigkill(lab)
        self.assertTrue(os.path.exists(os.path.join(lab.pin_dir, "ruleplane_rnat")))

    def test_bpf_flow_table_resize_keeps_established_flows(self):
        # Changing snat_bpf_max_flows moves the flows into maps of the new
        # size (reload and restart alike); the established connection keeps
        # its translation and the pins end up at the new size.
        lab = self.lab("bpfresize", bpf_snat())
        ns, _ = lab.add_pod(1)
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))

        def pinned_size():
            out = sh("bpftool", "-j", "map", "show", "pinned", os.path.join(lab.pin_dir, "ruleplane_rnat")).stdout
            return json.loads(out)["max_entries"]

        self.assertEqual(pinned_size(), BPF_MAX_FLOWS)
        lab.reload(bpf_snat(snat_bpf_max_flows=2 * BPF_MAX_FLOWS))
        wait_for(lambda: pinned_size() == 2 * BPF_MAX_FLOWS, what="flow maps pinned at the new size")
        self.assertEqual(c.ask(0), NODE_IP, "established flow after the resize")
        wait_for(lambda: int(lab.snat_stats().get("flow_table_capacity", 0)) == 2 * BPF_MAX_FLOWS,
                 what="flow_table_capacity after the resize")
        # Back down across a restart: the agent dies, the config shrinks.
        lab.kill_agent()
        lab.write_config(bpf_snat())
        lab.start_agent()
        wait_for(lambda: pinned_size() == BPF_MAX_FLOWS, what="flow maps pinned at the old size again")
        self.assertEqual(c.ask(0), NODE_IP, "established flow after shrinking across a restart")
        self.assertEqual(c.open(), (1, NODE_IP))

    def test_nftables_ipv6_only_when_enabled(self):
        lab = self.lab("nft6", nft_snat(snat_exclude=["172.31.9.0/24", POD_SUBNET, POD_SUBNET6]), ipv6=True)
        ns, _ = lab.add_pod(1)
        self.assertIsNotNone(lab.pod_ipv6)
        # Off by default: IPv6 pods keep their address, IPv4 is translated.
        self.assertEqual(lab.once(ns, "tcp", OUTSIDE_IP6), lab.pod_ipv6)
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        lab.reload(nft_snat(snat_ipv6=True, snat_exclude=["172.31.9.0/24", POD_SUBNET, POD_SUBNET6]))
        self.assertEqual(lab.once(ns, "tcp", OUTSIDE_IP6), NODE_IP6)
        self.assertEqual(lab.once(ns, "udp", OUTSIDE_IP6), NODE_IP6)
        self.assertIn("chain snat-v6", lab.snat_objects())

    # --- switching ---

    def test_mode_switch_at_runtime_leaves_nothing_behind(self):
        lab = self.lab("switch", nft_snat())
        ns, pod_ip = lab.add_pod(1)
        c = lab.client(ns)
        self.assertEqual(c.open(), (0, NODE_IP))

        lab.reload(bpf_snat())
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        self.assertEqual(lab.snat_objects(), [], "nftables SNAT objects left after switching to bpf")
        self.assertIsNotNone(lab.hooked())
        # A flow translated by conntrack before the switch keeps working.
        self.assertEqual(c.ask(0), NODE_IP)

        lab.reload({"snat_mode": "off"})
        self.assertEqual(lab.once(ns, "tcp"), pod_ip, "mode off: the outside sees the pod")
        self.assertIsNone(lab.hooked(), "tc hooks left after leaving bpf mode")
        self.assertFalse(os.path.exists(lab.pin_dir), "pins left after leaving bpf mode")
        self.assertEqual(lab.snat_objects(), [])

        lab.reload(bpf_snat())
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        lab.reload(nft_snat())
        self.assertEqual(lab.once(ns, "tcp"), NODE_IP)
        self.assertEqual(lab.once(ns, "udp"), NODE_IP)
        self.assertIsNone(lab.hooked())
        self.assertFalse(os.path.exists(lab.pin_dir))
        self.assertIn("chain snat-v4", lab.snat_objects())
        self.assertEqual(sh(CTL, f"--socket={lab.sock}", "diff", check=False).returncode, 0,
                         "desired and kernel state agree after the switches")


if __name__ == "__main__":
    unittest.main(verbosity=2)
