"""What the e2e tests share: where the binaries are, a checked subprocess
runner, and a TestCase base that owns the labs a test creates.

Binaries come from the environment (ctest sets them): RULEPLANE_AGENT,
RULEPLANE_PLUGIN_DIR, RULEPLANECTL; defaults are the build/ dir.
"""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
AGENT = os.environ.get("RULEPLANE_AGENT", os.path.join(REPO, "build/agent/ruleplane-agent"))
PLUGIN_DIR = os.environ.get("RULEPLANE_PLUGIN_DIR", os.path.join(REPO, "build/cni"))
CTL = os.environ.get("RULEPLANECTL", os.path.join(REPO, "build/tools/ruleplanectl"))
CNIRUN = os.path.join(REPO, "tools/cnirun")


def sh(*args, check=True, ns=None, timeout=60, **kw):
    """Runs args (inside netns `ns` when given); raises AssertionError with
    both outputs when it fails and check is set."""
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}\nstdout: {p.stdout.decode()}\nstderr: {p.stderr.decode()}")
    return p


class LabTestCase(unittest.TestCase):
    """Skips without root, fails when a binary is missing, closes every lab
    registered with own() at the end (printing its agent log when the test
    failed and the lab has a log())."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("e2e needs root (network namespaces, nftables)")
        for f in (AGENT, CTL, os.path.join(PLUGIN_DIR, "ruleplane"), "/usr/lib/cni/bridge"):
            if not os.access(f, os.X_OK):
                self.fail(f"missing binary {f}")
        self.labs = []

    def own(self, lab):
        self.labs.append(lab)
        return lab

    def tearDown(self):
        failed = self._outcome and not all(e is None for _, e in getattr(self._outcome, "errors", []))
        for lab in self.labs:
            if failed and hasattr(lab, "log"):
                print(f"--- agent log of {getattr(lab, 'id', lab)} ---\n{lab.log()[-6000:]}", file=sys.stderr)
            lab.close()
