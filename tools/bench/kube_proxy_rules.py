"""A kube-proxy-shaped iptables-save ruleset (iptables mode, full sync).

kube-proxy's iptables proxier writes the filter and nat tables with
`iptables-restore --noflush`: every KUBE-* chain it owns is declared
(`:CHAIN - [0:0]`, which flushes it under --noflush) and refilled, so each
full sync replaces all of them in one restore. Per Service port:

  KUBE-SERVICES   -d <clusterIP> -p tcp --dport P -j KUBE-SVC-<hash>
  KUBE-SVC-<hash> ! -s <podCIDR> -d <clusterIP> ... -j KUBE-MARK-MASQ
                  -m statistic --mode random --probability 1/k -j KUBE-SEP-<hash>  (k = endpoints left)
                  ... last endpoint without statistic
  KUBE-SEP-<hash> -s <endpointIP>/32 -j KUBE-MARK-MASQ
                  -p tcp -m tcp -j DNAT --to-destination <endpointIP>:P

plus KUBE-MARK-MASQ, KUBE-POSTROUTING (MASQUERADE of marked traffic) and the
NodePorts jump as the last KUBE-SERVICES rule. Chain names are KUBE-SVC- /
KUBE-SEP- + the first 16 characters of base32(sha256(...)) as kube-proxy
derives them. The jumps from the built-in chains (PREROUTING, OUTPUT,
POSTROUTING, FORWARD) are installed once by `base_jumps()`; a --noflush
restore does not flush built-in chains, so they are not part of the
repeated sync (kube-proxy ensures them with `iptables -C/-I`).
"""
import base64
import hashlib

POD_CIDR = "10.244.0.0/16"
MARK = "0x4000/0x4000"


def _chain(prefix, *parts):
    h = hashlib.sha256("".join(parts).encode()).digest()
    return prefix + base64.b32encode(h).decode()[:16]


def _svc_ip(i):
    # 10.96.0.0/12 service range, skipping .0
    i += 1
    return f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def _ep_ip(i, e):
    j = i * 3 + e + 1
    return f"10.{244 + (j >> 16)}.{(j >> 8) & 255}.{j & 255}"


def ruleset(services, endpoints=3):
    """Returns the text of one full sync for `services` Services (one TCP
    port each) with `endpoints` endpoints each, and the rule count."""
    chains_nat = [":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
                  ":KUBE-NODEPORTS - [0:0]"]
    rules_nat = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK} -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
    ]
    svc_rules = []
    for i in range(services):
        ns, name, port = f"ns{i % 50}", f"svc-{i}", 8000 + (i % 1000)
        svc_port = f"{ns}/{name}:http"
        cip = _svc_ip(i)
        svc = _chain("KUBE-SVC-", svc_port, "tcp")
        chains_nat.append(f":{svc} - [0:0]")
        rules_nat.append(f'-A KUBE-SERVICES -d {cip}/32 -p tcp -m comment --comment "{svc_port} cluster IP" '
                         f"-m tcp --dport {port} -j {svc}")
        svc_rules.append(f'-A {svc} ! -s {POD_CIDR} -d {cip}/32 -p tcp -m comment --comment "{svc_port} cluster IP" '
                         f"-m tcp --dport {port} -j KUBE-MARK-MASQ")
        for e in range(endpoints):
            ep = _ep_ip(i, e)
            sep = _chain("KUBE-SEP-", svc_port, "tcp", f"{ep}:{port}")
            chains_nat.append(f":{sep} - [0:0]")
            left = endpoints - e
            comment = f'-m comment --comment "{svc_port} -> {ep}:{port}"'
            if left > 1:
                svc_rules.append(f"-A {svc} {comment} -m statistic --mode random --probability {1.0 / left:.11f} "
                                 f"-j {sep}")
            else:
                svc_rules.append(f"-A {svc} {comment} -j {sep}")
            svc_rules.append(f'-A {sep} -s {ep}/32 -m comment --comment "{svc_port}" -j KUBE-MARK-MASQ')
            svc_rules.append(f'-A {sep} -p tcp -m comment --comment "{svc_port}" -m tcp '
                             f"-j DNAT --to-destination {ep}:{port}")
    rules_nat.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                     'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    filt = [
        "*filter",
        ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MARK} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    nat = ["*nat"] + chains_nat + rules_nat[:4] + svc_rules + rules_nat[4:] + ["COMMIT"]
    # kube-proxy orders: chain declarations, then KUBE-SERVICES etc.; order
    # inside the table does not change what the kernel is handed (one blob).
    text = "\n".join(filt + nat) + "\n"
    nrules = sum(1 for line in filt + nat if line.startswith("-A "))
    return text, nrules


def base_jumps():
    """The jumps from built-in chains, applied once before the churn."""
    return "\n".join([
        "*filter",
        ":KUBE-FORWARD - [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
        ":KUBE-NODEPORTS - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        "COMMIT",
        "*nat",
        ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-NODEPORTS - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "COMMIT",
    ]) + "\n"


if __name__ == "__main__":
    import sys
    t, n = ruleset(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    sys.stdout.write(t)
    sys.stderr.write(f"{n} rules\n")
