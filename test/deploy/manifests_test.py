#!/usr/bin/env python3
"""Validates deploy/ against the real binaries and the config contract.

Unit tier (no privileges): parses every manifest, checks the DaemonSet's
image, capabilities, mounts and probe commands against what the binaries
actually accept (`--helpfull`), the ConfigMap against
proto/ruleplane/v1/config.proto (every field present and documented, nothing
unknown), the conflist against the agent's rules, RBAC for read-only
nodes/pods, the Dockerfile's runtime packages against the binaries' NEEDED
libraries, and the systemd unit.

Environment: RULEPLANE_SOURCE_DIR, RULEPLANE_AGENT, RULEPLANECTL,
GRPC_REFLECT (paths of the built binaries).
"""
import json
import os
import re
import shutil
import subprocess
import unittest

import yaml

SRC = os.environ.get("RULEPLANE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(SRC, "deploy")
AGENT = os.environ.get("RULEPLANE_AGENT", "")
CTL = os.environ.get("RULEPLANECTL", "")
REFLECT = os.environ.get("GRPC_REFLECT", "")

# Where deploy/Dockerfile puts each binary (cmake --install, prefix /usr).
IMAGE_PATHS = {
    "/usr/sbin/ruleplane-agent": "agent",
    "/usr/bin/ruleplanectl": "ruleplanectl",
    "/usr/bin/grpc-reflect": "grpc-reflect",
    "/usr/lib/ruleplane/cni/ruleplane": "cni plugin",
}
ALLOWED_CAPS = {"NET_ADMIN", "BPF", "PERFMON"}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def load_all(path):
    return [d for d in yaml.safe_load_all(read(path)) if d]


def helpfull_flags(binary):
    """Flag names a binary accepts, from absl's --helpfull."""
    out = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    return set(re.findall(r"^\s+--(\w+)", text, re.MULTILINE))


def flag_name(arg):
    """--state-dir=/x -> state_dir (the agent accepts dashes or underscores)."""
    name = arg[2:].split("=", 1)[0]
    if name.startswith("no") and len(name) > 2:
        name = name  # checked as given; --noflag forms are not used in deploy/
    return name.replace("-", "_")


def project_version():
    m = re.search(r"project\(ruleplane VERSION ([0-9.]+)", read(os.path.join(SRC, "CMakeLists.txt")))
    return m.group(1)


def proto_messages(text):
    """{message: {field: type}} from a proto3 file (flat, no nested messages)."""
    messages = {}
    for m in re.finditer(r"^message (\w+) \{(.*?)^\}", text, re.MULTILINE | re.DOTALL):
        fields = {}
        for f in re.finditer(r"^\s+(?:optional |repeated )?([\w.]+) (\w+) = \d+;", m.group(2), re.MULTILINE):
            fields[f.group(2)] = f.group(1)
        messages[m.group(1)] = fields
    return messages


def config_fields():
    """Dotted paths of every AgentConfig field ("xtables_lock.path", ...)."""
    msgs = proto_messages(read(os.path.join(SRC, "proto", "ruleplane", "v1", "config.proto")))
    out = []

    def walk(name, prefix):
        for field, typ in msgs[name].items():
            if typ in msgs:
                walk(typ, prefix + field + ".")
            else:
                out.append(prefix + field)

    walk("AgentConfig", "")
    return out


def json_paths(obj, prefix=""):
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out += json_paths(v, prefix + k + ".")
        else:
            out.append(prefix + k)
    return out


class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = {}
        for name in sorted(os.listdir(os.path.join(DEPLOY, "kubernetes"))):
            if name.endswith(".yaml"):
                for d in load_all(os.path.join(DEPLOY, "kubernetes", name)):
                    cls.docs[(d["kind"], d["metadata"]["name"])] = d
        cls.ds = cls.docs[("DaemonSet", "ruleplane-agent")]
        cls.pod = cls.ds["spec"]["template"]["spec"]
        cls.agent = next(c for c in cls.pod["containers"] if c["name"] == "agent")
        cls.cm = cls.docs[("ConfigMap", "ruleplane-config")]
        cls.config = json.loads(cls.cm["data"]["config.json"])
        cls.volumes = {v["name"]: v for v in cls.pod["volumes"]}

    def mount_for(self, container, path):
        """The (volume, mount) under which `path` lives in `container`."""
        best = None
        for m in container.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best[1]["mountPath"]):
                    best = (self.volumes[m["name"]], m)
        self.assertIsNotNone(best, f"{path} is not inside any volume mount of {container['name']}")
        return best

    def test_every_manifest_parses_and_has_kind_and_name(self):
        self.assertIn(("ServiceAccount", "ruleplane-agent"), self.docs)
        self.assertIn(("ClusterRole", "ruleplane-agent"), self.docs)
        self.assertIn(("ClusterRoleBinding", "ruleplane-agent"), self.docs)

    def test_images_are_one_release_of_this_project(self):
        want = f"ghcr.io/ruleplane/ruleplane:{project_version()}"
        for c in self.pod["containers"] + self.pod["initContainers"]:
            self.assertEqual(c["image"], want, c["name"])
        dockerfile = read(os.path.join(DEPLOY, "Dockerfile"))
        self.assertIn(f'org.opencontainers.image.version="{project_version()}"', dockerfile)
        self.assertRegex(dockerfile, r"(?m)^FROM debian:12 AS build$")
        self.assertRegex(dockerfile, r"(?m)^FROM debian:12-slim$")

    def test_host_namespaces_and_capabilities(self):
        self.assertIs(self.pod["hostNetwork"], True)
        self.assertIs(self.pod["hostPID"], True, "the lock monitor needs the node's pid namespace")
        self.assertEqual(self.pod["dnsPolicy"], "ClusterFirstWithHostNet")
        for c in self.pod["containers"] + self.pod["initContainers"]:
            sc = c["securityContext"]
            self.assertFalse(sc.get("privileged", False), c["name"])
            self.assertIs(sc["allowPrivilegeEscalation"], False, c["name"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], c["name"])
            self.assertLessEqual(set(sc["capabilities"].get("add", [])), ALLOWED_CAPS, c["name"])
        self.assertIn("NET_ADMIN", self.agent["securityContext"]["capabilities"]["add"])
        self.assertEqual(self.pod["initContainers"][0]["securityContext"]["capabilities"].get("add", []), [])

    def test_mounts(self):
        want = {
            "/run/ruleplane": ("DirectoryOrCreate",),
            "/var/lib/ruleplane": ("DirectoryOrCreate",),
            "/run/xtables.lock": ("File", "FileOrCreate"),  # never "" (would become a directory)
            "/sys/fs/bpf": ("Directory",),
            "/opt/cni/bin": ("DirectoryOrCreate", "Directory"),
            "/etc/cni/net.d": ("DirectoryOrCreate", "Directory"),
        }
        host = {v["hostPath"]["path"]: v for v in self.pod["volumes"] if "hostPath" in v}
        for path, types in want.items():
            self.assertIn(path, host, f"hostPath {path} missing")
            self.assertIn(host[path]["hostPath"].get("type", ""), types, path)
        for c in self.pod["containers"] + self.pod["initContainers"]:
            for m in c["volumeMounts"]:
                self.assertIn(m["name"], self.volumes, f"{c['name']} mounts unknown volume {m['name']}")
        bpf = next(m for m in self.agent["volumeMounts"] if m["mountPath"] == "/sys/fs/bpf")
        self.assertNotEqual(bpf.get("mountPropagation"), "Bidirectional", "Bidirectional needs privileged")

    def test_agent_command_matches_its_real_flags_and_config_mount(self):
        self.assertEqual(self.agent["command"], ["/usr/sbin/ruleplane-agent"])
        self.assertIn("/usr/sbin/ruleplane-agent", IMAGE_PATHS)
        flags = helpfull_flags(AGENT)
        self.assertIn("config", flags)
        for arg in self.agent["args"]:
            self.assertTrue(arg.startswith("--"), arg)
            self.assertIn(flag_name(arg), flags, f"ruleplane-agent has no flag for {arg}")
        config_arg = next(a for a in self.agent["args"] if a.startswith("--config="))
        path = config_arg.split("=", 1)[1]
        vol, mount = self.mount_for(self.agent, path)
        self.assertEqual(vol["configMap"]["name"], "ruleplane-config")
        self.assertIn(os.path.relpath(path, mount["mountPath"]), self.cm["data"])

    def test_probes_use_ruleplanectl_health_with_real_flags(self):
        flags = helpfull_flags(CTL)
        usage = subprocess.run([CTL], capture_output=True, text=True, timeout=30)
        self.assertEqual(usage.returncode, 2, "usage error exit code")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            cmd = self.agent[probe]["exec"]["command"]
            self.assertEqual(cmd[0], "/usr/bin/ruleplanectl", probe)
            self.assertEqual(cmd[-1], "health", probe)
            self.assertIn("health", usage.stderr)
            for arg in cmd[1:-1]:
                self.assertIn(flag_name(arg), flags, f"{probe}: ruleplanectl has no flag for {arg}")
            socket = next(a.split("=", 1)[1] for a in cmd if a.startswith("--socket="))
            self.assertEqual(socket, self.config["socket"], f"{probe} checks another socket than the agent serves")
            vol, _ = self.mount_for(self.agent, socket)
            self.assertIn("hostPath", vol, "the socket must be on the node for the CNI plugin")

    def test_init_container_installs_the_plugin_the_image_carries(self):
        init = self.pod["initContainers"][0]
        script = init["command"][-1]
        self.assertIn("/usr/lib/ruleplane/cni/ruleplane", script)
        self.assertIn("/usr/lib/ruleplane/cni/ruleplane", IMAGE_PATHS)
        self.assertRegex(script, r"mv -f \S+\.tmp \S+/ruleplane$", "installed atomically with a rename")
        dest_dir = re.search(r"mv -f \S+ (\S+)/ruleplane$", script).group(1)
        vol, _ = self.mount_for(init, dest_dir + "/ruleplane")
        self.assertEqual(vol["hostPath"]["path"], "/opt/cni/bin")

    def test_config_has_every_field_documented_and_nothing_unknown(self):
        fields = config_fields()
        present = json_paths(self.config)
        self.assertEqual(sorted(set(present) - set(fields)), [], "config.json has fields config.proto does not")
        self.assertEqual(sorted(set(fields) - set(present)), [], "config.json misses fields of config.proto")
        doc = read(os.path.join(DEPLOY, "kubernetes", "configmap.yaml")).split("apiVersion:")[0]
        for f in fields:
            self.assertRegex(doc, rf"#\s+{re.escape(f)}:", f"configmap.yaml does not document {f}")

    def test_config_paths_are_mounted(self):
        c = self.config
        for path in (c["socket"], c["state_dir"], c["xtables_lock"]["path"], c["cni"]["conf_dir"] + "/x",
                     c["cni"]["conflist_file"]):
            self.mount_for(self.agent, path)
        vol, _ = self.mount_for(self.agent, c["xtables_lock"]["path"])
        self.assertEqual(vol["hostPath"]["path"], "/run/xtables.lock")
        vol, _ = self.mount_for(self.agent, c["cni"]["conf_dir"] + "/x")
        self.assertEqual(vol["hostPath"]["path"], "/etc/cni/net.d")

    def test_conflist_chains_ruleplane_after_a_main_plugin(self):
        example = json.loads(read(os.path.join(DEPLOY, "cni", "10-ruleplane.conflist")))
        in_cm = json.loads(self.cm["data"][os.path.basename(self.config["cni"]["conflist_file"])])
        self.assertEqual(example, in_cm, "deploy/cni and the ConfigMap disagree")
        for key in ("cniVersion", "name"):
            self.assertTrue(example.get(key), key)
        types = [p["type"] for p in example["plugins"]]
        self.assertIn("ruleplane", types)
        self.assertGreater(types.index("ruleplane"), 0, "ruleplane is chained: a main plugin comes first")
        ours = example["plugins"][types.index("ruleplane")]
        self.assertEqual(ours.get("socket", "/run/ruleplane/ruleplane.sock"), self.config["socket"])
        self.assertTrue(ours["capabilities"]["portMappings"])

    def test_rbac_is_read_only_nodes_and_pods(self):
        role = self.docs[("ClusterRole", "ruleplane-agent")]
        resources = set()
        for rule in role["rules"]:
            self.assertEqual(rule["apiGroups"], [""])
            self.assertLessEqual(set(rule["verbs"]), {"get", "list", "watch"})
            resources |= set(rule["resources"])
        self.assertEqual(resources, {"nodes", "pods"})
        binding = self.docs[("ClusterRoleBinding", "ruleplane-agent")]
        self.assertEqual(binding["roleRef"]["name"], "ruleplane-agent")
        subject = binding["subjects"][0]
        self.assertEqual(subject["name"], self.pod["serviceAccountName"])
        self.assertEqual(subject["namespace"], self.ds["metadata"]["namespace"])
        self.assertIn("resourceVersion=\"0\"", read(os.path.join(DEPLOY, "kubernetes", "rbac.yaml")))
        env = {e["name"]: e for e in self.agent.get("env", [])}
        self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")


