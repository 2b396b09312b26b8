#!/usr/bin/env python3
"""Regenerates docs/benchmarks.md and its SVG plots from fresh runs.

  sudo tools/bench/results.py [--runs 3] [--quick] [--build build-bench] [--no-build]
  tools/bench/results.py --from-raw docs/benchmarks/raw     # re-render only

Runs, in this order, each writing JSON into docs/benchmarks/raw/:
  - tools/bench/contention.py   --runs times (medians and spread across runs)
  - tools/bench/plugin_latency.py --runs times
  - tools/bench/plugin_under_churn.py and floor_under_churn.py --runs times
    (floor_under_churn with --trace when `perf` is installed)
  - tools/bench/startup.py      once (it repeats each start --startup-repeats times)
  - ruleplane-bench commit --json once (it repeats each size 3 times)
  - tools/bench/snat_bench.py   once (--rounds 7)
then renders the page from those files only: nothing in it is typed by hand.
--quick passes --quick to contention.py and uses smaller sizes elsewhere; the
page says which configuration produced it.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import contention  # noqa: E402
import svgplot  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BENCH = os.path.join(REPO, "tools", "bench")
CHAINS = ("reference", "ruleplane", "floor")
CHAIN_LABEL = {"reference": "bridge+host-local+portmap (iptables-legacy)",
               "ruleplane": "bridge+host-local+ruleplane", "floor": "bridge+host-local (floor)"}
PACKAGES = ("iptables", "nftables", "containernetworking-plugins", "libnftnl11", "libmnl0", "libgrpc++1.51",
            "libprotobuf32", "libabsl20220623", "python3", "g++")


def rel(path):
    """A command word as the page shows it: repo paths relative, python3."""
    if path == sys.executable:
        return "python3"
    if isinstance(path, str) and path.startswith(REPO + "/"):
        return path[len(REPO) + 1:]
    return path


def sh(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", "")


def machine():
    m = {"kernel": platform.release(), "cpus": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                m["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        m["mem_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    try:
        with open("/etc/debian_version") as f:
            m["debian"] = f.read().strip()
    except OSError:
        m["debian"] = "?"
    vers = {}
    for p in PACKAGES:
        r = sh(["dpkg-query", "-W", "-f=${Version}", p])
        vers[p] = r.stdout.strip() if r.returncode == 0 else "not installed"
    m["packages"] = vers
    m["loadavg"] = open("/proc/loadavg").read().split()[:3]
    m["virt"] = sh(["systemd-detect-virt"]).stdout.strip() or "?"
    return m


def git_state(build):
    """Which source the binaries come from. A build dir configured from a
    `git archive` export carries the commit in <source>/.commit (clean);
    otherwise it is this working tree: HEAD plus whatever is uncommitted."""
    try:
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            src = next(l.split("=", 1)[1].strip() for l in f if l.startswith("CMAKE_HOME_DIRECTORY"))
        with open(os.path.join(src, ".commit")) as f:
            return {"head": f.read().strip(), "dirty": [], "source": "clean export (git archive)"}
    except (OSError, StopIteration):
        pass
    head = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = [l[3:] for l in sh(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"]).stdout.splitlines()]
    return {"head": head, "dirty": dirty, "source": "working tree"}


# ====================================================================== runs

def run_all(a, raw):
    os.makedirs(raw, exist_ok=True)
    only = set(a.only.split(",")) if a.only else {"contention", "pluginchurn", "floorchurn", "plugin", "idlegap",
                                                  "startup", "commit", "snat"}
    prefixes = {"contention": "contention-", "plugin": "plugin-", "startup": "startup", "commit": "commit",
                "snat": "snat", "pluginchurn": "pluginchurn", "floorchurn": "floorchurn", "idlegap": "idlegap"}
    for f in glob.glob(os.path.join(raw, "*.json*")):
        if any(os.path.basename(f).startswith(prefixes[o]) for o in only):
            os.unlink(f)
    meta = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine_before": machine(), "commands": [], "quick": a.quick, "runs": a.runs,
            "invocation": "sudo tools/bench/results.py " + " ".join(shlex.quote(rel(x)) for x in sys.argv[1:])}
    old = load(raw, "meta.json")
    if a.only and old:
        # A partial rerun keeps what the other steps recorded.
        meta["commands"] = [c for c in old[0].get("commands", []) if not any(o in c for o in only)]
        meta["durations_s"] = {k: v for k, v in old[0].get("durations_s", {}).items()
                               if not any(k.startswith(prefixes[o]) for o in only)}
        meta["partial"] = sorted(set(old[0].get("partial", [])) | only)
        prev = old[0].get("reruns") or ([old[0]["invocation"]] if old[0].get("partial") else [])
        meta["reruns"] = prev + [meta["invocation"]]
    if a.clean_build:
        # Build what is committed, not whatever else is in the working tree:
        # export HEAD, configure a build dir of its own, record the commit.
        head = sh(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).stdout.strip()
        src, obj = os.path.join(a.clean_build_abs, "src"), os.path.join(a.clean_build_abs, "obj")
        subprocess.run(["rm", "-rf", src], check=True)
        os.makedirs(src)
        subprocess.run(f"git -C {shlex.quote(REPO)} archive {head} | tar -x -C {shlex.quote(src)}", shell=True,
                       check=True)
        with open(os.path.join(src, ".commit"), "w") as f:
            f.write(head + "\n")
        cfg = ["cmake", "-S", src, "-B", obj, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
               "-DRULEPLANE_BUILD_TESTS=OFF"]
        if subprocess.run(cfg, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit("results: cmake configure failed")
        meta["commands"].append(f"git archive {head} | tar -x -C {rel(src)}")
        meta["commands"].append(" ".join(rel(c) for c in cfg))
        a.build_abs = obj
    if not a.no_build:
        cmd = ["cmake", "--build", a.build_abs, "-j2", "--target", "ruleplane-agent", "ruleplane", "ruleplanectl",
               "ruleplane-bench", "ruleplane-agent-bench", "connrate", "ruleplane-bpf-bench"]
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise SystemExit("results: build failed")
        meta["commands"].append(" ".join(rel(c) for c in cmd))
    meta["git"] = git_state(a.build_abs)
    if a.only and old:
        # The page keeps the full run's commit; the re-run sections name theirs.
        meta["git"] = old[0].get("git", meta["git"])
        meta["section_git"] = dict(old[0].get("section_git", {}))
        for o in only:
            meta["section_git"][o] = git_state(a.build_abs)

    def run(name, cmd, out):
        print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with open(out + ".log", "w") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        meta["commands"].append(" ".join(shlex.quote(rel(c)) for c in cmd).replace(rel(raw) + "/", "RAW/"))
        meta.setdefault("durations_s", {})[os.path.basename(out)] = round(time.monotonic() - t0, 1)
        if r.returncode != 0:
            print(f"results: {name} exited {r.returncode} (see {out}.log)", file=sys.stderr)
        return r.returncode

    def run_stdout(name, cmd, out):
        """A tool that prints its JSON on stdout: the file is kept only if it
        exits 0 (a half-written one would render as data)."""
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with open(out + ".tmp", "w") as f, open(out + ".log", "w") as log:
            r = subprocess.run(cmd, stdout=f, stderr=log)
        meta.setdefault("durations_s", {})[os.path.basename(out)] = round(time.monotonic() - t0, 1)
        meta["commands"].append(" ".join(rel(c) for c in cmd) + f" > RAW/{os.path.basename(out)}")
        if r.returncode == 0:
            os.replace(out + ".tmp", out)
        else:
            print(f"results: {name} exited {r.returncode} (see {out}.log)", file=sys.stderr)

    py = sys.executable
    b = ["--build", a.build_abs]
    for i in range(1, a.runs + 1):
        if "contention" in only:
            p = os.path.join(raw, f"contention-{i}.json")
            run("contention", [py, os.path.join(BENCH, "contention.py")] + b + (["--quick"] if a.quick else []) +
                ["--json", p], p)
        if "plugin" in only:
            p = os.path.join(raw, f"plugin-{i}.json")
            run("plugin_latency", [py, os.path.join(BENCH, "plugin_latency.py")] + b +
                (["--pods", "50"] if a.quick else []) + ["--json", p], p)
    if "pluginchurn" in only:
        for i in range(1, a.runs + 1):
            p = os.path.join(raw, f"pluginchurn-{i}.json")
            run("plugin_under_churn", [py, os.path.join(BENCH, "plugin_under_churn.py")] + b +
                ["--seconds", "10" if a.quick else "25", "--json", p], p)
    if "floorchurn" in only:
        # --trace when perf is there (linux-perf; not installed by tools/setup.sh): the page then also says
        # where the bridge plugin waited.
        trace = ["--trace"] if shutil.which("perf") else []
        for i in range(1, a.runs + 1):
            p = os.path.join(raw, f"floorchurn-{i}.json")
            run("floor_under_churn", [py, os.path.join(BENCH, "floor_under_churn.py"), "--adds",
                                      "40" if a.quick else "100"] + trace + ["--json", p], p)
    if "idlegap" in only:
        p = os.path.join(raw, "idlegap.json")
        run("idle_gap", [py, os.path.join(BENCH, "idle_gap.py")] + b +
            ["--repeats", "3" if a.quick else "6", "--json", p], p)
    if "startup" in only:
        p = os.path.join(raw, "startup.json")
        sizes = "0,1000,10000" if a.quick else "0,1000,10000,100000"
        run("startup", [py, os.path.join(BENCH, "startup.py")] + b +
            ["--sizes", sizes, "--repeats", str(a.startup_repeats), "--json", p], p)
    if "commit" in only:
        p = os.path.join(raw, "commit.json")
        cmd = [os.path.join(a.build_abs, "tools", "ruleplane-bench"), "commit", "--json"]
        if a.quick:
            cmd += ["--sizes=1000,10000", "--concurrency=1,16,128", "--max-per-producer=1000",
                    "--exec-baseline-n=200", "--latency-set=10000"]
        run_stdout("ruleplane-bench", cmd, p)
    if "snat" in only:
        p = os.path.join(raw, "snat.json")
        # With the -keepport variants: the same conntrack NAT without the
        # random flags, so the page weighs the fully-random default.
        run("snat_bench", [py, os.path.join(BENCH, "snat_bench.py")] + b +
            ["--rounds", "3" if a.quick else "7", "--json", p,
             "--variants", "bpf,nftables,iptables,nftables-keepport,iptables-keepport"], p)
        # The programs' own cost per packet, path by path (BPF_PROG_TEST_RUN).
        prog = os.path.join(a.build_abs, "tools", "ruleplane-bpf-bench")
        p = os.path.join(raw, "snatprog.json")
        run_stdout("ruleplane-bpf-bench", [prog, "--json"] + (["--rounds", "3"] if a.quick else []), p)
    meta["machine_after"] = machine()
    meta["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    benchlib.write_json(os.path.join(raw, "meta.json"), meta)


# ================================================================ aggregate

def load(raw, pattern):
    out = []
    for f in sorted(glob.glob(os.path.join(raw, pattern))):
        with open(f) as fh:
            out.append(json.load(fh))
    return out


def med(vals):
    v = sorted(x for x in vals if x is not None)
    if not v:
        return None
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2


def spread(vals, fmt=lambda x: f"{x:.1f}", censored=False):
    v = [x for x in vals if x is not None]
    if not v:
        return "-"
    pre = ">=" if censored else ""
    if len(v) == 1:
        return pre + fmt(v[0])
    return f"{pre}{fmt(med(v))} [{fmt(min(v))}–{fmt(max(v))}]"


def ms(x):
    return benchlib.fmt_ms(x)


def ms_unit(x):
    s = benchlib.fmt_ms(x)
    return s if s.endswith("s") else s + " ms"


def pct_of(runs_stats, key):
    """runs_stats: list of summarize() dicts; -> (values ms, any censored)"""
    vals, cens = [], False
    for s in runs_stats:
        if s.get("n", 0) and key in s:
            vals.append(s[key]["ms"])
            cens |= s[key]["censored"]
    return vals, cens


def contention_section(runs, svgdir, lines, svgs):
    if not runs:
        lines.append("_Contention benchmark: no data in this run._\n")
        return
    sizes = sorted({r["n"] for c in runs for r in c["runs"]})
    cfg = runs[0]["config"]
    if cfg.get("cpus_churn"):
        lines.append(f"CPU placement (`--pin auto`): the churn restores run on CPU {cfg['cpus_churn']}, the agent, "
                     f"the chains' plugins and the driver on CPU {cfg['cpus_pods']}, as on a node with many CPUs where "
                     f"kube-proxy's restore does not take the CPU the CNI runs on (the driver's /proc/locks sampler runs on the churn CPU too). The xtables lock is still one file "
                     f"for the whole machine, so the contention this benchmark is about is untouched; what pinning "
                     f"removes is the 2-CPU VM's scheduler sharing one CPU between the restore and the ADD under "
                     f"test. `--pin off` measures that too.\n")
    else:
        lines.append("CPU placement: not pinned (`--pin off`); on 2 CPUs the restore loop and the ADD under test "
                     "share CPUs, so every chain, the floor too, slows down under churn for CPU reasons alone.\n")
    lines.append(f"Configuration: N = {', '.join(map(str, sizes))} Services x 3 endpoints; "
                 f"{cfg['seq_pods']} sequential + {cfg['conc_pods']} concurrent ADDs per chain per phase; "
                 f"ADD bound {cfg['add_bound']:g} s, sequential budget {cfg['seq_budget']:g} s per chain and phase; "
                 f"{len(runs)} run(s). Cells: median over runs [min–max over runs] of each run's percentile; "
                 f"`>=` marks a figure that is (or whose spread includes) a censored sample, i.e. a lower bound.\n")
    # headline
    lines.append("### Headline: p99 under churn ÷ p99 idle\n")
    lines.append("| N | chain | sequential | 20-way concurrent | sequential ÷ floor's | concurrent ÷ floor's |"
                 if cfg["conc_pods"] == 20 else
                 f"| N | chain | sequential | {cfg['conc_pods']}-way concurrent | sequential ÷ floor's | concurrent ÷ floor's |")
    lines.append("|---|---|---|---|---|---|")
    for n in sizes:
        for c in CHAINS:
            hs = [h for r in runs for h in r["headline"] if h["n"] == n and h["chain"] == c]
            cens_s = any(h["seq_txt"].startswith(">=") for h in hs)
            cens_c = any(h["conc_txt"].startswith(">=") for h in hs)
            fx = lambda x: f"{x:.2f}x" if x < 10 else f"{x:.0f}x"
            lines.append(f"| {n} | {CHAIN_LABEL[c]} | {spread([h['seq'] for h in hs], fx, cens_s)} | "
                         f"{spread([h['conc'] for h in hs], fx, cens_c)} | "
                         f"{spread([h['seq_vs_floor'] for h in hs], fx) if c != 'floor' else '1'} | "
                         f"{spread([h['conc_vs_floor'] for h in hs], fx) if c != 'floor' else '1'} |")
    nmax = max(sizes)
    rp = [h for r in runs for h in r["headline"] if h["n"] == nmax and h["chain"] == "ruleplane"]
    seq_m = med([h["seq"] for h in rp if h["seq"] is not None]) if rp else None
    conc_m = med([h["conc"] for h in rp if h["conc"] is not None]) if rp else None
    ok = seq_m is not None and conc_m is not None and seq_m <= 1.1 and conc_m <= 1.1
    every = all(h["seq"] is not None and h["seq"] <= 1.1 and h["conc"] is not None and h["conc"] <= 1.1 for h in rp)
    lines.append(f"\nTarget (issue 6): ruleplane ≤ 1.1 at N = {nmax}: **{'PASS' if ok else 'MISS'}** (median over "
                 f"runs: sequential {seq_m:.2f}x, concurrent {conc_m:.2f}x; every single run at or under 1.1: "
                 f"{'yes' if every else 'no'}).\n" if rp else f"\nTarget (issue 6): no ruleplane data at N = {nmax}.\n")
    lines.append("The last two columns divide each chain's ratio by the floor chain's ratio in the same run. The floor "
                 "chain never touches xtables, so its slowdown under churn is what the restores cost everybody on "
                 "the machine (with pinning: the other vCPU's load, which may be a hyperthread sibling or share "
                 "caches, and kernel work the restores cause; without: the CPU itself); what is left after "
                 "dividing is the part a chain adds on top, i.e. the xtables lock and anything of its own.\n")

    for n in sizes:
        per = [next(r for r in c["runs"] if r["n"] == n) for c in runs]
        lines.append(f"### N = {n} Services ({per[0]['rules']} iptables rules, {per[0]['ruleset_mb']:.1f} MB "
                     f"restore file)\n")
        rs = [p["phases"]["churn"].get("restores", {}) for p in per]
        lk = [p["phases"]["churn"]["locks_proc"] for p in per]
        lines.append(f"Churn: {sum(r.get('count', 0) for r in rs)} restores in {len(per)} run(s), failed "
                     f"{sum(r.get('failed', 0) for r in rs)}; one restore takes "
                     f"{spread([r.get('p50_s') for r in rs], lambda x: f'{x:.2f} s')} (p50); initial sync "
                     f"{spread([p['initial_sync_s'] for p in per], lambda x: f'{x:.2f} s')}.\n")
        lines.append("| chain | load | mode | ADDs (censored, errors, not run) | p50 | p99 | max | last plugin | "
                     "last plugin p50 | last plugin p99 |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for c in CHAINS:
            for load_ in ("idle", "churn"):
                for mode in ("seq", "conc"):
                    ds = [p["phases"][load_]["chains"][c][mode] for p in per]
                    ch = [d["chain"] for d in ds]
                    la = [d["last"] for d in ds]
                    nn = sum(s.get("n", 0) for s in ch)
                    cz = sum(s.get("censored", 0) for s in ch)
                    er = sum(len(d["errors"]) for d in ds)
                    nr = sum(d["not_run"] for d in ds)
                    cells = []
                    for st, key in ((ch, "p50"), (ch, "p99"), (ch, "max"), (la, "p50"), (la, "p99")):
                        v, cen = pct_of(st, key)
                        cells.append(spread(v, ms, cen))
                    last = {"reference": "portmap", "ruleplane": "ruleplane", "floor": "bridge"}[c]
                    lines.append(f"| {c} | {load_} | {'sequential' if mode == 'seq' else 'concurrent'} | "
                                 f"{nn} ({cz}, {er}, {nr}) | {cells[0]} | {cells[1]} | {cells[2]} | {last} | "
                                 f"{cells[3]} | {cells[4]} |")
        lines.append("\nTimes in ms unless marked s. Chain = first plugin spawned → last plugin exited. With at most "
                     "100 samples per run, a run's p99 is its maximum (nearest rank).\n")
        # lock holders
        lines.append(f"xtables lock during the churn phase (sampled from `/proc/locks` every "
                     f"{1000 * lk[0].get('period_s', 0.005):.1f} ms, read-only; holds shorter than that can be "
                     f"missed): held {spread([100 * x['held_fraction'] for x in lk], lambda x: f'{x:.0f}%')} of the "
                     f"time, someone waiting {spread([100 * x.get('waiting_fraction', 0) for x in lk], lambda x: f'{x:.0f}%')}"
                     f", at most {max(x.get('max_waiters', 0) for x in lk)} waiters.\n")
        lines.append("| process (argv[0], parent), all runs | holds seen | time holding | longest hold seen | "
                     "time waiting |")
        lines.append("|---|---|---|---|---|")
        agg = {}
        for x in lk:
            for prog, d in x["by_program"].items():
                a = agg.setdefault(prog, [0, 0.0, 0.0, 0.0])
                a[0] += d["holds"]
                a[1] += d["held_s"]
                a[2] = max(a[2], d["max_hold_s"])
                a[3] += d.get("waited_s", 0.0)
        for prog, (h, t, mx, wt) in sorted(agg.items(), key=lambda kv: -(kv[1][1] + kv[1][3]))[:8]:
            lines.append(f"| `{prog}` | {h} | ~{t:.2f} s | {mx * 1000:.0f} ms | ~{wt:.1f} s |")
        lines.append("\nTimes holding/waiting are samples × sampling period (estimates); `(exited)` is a process "
                     "that was gone before it could be named. The portmap and bridge rows are the plugins' "
                     "`iptables -w` calls: they hold the lock for milliseconds and wait for it for seconds.\n")
        la = [p["phases"]["churn"].get("locks_agent", {}) for p in per]
        if any(x.get("available") for x in la):
            lines.append("What the agent's own xtables lock monitor saw during the churn phase "
                         "(`ruleplanectl --json locks`, i.e. Diagnostics.GetLockStats; its totals at the end of "
                         "churn minus those at the end of idle; all runs):\n")
            lines.append("| holder (agent's name) | holds | total held | longest | latest example |")
            lines.append("|---|---|---|---|---|")
            agg = {}
            for p in per:
                for h in contention.agent_lock_delta(p):
                    a = agg.setdefault(h["holder"], [0, 0.0, 0.0, ""])
                    a[0] += h["holds"]
                    a[1] += h["total_seconds"]
                    a[2] = max(a[2], h["longest_seconds"])
                    a[3] = h["example"]
            for name, (h, t, mx, ex) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:8]:
                lines.append(f"| `{name}` | {h} | {t:.2f} s | {mx * 1000:.0f} ms | {ex[:90]} |")
            d = next(x["data"] for x in reversed(la) if x.get("available"))
            lines.append(f"\nMonitor state at the end of the last run's churn phase: lock file `{d.get('path')}` "
                         f"({d.get('file_state')}), {d.get('holds')} holds since agent start, {d.get('long_holds', 0)} "
                         f"of them ≥ {d.get('long_hold_threshold_seconds', 0):g} s, longest "
                         f"{float(d.get('longest_hold_seconds', 0)):.2f} s, {d.get('opens', 0)} opens of the lock "
                         f"file; backends: {d.get('backends', {}).get('summary', '?')}.\n")
        else:
            lines.append("\nThe agent's xtables lock monitor (`ruleplanectl locks`) was not in this build, so the "
                         "holders above come from the benchmark's own `/proc/locks` sampler.\n")
        lm = [p["phases"]["churn"].get("lock_metrics", []) for p in per]
        if any(lm):
            lines.append("The agent's `ruleplane_xtables_lock_*` metrics at the end of the churn phase (last run; "
                         "histogram buckets left out):\n")
            last = [l for l in next(x for x in reversed(lm) if x) if "_bucket{" not in l]
            lines.append("```\n" + "\n".join(last[:30]) + "\n```\n")
        # plot
        rows = []
        for ci, c in enumerate(CHAINS):
            for load_ in ("idle", "churn"):
                for mode in ("seq", "conc"):
                    samples = []
                    for p in per:
                        s = p["phases"][load_]["chains"][c][mode]["chain"]
                        samples += list(zip(s.get("ms", []), s.get("censored_flags", [])))
                    rows.append({"label": f"{c} · {load_} · {'seq' if mode == 'seq' else 'conc'}",
                                 "samples": samples, "color": ci, "group": c})
        name = f"contention-n{n}.svg"
        svgs[name] = svgplot.strip_plot(f"CNI ADD latency, N = {n} Services (all runs pooled)", rows,
                                        note=f"{len(per)} run(s)")
        lines.append(f"\n![ADD latency distributions, N={n}](benchmarks/{name})\n")


def pluginchurn_section(pcs, lines):
    if not pcs:
        return
    pc = pcs[0]
    lines.append("### The ruleplane path alone under churn\n")
    lines.append(f"`tools/bench/plugin_under_churn.py`: the `ruleplane` plugin ADD exec'd back to back against one "
                 f"agent ({pc['seconds']:.0f} s idle, then {pc['seconds']:.0f} s while N = {pc['services']} Services "
                 f"({pc['rules']} rules) are restored back to back, same CPU placement as above), {len(pcs)} run(s). "
                 f"No bridge, no pod netns: this is what ruleplane itself adds to a pod's setup, and whether churn "
                 f"reaches it. Median over runs [min–max].\n")
    lines.append("| load | ADDs per run | p50 | p99 | max | over 10 ms | over 20 ms |")
    lines.append("|---|---|---|---|---|---|---|")
    f2 = lambda x: f"{x:.2f}"
    f0 = lambda x: f"{x:.0f}"
    for name in ("idle", "churn"):
        ds = [p[name] for p in pcs]
        lines.append(f"| {name} | {spread([d['adds'] for d in ds], f0)} | {spread([d['p50_ms'] for d in ds], f2)} ms | "
                     f"{spread([d['p99_ms'] for d in ds], f2)} ms | {spread([d['max_ms'] for d in ds], f2)} ms | "
                     f"{spread([d['over_10ms'] for d in ds], f0)} | {spread([d['over_20ms'] for d in ds], f0)} |")
    lines.append(f"\np99 under churn ÷ p99 idle: **{spread([p['p99_ratio'] for p in pcs], lambda x: f'{x:.2f}x')}**. "
                 f"Restores per run {spread([p['restores'] for p in pcs], f0)} (p50 "
                 f"{spread([p['restore_p50_s'] for p in pcs], lambda x: f'{x:.2f} s')} each). The agent's slowest "
                 f"commit: {spread([p['agent_slowest_commit_ms'] for p in pcs], f2)} ms; longest queue wait "
                 f"{spread([p['agent_longest_queue_wait_ms'] for p in pcs], f2)} ms.\n")


def floorchurn_section(fcs, lines):
    if not fcs:
        return
    fc = fcs[0]
    f1 = lambda x: f"{x:.1f}"
    lines.append("### The floor's own step under churn\n")
    lines.append(f"`tools/bench/floor_under_churn.py`: `/usr/lib/cni/bridge` ADD (host-local IPAM) into a fresh pod "
                 f"netns, {fc['idle']['adds']} times idle, then {fc['churn']['adds']} times while N = {fc['services']} "
                 f"Services ({fc['rules']} rules) are restored back to back, same CPU placement as above; the driver "
                 f"sits in the node netns (no per-ADD `ip netns exec`). {len(fcs)} run(s), median [min–max]. bridge "
                 f"never touches xtables: whatever grows here is the churn reaching every pod setup through the "
                 f"kernel of this machine, which no CNI plugin can avoid.\n")
    traced = all("runqueue_delay_ms" in f["churn"] for f in fcs)
    lines.append("| load | p50 | p90 | p99 | max | bridge+host-local CPU p50 |"
                 + (" run-queue delay per ADD | blocked (D) per ADD |" if traced else ""))
    lines.append("|---|---|---|---|---|---|" + ("---|---|" if traced else ""))
    for name in ("idle", "churn"):
        ds = [f[name] for f in fcs]
        row = (f"| {name} | {spread([d['p50_ms'] for d in ds], f1)} ms | {spread([d['p90_ms'] for d in ds], f1)} ms | "
               f"{spread([d['p99_ms'] for d in ds], f1)} ms | {spread([d['max_ms'] for d in ds], f1)} ms | "
               f"{spread([d['cpu_p50_ms'] for d in ds], f1)} ms |")
        if traced:
            row += (f" {spread([d['runqueue_delay_ms'] / d['adds'] for d in ds], f1)} ms | "
                    f"{spread([sum(d['d_state_ms'].values()) / d['adds'] for d in ds], f1)} ms |")
        lines.append(row)
    lines.append(f"\np99 under churn ÷ p99 idle: **{spread([f['p99_ratio'] for f in fcs], lambda x: f'{x:.2f}x')}**.")
    if traced:
        top = fc["churn"]["d_state_ms"]
        if top:
            frames, ms = max(top.items(), key=lambda kv: kv[1])
            idle_ms = fc["idle"]["d_state_ms"].get(frames, 0) / fc["idle"]["adds"]
            lines[-1] += (f" Under churn (run 1) the plugins' longest uninterruptible waits were in `{frames}` "
                          f"({ms / fc['churn']['adds']:.1f} ms per ADD; {idle_ms:.1f} ms idle), from "
                          f"`perf sched timehist`.")
    lines.append("")


def idlegap_section(ig, lines):
    if not ig:
        lines.append("Not in this run (`--only` left out `idlegap`).\n")
        return
    ig = ig[0]
    res = ig["results"]
    lines.append("`tools/bench/idle_gap.py`: a `grpc.health.v1` Check on a fresh connection (as each plugin exec "
                 "opens one) after the agent was idle for the gap, timed from channel creation to the answer "
                 "(`ruleplane-agent-bench gaps`). The agent as shipped, and the same binary with "
                 "`--grpc_poller_keepalive_ms=0` (the baseline, same run). gRPC 1.51's callback API runs every "
                 "handler on a few threads that sleep 100 ms without polling after 1 s without events; the agent "
                 "keeps one of them awake with an in-process ping every 400 ms (`agent/api/poller_keeper.h`). "
                 f"{ig['args']['repeats']} calls per gap; ms, median [min–max].\n")
    lines.append("| idle gap | agent as shipped | keeper off |")
    lines.append("|---|---|---|")
    for i, g in enumerate(res["keeper"]["gaps_s"]):
        lines.append(f"| {g:.2f} s | {spread(res['keeper']['ms'][i], lambda x: f'{x:.1f}')} | "
                     f"{spread(res['off']['ms'][i], lambda x: f'{x:.1f}')} |")
    lines.append("")
    lines.append(f"Calls slower than {ig['args']['slow_ms']:.0f} ms: as shipped {ig['slow']['keeper']} of "
                 f"{ig['calls']}, keeper off {ig['slow']['off']} of {ig['calls']}.\n")


def plugin_section(runs, tmpfs, lines, svgs):
    if not runs:
        lines.append("_Plugin latency: no data in this run._\n")
        return
    cfg = runs[0]["config"]
    lines.append(f"{cfg['pods']} ADDs per mode per run, {len(runs)} run(s); each iteration execs the plugin ADD, "
                 f"`host-local` VERSION and `/bin/true` back to back (order rotated) so all three see the same "
                 f"machine. Every ADD is a new attachment with one hostPort: one gRPC round trip, one nftables "
                 f"commit, one journal write (fdatasync only with `journal_fsync`, off by default). Median over runs "
                 f"[min–max].\n")
    lines.append("| mode | process | p50 | p99 | max | CPU per exec (p50) |")
    lines.append("|---|---|---|---|---|---|")
    for mode in ("seq", "conc"):
        label = "sequential" if mode == "seq" else f"{runs[0][mode]['concurrency']}-way"
        for k, name in (("plugin", "ruleplane ADD"), ("floor", "host-local VERSION"), ("true", "/bin/true")):
            cells = []
            for key in ("p50", "p99", "max"):
                v, c = pct_of([r[mode][k] for r in runs], key)
                cells.append(spread(v, ms, c))
            cpu = spread([r[mode].get("cpu_ms_p50", {}).get(k) for r in runs], lambda x: f"{x:.2f}")
            lines.append(f"| {label} | {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cpu} |")
    agent = [r[m].get("agent_cpu_ms_per_add") for r in runs for m in ("seq", "conc")]
    lines.append(f"\nWall times in ms. CPU = the process's user + system time (wait4), which does not depend on "
                 f"how busy the machine is; the agent's own CPU per ADD (from /proc/<pid>/stat over each mode) was "
                 f"{spread(agent, lambda x: f'{x:.2f} ms')}.\n")
    for mode in ("seq", "conc"):
        label = "sequential" if mode == "seq" else f"{runs[0][mode]['concurrency']}-way"
        rat = [r[mode]["ratio_p50"] for r in runs]
        ok = all(x <= 1.5 for x in rat)
        lines.append(f"- {label}: ruleplane ADD p50 ÷ host-local VERSION p50 = "
                     f"{spread(rat, lambda x: f'{x:.2f}x')} — target ≤ 1.5x: **{'PASS' if ok else 'MISS'}**")
    if tmpfs:
        t = tmpfs[0]
        lines.append(f"- a run with the agent's state dir on tmpfs (diagnostic only): sequential "
                     f"ADD p50 {ms_unit(t['seq']['plugin']['p50']['ms'])} vs floor "
                     f"{ms_unit(t['seq']['floor']['p50']['ms'])} ({t['seq']['ratio_p50']:.2f}x); "
                     f"{t['conc']['concurrency']}-way {ms_unit(t['conc']['plugin']['p50']['ms'])} vs "
                     f"{ms_unit(t['conc']['floor']['p50']['ms'])} ({t['conc']['ratio_p50']:.2f}x)")
    errs = sum(len(r["seq"]["errors"]) + len(r["conc"]["errors"]) for r in runs)
    att = all(r["attachments"] == r["expected_attachments"] for r in runs)
    lines.append(f"- errors: {errs}; the agent's attachment count matched every ADD: {'yes' if att else 'NO'}\n")
    rows = []
    for mi, mode in enumerate(("seq", "conc")):
        for k, name in (("plugin", "ruleplane ADD"), ("floor", "host-local VERSION"), ("true", "/bin/true")):
            samples = []
            for r in runs:
                samples += list(zip(r[mode][k]["ms"], r[mode][k]["censored_flags"]))
            how = "seq" if mode == "seq" else f"{runs[0][mode]['concurrency']}-way"
            rows.append({"label": f"{name} · {how}", "samples": samples, "color": ("plugin", "floor", "true").index(k), "group": mode})
    svgs["plugin-latency.svg"] = svgplot.strip_plot("Plugin exec → exit (all runs pooled)", rows,
                                                    note=f"{len(runs)} run(s)")
    lines.append("![plugin latency](benchmarks/plugin-latency.svg)\n")


def commit_section(c, lines, svgs):
    if not c:
        lines.append("_Commit benchmark: no data in this run._\n")
        return
    prod = c.get("producers", "threads")
    how = ("C producers, each a chain of completion callbacks with one mutation in flight (each completion "
           "submits the next, as the agent's gRPC handlers use the engine)" if prod == "async" else
           "C producer threads, one mutation in flight each")
    sync = c.get("journal_fsync")
    jour = ("journal written before every ack and fdatasync'ed per commit (`--journal_fsync`)" if sync else
            "journal written (write(2)) before every ack, no fdatasync: the agent's default, see "
            "`journal_fsync` in BUILD.md" if sync is not None else "journal fdatasync'ed per commit")
    lines.append(f"`ruleplane-bench commit --json` (engine: {how}; {jour}; 1 mutation = 1 set element; `nft -f`: "
                 f"the same N elements with the same comments as one file, exec + parse + commit; the kernel's "
                 f"element count is checked after every run). Median of {c['repeats']} repeats [min–max], state dir "
                 f"on `{c.get('state_root', '?')}`.\n")
    lines.append("| N | C | wall (ms, or s) | mutations/s | commits | mean batch | ÷ nft -f wall |")
    lines.append("|---|---|---|---|---|---|---|")
    nft = {r["n"]: r for r in c["nft_file"]}
    for r in c["engine"]:
        lines.append(f"| {r['n']} | {r['c']} | {spread(r['wall_ms_runs'], ms)} | {r['mutations_per_s']:.0f} | "
                     f"{r['commits']:.0f} | {r['mean_batch']:.1f} | {r['vs_nft_file']:.2f}x |")
    for n, r in sorted(nft.items()):
        lines.append(f"| {n} | nft -f | {spread(r['wall_ms_runs'], ms)} | {n / (r['wall_ms'] / 1000):.0f} | 1 | "
                     f"{n} | 1 |")
    if c.get("engine_skipped"):
        lines.append("\nSkipped (one producer would submit too many mutations in sequence; see "
                     "`ruleplane-bench --help`): " + ", ".join(f"N={s['n']} C={s['c']}" for s in c["engine_skipped"]))
    if c.get("latency"):
        l = c["latency"]
        lines.append(f"\nSingle mutation into a set of {l['set_size']} elements: engine p50 {l['p50_ms']:.3f} ms, "
                     f"p99 {l['p99_ms']:.3f} ms (netlink part p50 {l['netlink_p50_ms']:.3f} ms; one fdatasync of the "
                     f"state dir's disk, for reference, p50 {l['fdatasync_p50_ms']:.3f} ms); `nft add element` exec "
                     f"p50 {l['exec_p50_ms']:.3f} ms.")
    if c.get("exec_per_element"):
        e = c["exec_per_element"]
        lines.append(f"\nOne `nft add element` exec per element: {e['done']} of {e['n']} in {e['total_ms']:.0f} ms "
                     f"({e['per_element_ms']:.2f} ms each){' (censored at its budget)' if e['censored'] else ''}.")
    lines.append("\nTargets as the tool states them:\n")
    for t in c.get("targets", []):
        lines.append(f"- `{t['line']}`")
    if c.get("info"):
        lines.append("\nFor information (no target at these sizes):\n")
        for t in c["info"]:
            lines.append(f"- `{t['line']}`")
    series = []
    for cc in sorted({r["c"] for r in c["engine"]}):
        pts = []
        for r in c["engine"]:
            if r["c"] == cc:
                rates = [r["n"] / (w / 1000) for w in r["wall_ms_runs"]]
                pts.append((r["n"], r["mutations_per_s"], min(rates), max(rates)))
        series.append({"label": f"engine C={cc}", "points": pts})
    pts = []
    for n, r in sorted(nft.items()):
        rates = [n / (w / 1000) for w in r["wall_ms_runs"]]
        pts.append((n, n / (r["wall_ms"] / 1000), min(rates), max(rates)))
    series.append({"label": "nft -f (floor)", "points": pts, "dash": True})
    svgs["commit-throughput.svg"] = svgplot.line_plot(
        "Commit throughput vs N", series, "N (elements)", "mutations per second",
        note=f"median of {c['repeats']} repeats, bars min–max; journal "
             f"{'fdatasync per commit' if c.get('journal_fsync', True) else 'written before each ack, no fdatasync'}")
    lines.append("\n![commit throughput](benchmarks/commit-throughput.svg)\n")


# The SNAT issue's targets for bpf ÷ no-nat.
SNAT_TARGET_GBIT, SNAT_TARGET_CONN = 0.98, 0.95


def snat_section(sn, lines, prog=()):
    if not sn:
        lines.append("Not in this run (`--only` left out `snat`).\n")
        return
    sn = sn[0]
    args, res = sn["args"], sn["results"]
    variants = [v for v in ("no-nat", "bpf", "nftables", "iptables", "nftables-keepport", "iptables-keepport")
                if v in res]
    lines.append(f"`tools/bench/snat_bench.py`: pod ns → node ns → outside ns through the `bridge` + `host-local` + "
                 f"`ruleplane` chain; the agent's SNAT mode is switched by SIGHUP between rounds (no-nat: the outside "
                 f"routes the pod subnet back, the ceiling; iptables: `iptables-legacy` MASQUERADE --random-fully with "
                 f"the agent's SNAT off; "
                 + ("-keepport: the same two without the random flags (`snat_fully_random: false`, MASQUERADE "
                    "without --random-fully), which keep the pod's port when free; " if "nftables-keepport" in res
                    else "")
                 + f"bpf: the programs hooked as "
                 f"{'tcx links' if sn.get('bpf_attach') == 'tcx' else 'clsact filters'}, what `snat_bpf_attach` auto "
                 f"picks on this kernel). {args['rounds']} rounds, variant order rotated every round; TCP = one "
                 f"iperf3 stream for {args['seconds']} s; new connections = {args['count']} short connections "
                 f"(connect, 1-byte request/response, close) from {args['parallel']} threads. Median over rounds "
                 f"[min–max].\n")
    lines.append("| variant | TCP Gbit/s | ÷ no-nat | new conn/s | ÷ no-nat | failed connections | SYN retransmits per "
                 "run | agent CPU per 1000 connections |")
    lines.append("|---|---|---|---|---|---|---|---|")
    base_g, base_c = med(res["no-nat"]["gbit"]), med(res["no-nat"]["conn_s"])
    m = {}
    for v in variants:
        g, c = res[v]["gbit"], res[v]["conn_s"]
        m[v] = (med(g), med(c))
        lines.append(f"| {v} | {spread(g, lambda x: f'{x:.2f}')} | {med(g) / base_g:.3f} | "
                     f"{spread(c, lambda x: f'{x:.0f}')} | {med(c) / base_c:.3f} | {res[v]['failed']} | "
                     f"{spread(res[v].get('syn_retrans', []), lambda x: f'{x:.0f}')} | "
                     f"{spread(res[v].get('agent_cpu_ms_per_1k_conns', []), lambda x: f'{x:.1f} ms')} |")
    if all(v in m for v in ("bpf", "nftables", "iptables")):
        og = m["bpf"][0] >= m["nftables"][0] >= m["iptables"][0]
        oc = m["bpf"][1] >= m["nftables"][1] >= m["iptables"][1]
        tg, tc = m["bpf"][0] / base_g, m["bpf"][1] / base_c
        lines.append("")
        lines.append(f"- bpf ≥ nftables ≥ iptables (medians): throughput **{'PASS' if og else 'MISS'}**, "
                     f"new connections **{'PASS' if oc else 'MISS'}**")
        if "nftables-keepport" in m and "iptables-keepport" in m:
            nk, ik = m["nftables-keepport"], m["iptables-keepport"]
            lines.append(f"- without `fully-random` (the -keepport rows: `snat_fully_random: false`, MASQUERADE "
                         f"without --random-fully), bpf ≥ nftables ≥ iptables (medians): throughput "
                         f"**{'PASS' if m['bpf'][0] >= nk[0] >= ik[0] else 'MISS'}**, new connections "
                         f"**{'PASS' if m['bpf'][1] >= nk[1] >= ik[1] else 'MISS'}**")
            pk = [b / a for a, b in zip(res["nftables-keepport"]["conn_s"], res["bpf"]["conn_s"]) if a]
            lines.append(f"  (bpf ÷ nftables-keepport new connections per round, median [min–max]: "
                         f"{spread(pk, lambda x: f'{x:.3f}')}; without the random flags the conntrack variants add "
                         f"only a NAT binding to the connection tracking every variant pays here, and no TIME_WAIT "
                         f"collisions)")
        lines.append(f"- bpf ÷ no-nat: throughput {tg:.3f} (target ≥ {SNAT_TARGET_GBIT}) "
                     f"**{'PASS' if tg >= SNAT_TARGET_GBIT else 'MISS'}**, new connections {tc:.3f} (target ≥ "
                     f"{SNAT_TARGET_CONN}) **{'PASS' if tc >= SNAT_TARGET_CONN else 'MISS'}**")
        # Rounds run bpf and no-nat minutes apart at most, so a round's pair
        # shares the machine's load of the moment; their ratio per round is
        # the less noisy view (the verdict above stays on the medians).
        pg = [b / a for a, b in zip(res["no-nat"]["gbit"], res["bpf"]["gbit"]) if a]
        pc = [b / a for a, b in zip(res["no-nat"]["conn_s"], res["bpf"]["conn_s"]) if a]
        progs = res["bpf"].get("prog", {})
        if progs:
            per_conn = sum(med(st["ns_per_run"]) * med(st["runs_per_conn"]) for st in progs.values()) / 1000
            lines.append("- the bpf programs in the kernel under connection load (`kernel.bpf_stats_enabled`, "
                         "run_time_ns ÷ run_cnt, in an extra unscored connection run after the scored one, "
                         "since the switch adds two clock reads to every program run): " + ", ".join(
                             f"{name} {spread(st['ns_per_run'], lambda x: f'{x:.0f}')} ns per packet × "
                             f"{med(st['runs_per_conn']):.1f} packets per connection"
                             for name, st in sorted(progs.items()))
                         + f"; {per_conn:.1f} µs per connection in all")
        if pg and pc:
            lines.append(f"- the same ratio taken per round (bpf ÷ no-nat of the same round), median [min–max]: "
                         f"throughput {spread(pg, lambda x: f'{x:.3f}')}, new connections "
                         f"{spread(pc, lambda x: f'{x:.3f}')}")
            targets = (("throughput", pg, SNAT_TARGET_GBIT), ("new connections", pc, SNAT_TARGET_CONN))
            straddle = [name for name, xs, t in targets if min(xs) < t <= max(xs)]
            if straddle:
                lines.append(f"- the per-round ratios of {' and '.join(straddle)} fall on both sides of the target, "
                             f"so this run's PASS/MISS there is not stable on this machine: another run of the same "
                             f"binaries can flip it. Judge by many rounds (e.g. several runs pooled), not by one page.")
        if all(res[v].get("cpu_us_per_conn") for v in variants):
            def cpu_ratio(v, key):
                return med([x / y for x, y in zip(res[v][key], res["no-nat"][key]) if y])
            lines.append("- busy CPU of the whole machine (`/proc/stat` user+nice+system+irq+softirq, not steal) per "
                         "unit of work, median, and ÷ no-nat per round: " + "; ".join(
                             f"{v} {med(res[v]['cpu_us_per_conn']):.1f} µs per connection "
                             f"({cpu_ratio(v, 'cpu_us_per_conn'):.3f}), "
                             f"{med(res[v]['cpu_s_per_100gbit']):.2f} CPU s per 100 Gbit "
                             f"({cpu_ratio(v, 'cpu_s_per_100gbit'):.3f})" for v in variants)
                         + ". Less sensitive than the rates to where the scheduler puts the processes on this "
                           "2-vCPU VM; it includes starting the client processes, the same for every variant. "
                           "Conntrack runs in the node namespace for every variant (the agent's own hostPort chains "
                           "are `type nat`), as on any kube-proxy node, so the conntrack variants add only the NAT "
                           "binding to connection tracking that is paid anyway, while bpf adds its own flow state.")
        def fastest_with_retrans():
            # The fastest conntrack run that still met TIME_WAIT: proof that
            # most retransmits do not wait the 1 s timeout.
            runs = [(c, n, v) for v in ("nftables", "iptables") if v in res
                    for c, n in zip(res[v]["conn_s"], res[v].get("syn_retrans", [])) if n]
            if not runs:
                return ""
            c, n, v = max(runs)
            return (f" (this run: {v} finished {args['count']} connections with {n} SYN retransmits in "
                    f"{args['count'] / c:.2f} s)")
        lines.append("- SYN retransmits: with conntrack NAT and a random source port per flow (`fully-random`, "
                     "nftables backend and `MASQUERADE --random-fully` alike), a new flow can be given a port whose "
                     "tuple the server still holds in TIME_WAIT (the server closes first here); the server answers "
                     "the SYN with an ACK of the old connection, the client resets (which ends the TIME_WAIT) and "
                     "sends the SYN again. Linux resends it at once after the first such ACK, so most of these cost "
                     "milliseconds" + fastest_with_retrans() + ", but now and then one waits the 1 s initial "
                     "retransmission timeout, and that one wait adds a second to a run of well under one. So the "
                     "conntrack variants' new-connection rates are bimodal, which is why their order moves between "
                     "runs. The bpf backend keeps one mapping per flow tuple, so a reused tuple reaches the server "
                     "unchanged and TIME_WAIT lets it in.")
        per_port = {True: "it does on this machine's kernel (snat_bench probes it: loopback sockets from adjacent "
                          "ports read unrelated TCP_TIMESTAMP values)",
                    False: "it does not on this machine's kernel (snat_bench's TCP_TIMESTAMP probe), so the "
                           "mechanism below should not apply here",
                    None: "snat_bench did not probe it in this run"}[sn.get("ts_offset_per_port")]
        lines.append("- Why TIME_WAIT refuses the SYN: since Linux commit 165573e41f2f (\"tcp: secure_seq: add back "
                     f"ports to TS offset\") the client's TCP timestamp offset depends on its source port; {per_port}. "
                     "A translated "
                     "tuple reused by a flow from another pod port carries timestamps from an unrelated offset, so "
                     "about half the time they look older than the last ones the server saw and PAWS rejects the "
                     "SYN. Reported on netfilter-devel in June 2026 for Kubernetes' `MASQUERADE --random-fully` "
                     "(short-connection rate halved); the fix under discussion rewrites the timestamp at NAT time. "
                     "Since Linux 5.0 a colliding port is re-drawn at random with or without the random flags, so "
                     "`snat_fully_random: false` (keep the pod's port when free) avoids the reuse" + (
                         "" if not all(res.get(v, {}).get("syn_retrans") for v in ("nftables-keepport",
                                                                                   "iptables-keepport"))
                         else " (this run's -keepport rows: " + ", ".join(
                             f"{v} {med(res[v]['syn_retrans']):.0f} SYN retransmits per run"
                             for v in ("nftables-keepport", "iptables-keepport")) + ")")
                     + "; the default stays `fully-random` as the SNAT issue asks.")
        for a, b in (("bpf", "nftables"), ("nftables", "iptables")):
            ga, gb = res[a]["gbit"], res[b]["gbit"]
            if m[a][0] < m[b][0] and min(ga) <= max(gb) and min(gb) <= max(ga):
                lines.append(f"- Throughput {a} < {b} by the medians, but their spreads overlap "
                             f"({min(ga):.2f}–{max(ga):.2f} vs {min(gb):.2f}–{max(gb):.2f} Gbit/s): one bulk TCP "
                             f"stream of 64 KB GSO packets pays the per-packet NAT cost rarely, and the run-to-run "
                             f"noise on this machine is larger than the difference.")
        lines.append("")
    if prog:
        pr = prog[0]
        lines.append(f"What the tc programs themselves cost per packet (`ruleplane-bpf-bench`, BPF_PROG_TEST_RUN, one "
                     f"packet per run, median of {pr['rounds']} rounds × {pr['samples']} runs; net = minus a "
                     f"two-instruction program measured the same way, {pr['baseline_ns']} ns). Caches are warm "
                     f"(the same few flows back to back), so these are floors: on a busy node a flow's map entries "
                     f"are cold. {pr['pods']} pods, {pr['max_flows']} flow entries per map.\n")
        lines.append("| path | median ns | p90 ns | net ns | what |")
        lines.append("|---|---|---|---|---|")
        for x in pr["paths"]:
            lines.append(f"| {x['name']} | {x['median_ns']} | {x['p90_ns']} | {x['net_ns']} | {x['what']}"
                         + (f" ({x['wrong_verdicts']} took another path)" if x["wrong_verdicts"] else "") + " |")
        lines.append("")
        ratios = pr.get("net_ratio_to_old") or {}
        if ratios:
            lines.append("- net ns of the program the agent loads ÷ the same program taking the helper calls it made "
                         "before (`_old` rows: stamp clock through `bpf_ktime_get_coarse_ns`, exclusions in the LPM "
                         "trie, L4 checksums through `bpf_l4_csum_replace`), same run: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
            lines.append("")


def startup_section(s, lines, svgs):
    if not s:
        lines.append("_Startup benchmark: no data in this run._\n")
        return
    rep = s["config"]["repeats"]
    lines.append(f"Attachments registered through `Cni.Add` (one IPv4 address each, no host ports), agent stopped "
                 f"with SIGTERM, then started {rep} times with the table present (same netns) and {rep} times in a "
                 f"fresh netns (table absent) from a copy of the same state dir. Start = posix_spawn of the agent; "
                 f"serving = first `grpc.health.v1` Check answering SERVING (1 ms polls). RSS 1 s after SERVING. "
                 f"Median [min–max] over the starts.\n")
    lines.append("| attachments | table | start → SERVING (ms, or s) | RSS | peak RSS (HWM) | state dir | load time |")
    lines.append("|---|---|---|---|---|---|---|")
    for z in s["sizes"]:
        files = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in z["state_files"].items()) or "empty"
        for key, label in (("table_present", "present"), ("table_absent", "absent")):
            d = z[key]
            runs = d["runs"]
            sv = [r["start_to_serving_ms"] for r in runs if r["start_to_serving_ms"] >= 0]
            rss = [r["rss_kb_settled"] / 1024 for r in runs if r["rss_kb_settled"] > 0]
            hwm = [r["hwm_kb_settled"] / 1024 for r in runs if r["hwm_kb_settled"] > 0]
            ok = d["attachments"] == [z["n"]] and not d["errors"]
            lines.append(f"| {z['n']} | {label} | {spread(sv, ms)} | {spread(rss)} MB | {spread(hwm)} MB | "
                         f"{files} | {z['load']['seconds']:.1f} s{'' if ok else ' — COUNT/ERROR: ' + str(d['attachments'])} |")
    for z in s["sizes"]:
        if z["n"] == 10000:
            for key in ("table_present", "table_absent"):
                d = z[key]
                t_ok = (d["serving_ms"]["median"] or 1e9) <= 200
                m_ok = (d["rss_kb"]["median"] or 1e9) <= 40 * 1024
                lines.append(f"\nTarget at 10k, table {key.split('_')[1]}: start → SERVING ≤ 200 ms "
                             f"**{'PASS' if t_ok else 'MISS'}**; RSS ≤ 40 MB **{'PASS' if m_ok else 'MISS'}**")
    def curve(key, value):
        pts = []
        for z in s["sizes"]:
            v = [value(r) for r in z[key]["runs"] if value(r) is not None]
            if v:
                pts.append((max(z["n"], 100), med(v), min(v), max(v)))
        return pts
    serving = lambda r: r["start_to_serving_ms"] if r["start_to_serving_ms"] >= 0 else None
    rss = lambda r: r["rss_kb_settled"] / 1024 if r["rss_kb_settled"] > 0 else None
    note = f"median of {rep} starts, bars min–max; 0 attachments plotted at 100"
    svgs["agent-startup.svg"] = svgplot.line_plot(
        "Agent start → SERVING vs attachments", [
            {"label": "table present (restart)", "points": curve("table_present", serving)},
            {"label": "fresh netns (table absent)", "points": curve("table_absent", serving)}],
        "attachments in the checkpoint", "ms", hlines=[(200, "200 ms target at 10k")], note=note)
    svgs["agent-rss.svg"] = svgplot.line_plot(
        "Agent RSS 1 s after SERVING vs attachments", [
            {"label": "table present (restart)", "points": curve("table_present", rss)},
            {"label": "fresh netns (table absent)", "points": curve("table_absent", rss)}],
        "attachments in the checkpoint", "MB", hlines=[(40, "40 MB target at 10k")], note=note)
    lines.append("\n![agent startup](benchmarks/agent-startup.svg)\n\n![agent RSS](benchmarks/agent-rss.svg)\n")


def render(raw, out_md, a):
    meta = load(raw, "meta.json")
    meta = meta[0] if meta else {}
    cont = load(raw, "contention-[0-9]*.json")
    plug = load(raw, "plugin-[0-9]*.json")
    tmpfs = load(raw, "plugin-tmpfs.json")
    st = load(raw, "startup.json")
    cm = load(raw, "commit.json")
    svgdir = os.path.join(os.path.dirname(out_md), "benchmarks")
    os.makedirs(svgdir, exist_ok=True)
    svgs = {}
    L = []
    m = meta.get("machine_before", machine())
    ma = meta.get("machine_after", m)
    quick = meta.get("quick")
    L.append("# Benchmarks\n")
    L.append("<!-- Generated by tools/bench/results.py from docs/benchmarks/raw/*.json. Do not edit by hand: "
             "rerun the command below. -->\n")
    L.append(f"Generated {meta.get('finished', '?')}; binaries built from commit `{meta.get('git', {}).get('head', '?')}`"
             f" ({meta.get('git', {}).get('source', '?')})"
             + (f" (working tree also had uncommitted changes by others in: {', '.join(meta['git']['dirty'][:12])})"
                if meta.get("git", {}).get("dirty") else "") + ".\n")
    moved = {k: v for k, v in meta.get("section_git", {}).items() if v.get("head") != meta.get("git", {}).get("head")}
    if moved:
        L.append("Sections re-run later with other binaries: " + "; ".join(
            f"{k} from commit `{v.get('head', '?')}` ({v.get('source', '?')})" for k, v in sorted(moved.items()))
            + ".\n")
    label = ("**Reduced configuration** (`--quick`: fewer pods per phase and shorter bounds; the N values are the "
             "full ones)" if quick else "Full configuration")
    L.append(f"{label}; {meta.get('runs', len(cont))} run(s) of the contention and plugin benchmarks.\n")
    L.append("## Machine\n")
    L.append(f"- {m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('mem_gb')} GB RAM, virtualization "
             f"`{m.get('virt')}`, Debian {m.get('debian')}, kernel {m.get('kernel')}")
    L.append(f"- shared with other engineers' builds: load average {' '.join(m.get('loadavg', []))} at the start, "
             f"{' '.join(ma.get('loadavg', []))} at the end (1/5/15 min). Absolute figures move with that load; "
             f"the comparisons inside one run are the point.")
    L.append("- packages: " + ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()))
    L.append("")
    L.append("## How to reproduce\n")
    full = (f"sudo tools/bench/results.py --clean-build build-bench --runs "
            f"{meta.get('runs', 1)}{' --quick' if quick else ''}")
    inv = meta.get("invocation") or full
    if meta.get("partial"):
        # A partial rerun (--only) replaced some sections with the same
        # binaries; the page as a whole comes from both commands.
        reruns = meta.get("reruns") or [inv]
        L.append("```sh\nsudo tools/setup.sh\n" + full + "\n" + "\n".join(reruns) + "\n```\n")
        L.append(f"(the later commands re-ran {', '.join(meta['partial'])}"
                 + (" with the binaries named above)\n" if moved else " with the same binaries)\n"))
    else:
        L.append(f"```sh\nsudo tools/setup.sh\n{inv}\n```\n")
    L.append("which ran, in order (RAW = docs/benchmarks/raw):\n")
    L.append("```sh\n" + "\n".join(meta.get("commands", [])) + "\n```\n")
    if meta.get("durations_s"):
        L.append("Wall time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in meta["durations_s"].items()) + ".\n")
    L.append("Smoke run of the headline benchmark alone (~2 min): `sudo tools/bench/contention.py --quick`.\n")
    L.append("## 1. Pod setup under kube-proxy churn\n")
    L.append("`tools/bench/contention.py`. A kube-proxy-shaped iptables ruleset (KUBE-SERVICES, KUBE-SVC-* with "
             "statistic-mode probabilities, KUBE-SEP-* DNAT, KUBE-MARK-MASQ, KUBE-POSTROUTING; "
             "`tools/bench/kube_proxy_rules.py`) is re-applied back to back with "
             "`iptables-legacy-restore --wait --noflush` in its own network namespace. `/run/xtables.lock` is one "
             "file for the whole machine, so every xtables user in every namespace queues behind those restores. "
             "Three CNI chains set up pods in their own node namespaces, driven as a runtime drives them (CNI_* "
             "environment, config on stdin, prevResult threaded through):\n")
    L.append("- **reference**: `bridge` (ipMasq) + `host-local` + `portmap` from Debian's containernetworking-plugins, "
             "with `iptables` on their PATH being iptables-legacy (temp dir of symlinks; the machine's alternatives "
             "are untouched)")
    L.append("- **ruleplane**: `bridge` + `host-local` + `ruleplane`, same hostPort mapping, agent in the node "
             "namespace")
    L.append("- **floor**: `bridge` + `host-local` alone\n")
    L.append("Idle = the ruleset is loaded but nothing re-applies it; churn = restores back to back. Sequential ADDs "
             "are interleaved round-robin across the chains; concurrent ADDs start together per chain.\n")
    contention_section(cont, svgdir, L, svgs)
    pluginchurn_section(load(raw, "pluginchurn-[0-9]*.json"), L)
    floorchurn_section(load(raw, "floorchurn-[0-9]*.json"), L)
    L.append("## 2. Plugin ADD latency (issue 3)\n")
    L.append("`tools/bench/plugin_latency.py`: the `ruleplane` plugin alone (synthetic bridge-shaped prevResult on "
             "stdin), exec → exit, next to `/usr/lib/cni/host-local` with CNI_COMMAND=VERSION as the process floor, "
             "same run.\n")
    plugin_section(plug, tmpfs, L, svgs)
    L.append("### A request after an idle second\n")
    idlegap_section(load(raw, "idlegap.json"), L)
    L.append("## 3. Scale curves\n")
    L.append("### Commit throughput vs N and concurrency\n")
    commit_section(cm[0] if cm else None, L, svgs)
    L.append("### Agent start → serving and memory vs attachments\n")
    L.append("`tools/bench/startup.py` with `ruleplane-agent-bench` (load generator and start timer).\n")
    startup_section(st[0] if st else None, L, svgs)
    L.append("### SNAT data path (issue 4)\n")
    snat_section(load(raw, "snat.json"), L, load(raw, "snatprog.json"))
    L.append("## Caveats\n")
    L.append("- 2 shared CPUs: the restore loop keeps one CPU busy (pinned there unless `--pin off`), and other "
             "engineers' builds may take CPU from anything; compare every chain with the floor chain of the same run "
             "(section 1, last two columns).")
    L.append("- Pods accumulate per N (no DEL between ADDs); namespaces are removed after each N.")
    L.append("- The lock holders come from samples of /proc/locks every few ms: a short hold (an `iptables -w` "
             "from portmap) is seen only when it overlaps a sample; the restores' holds and everyone's waits are "
             "long enough to be seen in full.")
    L.append("- Every ADD was bounded; censored ADDs are kept (as their bound) and marked `>=`.")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")
    for name, text in svgs.items():
        with open(os.path.join(svgdir, name), "w") as f:
            f.write(text)
    print(f"wrote {out_md} and {len(svgs)} SVGs in {svgdir}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs of the contention and plugin benchmarks")
    ap.add_argument("--startup-repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="reduced configuration (labelled as such on the page)")
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--no-build", action="store_true", help="do not run the build first")
    ap.add_argument("--clean-build", metavar="DIR",
                    help="export HEAD with git archive into DIR/src, build it in DIR/obj and benchmark that "
                         "(the page then names an exact commit; uncommitted work in the tree is left out)")
    ap.add_argument("--only", default="",
                    help="comma separated subset: contention,pluginchurn,floorchurn,plugin,idlegap,startup,commit,snat")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    ap.add_argument("--from-raw", help="only render the page from this raw dir")
    a = ap.parse_args()
    a.build_abs = a.build if os.path.isabs(a.build) else os.path.join(REPO, a.build)
    if a.clean_build:
        a.clean_build_abs = a.clean_build if os.path.isabs(a.clean_build) else os.path.join(REPO, a.clean_build)
    raw = os.path.join(os.path.dirname(a.out), "benchmarks", "raw")
    if a.from_raw:
        render(a.from_raw, a.out, a)
        return 0
    if os.geteuid() != 0:
        raise SystemExit("results: needs root (the benchmarks create network namespaces)")
    run_all(a, raw)
    render(raw, a.out, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
