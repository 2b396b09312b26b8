#!/usr/bin/env python3
"""e2e: the real agent + the real reference CNI plugins (bridge, host-local from
/usr/lib/cni) chained with `ruleplane`, driven by tools/cnirun exactly as a
runtime drives a conflist, with real traffic between namespaces.

Every test builds its own node / outside / pod namespaces, agent socket and
state dir, and removes them. Needs root. Binaries come from the environment
(ctest sets them): RULEPLANE_AGENT, RULEPLANE_PLUGIN_DIR, RULEPLANECTL.
"""
import concurrent.futures
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
from e2elib import AGENT, CNIRUN, CTL, PLUGIN_DIR, REPO, LabTestCase, sh  # noqa: E402,F401


class Lab:
    """A node namespace with the agent, an outside namespace, and pods."""

    def __init__(self, name, agent_args=(), subnet="10.98.0.0/24"):
        self.id = f"{name}-{os.getpid()}"
        self.node = f"rpe-n-{self.id}"[:30]
        self.outside = f"rpe-o-{self.id}"[:30]
        self.dir = tempfile.mkdtemp(prefix=f"rp-e2e-{name}-")
        self.sock = os.path.join(self.dir, "run/ruleplane.sock")
        self.pods = []
        self.servers = []
        self.agent = None
        self.agent_args = list(agent_args)
        sh("ip", "netns", "add", self.node)
        sh("ip", "netns", "add", self.outside)
        sh("ip", "link", "set", "lo", "up", ns=self.node)
        sh("ip", "link", "set", "lo", "up", ns=self.outside)
        a, b = f"rpea{os.getpid() % 100000}{len(name)}", f"rpeb{os.getpid() % 100000}{len(name)}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", self.node)
        sh("ip", "link", "set", b, "netns", self.outside)
        sh("ip", "link", "set", a, "name", "eth-out", ns=self.node)
        sh("ip", "link", "set", b, "name", "eth0", ns=self.outside)
        sh("ip", "addr", "add", "192.168.78.1/24", "dev", "eth-out", ns=self.node)
        sh("ip", "addr", "add", "192.168.78.2/24", "dev", "eth0", ns=self.outside)
        sh("ip", "link", "set", "eth-out", "up", ns=self.node)
        sh("ip", "link", "set", "eth0", "up", ns=self.outside)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=self.node)
        self.conflist = os.path.join(self.dir, "lab.conflist")
        with open(self.conflist, "w") as f:
            json.dump({
                "cniVersion": "1.0.0", "name": "e2e",
                "plugins": [
                    {"type": "bridge", "bridge": "rpe0", "isGateway": True, "ipMasq": False,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(self.dir, "ipam")}},
                    {"type": "ruleplane", "socket": self.sock, "timeout": "2s",
                     "capabilities": {"portMappings": True}},
                ]}, f)

    def start_agent(self):
        with open(os.path.join(self.dir, "agent.log"), "a") as log:
            self.agent = self._spawn_agent(log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise AssertionError("agent exited:\n" + self.log())
            if sh(CTL, f"--socket={self.sock}", "--timeout=300ms", "health", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError("agent not ready:\n" + self.log())

    def _spawn_agent(self, log):
        return subprocess.Popen(
            ["ip", "netns", "exec", self.node, AGENT, f"--socket={self.sock}",
             f"--state-dir={os.path.join(self.dir, 'state')}", "--metrics-address="] + self.agent_args,
            stdout=log, stderr=log)

    def stop_agent(self):
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            self.agent.wait(timeout=10)
        self.agent = None

    def log(self):
        with open(os.path.join(self.dir, "agent.log")) as f:
            return f.read()

    def cni(self, *args, check=True, port_mappings=None, cni_args=None):
        cmd = [CNIRUN, "--conflist", self.conflist, "--cni-path", f"{PLUGIN_DIR}:/usr/lib/cni",
               "--cache-dir", os.path.join(self.dir, "cache")]
        if port_mappings is not None:
            cmd += ["--port-mappings", json.dumps(port_mappings)]
        if cni_args:
            cmd += ["--args", cni_args]
        return sh(*(cmd + list(args)), check=check, ns=self.node)

    def add_pod(self, i, host_port=None, serve=False):
        ns = f"rpe-p{i}-{self.id}"[:30]
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        self.pods.append(ns)
        pm = [{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}] if host_port else []
        out = self.cni("add", f"c{i}-{self.id}", f"/run/netns/{ns}", "eth0", port_mappings=pm,
                       cni_args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME=web-{i};K8S_POD_UID=uid-{i}").stdout
        ip = json.loads(out)["ips"][0]["address"].split("/")[0]
        if serve:
            www = os.path.join(self.dir, f"www{i}")
            os.makedirs(www, exist_ok=True)
            with open(os.path.join(www, "index.html"), "w") as f:
                f.write(f"web-{i}\n")
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", "80", "--bind", "0.0.0.0",
                 "--directory", www], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if sh("curl", "-s", "--max-time", "1", "http://127.0.0.1/", ns=ns, check=False).returncode == 0:
                    break
                time.sleep(0.05)
        return ns, ip

    def nft(self, *args, check=True):
        return sh("nft", *args, ns=self.node, check=check)

    def close(self):
        for s in self.servers:
            s.kill()
            s.wait()
        self.stop_agent()
        for ns in self.pods + [self.node, self.outside]:
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_plugin(env, stdin, timeout=10):
    full = {"PATH": os.environ["PATH"]}
    full.update(env)
    p = subprocess.run([os.path.join(PLUGIN_DIR, "ruleplane")], input=stdin, env=full,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return p.returncode, p.stdout.decode()


class E2ETest(LabTestCase):
    def lab(self, name, **kw):
        return self.own(Lab(name, **kw))

    def test_hostport_reaches_pod_and_check_del_twice(self):
        lab = self.lab("hp", agent_args=["--table-owner=off", "--drift-repair=false"])
        lab.start_agent()
        ns1, ip1 = lab.add_pod(1, host_port=8080, serve=True)
        ns2, ip2 = lab.add_pod(2, serve=False)
        # Pod to pod over the bridge.
        sh("ping", "-c", "1", "-W", "2", ip2, ns=ns1)
        # Outside -> node:8080 -> DNAT -> pod1:80.
        r = sh("curl", "-s", "--max-time", "3", "http://192.168.78.1:8080/", ns=lab.outside)
        self.assertEqual(r.stdout.decode().strip(), "web-1")
        # CHECK passes, then fails once the element is removed behind our back.
        lab.cni("check", f"c1-{lab.id}", f"/run/netns/{ns1}", "eth0")
        lab.nft("delete", "element", "inet", "ruleplane", "hostport-v4", "{ tcp . 8080 }")
        r = lab.cni("check", f"c1-{lab.id}", f"/run/netns/{ns1}", "eth0", check=False)
        self.assertNotEqual(r.returncode, 0)
        err = json.loads(r.stdout)
        self.assertEqual(err["code"], 101, err)
        self.assertIn("hostport-v4", err["msg"] + err.get("details", ""))
        # DEL twice: the second one like a runtime retry (no netns, no cached result).
        lab.cni("del", f"c1-{lab.id}", f"/run/netns/{ns1}", "eth0")
        lab.cni("del", f"c1-{lab.id}", "", "eth0")
        self.assertNotIn(ip1, lab.nft("list", "set", "inet", "ruleplane", "pod-ipv4").stdout.decode())
        r = sh("curl", "-s", "--max-time", "2", "http://192.168.78.1:8080/", ns=lab.outside, check=False)
        self.assertNotEqual(r.returncode, 0, "hostPort must stop answering after DEL")

    def test_gc_removes_stale_attachments(self):
        lab = self.lab("gc")
        lab.start_agent()
        ips = [lab.add_pod(i, host_port=9000 + i)[1] for i in range(1, 4)]
        lab.cni("gc", f"c1-{lab.id}/eth0")
        pods = lab.nft("list", "set", "inet", "ruleplane", "pod-ipv4").stdout.decode()
        self.assertIn(ips[0], pods)
        self.assertNotIn(ips[1], pods)
        self.assertNotIn(ips[2], pods)
        hp = lab.nft("list", "map", "inet", "ruleplane", "hostport-v4").stdout.decode()
        self.assertIn("9001", hp)
        self.assertNotIn("9002", hp)

    def test_status_and_add_with_agent_stopped(self):
        lab = self.lab("st")
        lab.start_agent()
        self.assertEqual(lab.cni("status", check=False).returncode, 0)
        lab.stop_agent()
        r = lab.cni("status", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(json.loads(r.stdout)["code"], 50)
        ns = f"rpe-px-{lab.id}"[:30]
        sh("ip", "netns", "add", ns)
        lab.pods.append(ns)
        t0 = time.monotonic()
        r = lab.cni("add", f"cx-{lab.id}", f"/run/netns/{ns}", "eth0", check=False)
        elapsed = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(json.loads(r.stdout)["code"], 11, r.stdout)
        self.assertLess(elapsed, 4.0, "ADD with the agent down must fail within the deadline")

    def test_bad_input_codes(self):
        base = {"CNI_CONTAINERID": "x", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0",
                "CNI_PATH": "/usr/lib/cni"}
        rc, out = run_plugin(dict(base, CNI_COMMAND="ADD"), b"{not json")
        self.assertNotEqual(rc, 0)
        self.assertEqual(json.loads(out)["code"], 6)
        rc, out = run_plugin(base, b'{"cniVersion":"1.0.0","name":"x","type":"ruleplane"}')
        self.assertNotEqual(rc, 0)
        self.assertEqual(json.loads(out)["code"], 4)
        rc, out = run_plugin(dict(base, CNI_COMMAND="ADD"), b'{"cniVersion":"1.0.0","name":"x","type":"ruleplane"}')
        self.assertNotEqual(rc, 0)
        self.assertEqual(json.loads(out)["code"], 7, out)  # no prevResult

    def test_200_pods_concurrently_no_leaks(self):
        lab = self.lab("many", subnet="10.97.0.0/23")
        lab.start_agent()
        n = 200
        nss = [f"rpe-m{i}-{lab.id}"[:30] for i in range(n)]
        for ns in nss:
            sh("ip", "netns", "add", ns)
            lab.pods.append(ns)

        def add(i):
            r = lab.cni("add", f"m{i}-{lab.id}", f"/run/netns/{nss[i]}", "eth0",
                        port_mappings=[{"hostPort": 20000 + i, "containerPort": 80}], check=False)
            return i, r.returncode, r.stdout

        def delete(i):
            r = lab.cni("del", f"m{i}-{lab.id}", f"/run/netns/{nss[i]}", "eth0", check=False)
            return i, r.returncode, r.stdout

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as ex:
            results = list(ex.map(add, range(n)))
        failed = [(i, out) for i, rc, out in results if rc != 0]
        self.assertEqual(failed, [])
        ips = {i: json.loads(out)["ips"][0]["address"].split("/")[0] for i, _, out in results}
        self.assertEqual(len(set(ips.values())), n)
        listing = json.loads(sh(CTL, f"--socket={lab.sock}", "--json", "attachments").stdout)
        self.assertEqual(len(listing.get("attachments", [])), n)
        pods = lab.nft("list", "set", "inet", "ruleplane", "pod-ipv4").stdout.decode()
        for ip in ips.values():
            self.assertIn(ip, pods)
        self.assertEqual(sh(CTL, f"--socket={lab.sock}", "diff", check=False).returncode, 0)
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as ex:
            results = list(ex.map(delete, range(n)))
        self.assertEqual([(i, out) for i, rc, out in results if rc != 0], [])
        listing = json.loads(sh(CTL, f"--socket={lab.sock}", "--json", "attachments").stdout)
        self.assertEqual(listing.get("attachments", []), [])
        table = json.loads(lab.nft("-j", "list", "table", "inet", "ruleplane").stdout)
        leaked = [o for o in table["nftables"] if ("set" in o or "map" in o) and (o.get("set") or o.get("map")).get("elem")]
        self.assertEqual(leaked, [], "no element may outlive its attachment")


if __name__ == "__main__":
    unittest.main(verbosity=2)