class Image(unittest.TestCase):
    def test_runtime_packages_cover_the_binaries_shared_libraries(self):
        if shutil.which("dpkg") is None or shutil.which("readelf") is None:
            self.skipTest("needs dpkg and readelf (Debian)")
        dockerfile = read(os.path.join(DEPLOY, "Dockerfile"))
        runtime = dockerfile.split("FROM debian:12-slim", 1)[1]
        listed = set(re.findall(r"\b(lib[\w.+-]+|zlib1g)\b", runtime.split("&& rm -rf")[0]))
        base = {"libc6", "libgcc-s1"}  # in every Debian image
        for binary in (AGENT, CTL, REFLECT):
            needed = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True).stdout
            ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
            where = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.MULTILINE))
            libs = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", needed)
            # Sanitizer runtimes come with sanitizer builds (tools/test.sh), never with the image.
            libs = [l for l in libs if not re.match(r"lib(a|t|l|ub|hwa)san\.so", l)]
            candidates = {}
            for lib in libs:
                path = where.get(lib)
                self.assertIsNotNone(path, f"{binary}: {lib} not resolved")
                real = os.path.realpath(path)
                candidates[lib] = [path, real, path.replace("/usr/lib/", "/lib/"), real.replace("/usr/lib/", "/lib/")]
            # One dpkg query for everything (dpkg -S is slow per call).
            r = subprocess.run(["dpkg", "-S"] + sorted({c for cs in candidates.values() for c in cs}),
                               capture_output=True, text=True)
            owner = {}
            for line in r.stdout.splitlines():
                pkgs, _, path = line.partition(": ")
                owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
            for lib in libs:
                pkg = next((owner[c] for c in candidates[lib] if c in owner), None)
                self.assertIsNotNone(pkg, f"{binary}: no package owns {where[lib]}")
                self.assertTrue(pkg in listed or pkg in base,
                                f"{os.path.basename(binary)} needs {lib} from {pkg}, not installed by the Dockerfile")

    def test_every_installed_binary_is_copied_into_the_image(self):
        dockerfile = read(os.path.join(DEPLOY, "Dockerfile"))
        for path in IMAGE_PATHS:
            self.assertRegex(dockerfile, rf"(?m)^COPY --from=build \S+ {re.escape(path)}$", path)


class Systemd(unittest.TestCase):
    def setUp(self):
        self.unit = read(os.path.join(DEPLOY, "systemd", "ruleplane-agent.service"))

    def test_exec_start_flags_and_capabilities(self):
        m = re.search(r"(?m)^ExecStart=(\S+)(.*)$", self.unit)
        self.assertEqual(m.group(1), "/usr/sbin/ruleplane-agent")
        flags = helpfull_flags(AGENT)
        for arg in m.group(2).split():
            self.assertIn(flag_name(arg), flags, arg)
        for key in ("CapabilityBoundingSet", "AmbientCapabilities"):
            caps = set(re.search(rf"(?m)^{key}=(.*)$", self.unit).group(1).split())
            self.assertLessEqual({c.replace("CAP_", "") for c in caps}, ALLOWED_CAPS, key)
        self.assertIn("RuntimeDirectoryPreserve=yes", self.unit, "the socket dir must survive restarts")
        self.assertNotRegex(self.unit, r"(?m)^ExecStop.*--uninstall", "a stop must never uninstall")

    def test_systemd_analyze_verify(self):
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed")
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            os.path.join(DEPLOY, "systemd", "ruleplane-agent.service")],
                           capture_output=True, text=True, timeout=60)
        # Missing binaries on a build machine are fine; syntax errors are not.
        problems = [l for l in r.stderr.splitlines()
                    if l.strip() and "Command /usr/sbin/ruleplane-agent is not executable" not in l
                    and "No such file or directory" not in l and "Failed to prepare filename" not in l]
        self.assertEqual(problems, [], r.stderr)


if __name__ == "__main__":
    for var, path in (("RULEPLANE_AGENT", AGENT), ("RULEPLANECTL", CTL), ("GRPC_REFLECT", REFLECT)):
        if not path or not os.access(path, os.X_OK):
            raise SystemExit(f"{var} must name the built binary (got {path!r})")
    unittest.main(verbosity=2)
