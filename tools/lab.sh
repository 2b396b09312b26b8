#!/usr/bin/env bash
# The demo lab: one "node" network namespace running ruleplane-agent, N "pod"
# namespaces set up through the real CNI chain bridge + host-local + ruleplane,
# an "outside" namespace, and real traffic:
#   - pod <-> pod over the bridge (ping)
#   - outside -> node hostPort -> pod (curl), DNAT by the agent's nftables map
#   - pod -> outside (TCP and UDP) through SNAT: first the nftables backend,
#     then switched at runtime (SIGHUP) to the tc eBPF backend, then off;
#     the outside reports the source address it sees
#   - CHECK / DEL / GC through the chain, and the agent's own view.
# Everything lives in namespaces this script creates and removes; the host's
# ruleset is never touched. Usage: sudo tools/lab.sh [BUILD_DIR] [PODS]
# (BUILD_DIR relative to the repository or absolute; PODS >= 2, default 3).
# Exits non-zero when any step does not behave; ctest runs it (e2e.demo_lab).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build=${1:-build}
pods=${2:-3}
[[ "$build" == /* ]] || build="$repo/$build"
(( pods >= 2 )) || { echo "lab: needs at least 2 pods (pod1 talks to pod2)" >&2; exit 2; }
agent="$build/agent/ruleplane-agent"
ctl="$build/tools/ruleplanectl"
plugin_dir="$build/cni"
for f in "$agent" "$ctl" "$plugin_dir/ruleplane"; do
  [[ -x "$f" ]] || { echo "lab: $f missing; build first (tools/demo.sh does)" >&2; exit 1; }
done

id=$$
node="rp-lab-node-$id"
outside="rp-lab-out-$id"
lab=$(mktemp -d /tmp/rp-lab.XXXXXX)
sock="$lab/run/ruleplane.sock"
conflist="$lab/ruleplane-lab.conflist"
config="$lab/agent.json"
pin_dir="/sys/fs/bpf/rp-lab-$id"  # bpffs is global: our own pin dir
peer="$repo/test/e2e/snat_peer.py"  # TCP+UDP server that answers with the peer address it sees
agent_pid=""
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_node() { ip netns exec "$node" "$@"; }
cnirun() {
  in_node "$repo/tools/cnirun" --conflist "$conflist" --cni-path "$plugin_dir:/usr/lib/cni" \
    --cache-dir "$lab/cache" "$@"
}

cleanup() {
  local rc=$?
  set +e
  if (( rc != 0 )) && [[ -s "$lab/agent.log" ]]; then
    echo "lab: failed (exit $rc); the agent's log ends:" >&2
    tail -30 "$lab/agent.log" >&2
  fi
  [[ -n "$agent_pid" ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  for i in $(seq 1 "$pods"); do
    ip netns pids "rp-lab-pod$i-$id" 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del "rp-lab-pod$i-$id" 2>/dev/null
  done
  ip netns pids "$node" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns del "$node" 2>/dev/null
  ip netns pids "$outside" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns del "$outside" 2>/dev/null
  rm -rf "$lab" "$pin_dir"
}
trap cleanup EXIT INT TERM

say "namespaces: node $node, outside $outside, $pods pods"
ip netns add "$node"
ip netns add "$outside"
in_node ip link set lo up
ip -n "$outside" link set lo up
ip link add rpl-out-$id type veth peer name rpl-node-$id
ip link set rpl-node-$id netns "$node"
ip link set rpl-out-$id netns "$outside"
in_node ip link set rpl-node-$id name eth-out
ip -n "$outside" link set rpl-out-$id name eth0
in_node ip addr add 192.168.77.1/24 dev eth-out
ip -n "$outside" addr add 192.168.77.2/24 dev eth0
in_node ip link set eth-out up
ip -n "$outside" link set eth0 up
in_node sysctl -qw net.ipv4.ip_forward=1

# The agent's SNAT settings (ruleplane.v1.AgentConfig as JSON); SIGHUP
# re-reads them. Pod traffic to the pod subnet keeps its address.
write_config() {  # SNAT_MODE
  cat >"$config" <<EOF
{"snat_mode": "$1", "snat_egress_interfaces": ["eth-out"], "snat_exclude": ["10.99.0.0/24"],
 "bpf_pin_dir": "$pin_dir", "snat_stats_interval_ms": 500}
EOF
}
reload() {  # SNAT_MODE
  write_config "$1"
  local before
  before=$(grep -c "SIGHUP: configuration reloaded" "$lab/agent.log" || true)
  kill -HUP "$agent_pid"
  for _ in $(seq 100); do
    (( $(grep -c "SIGHUP: configuration reloaded" "$lab/agent.log" || true) > before )) && break
    grep -q "reload failed" "$lab/agent.log" && break
    sleep 0.1
  done
  if ! in_node "$ctl" --socket="$sock" status | grep -q "snat backend: *$1\$"; then
    echo "lab: the agent did not switch SNAT to $1:" >&2; tail -20 "$lab/agent.log" >&2; exit 1
  fi
  echo "snat backend is now $1"
}
# pod1 -> outside over TCP and UDP; the outside must see the node's address.
egress_check() {
  local proto view
  for proto in tcp udp; do
    view=$(ip netns exec "rp-lab-pod1-$id" python3 "$peer" once "$proto" 192.168.77.2 7777)
    echo "pod1 ${ips[1]} -> outside 192.168.77.2:7777/$proto: the outside sees $view"
    [[ "$view" == "192.168.77.1 "* ]] || { echo "lab: expected the node's address 192.168.77.1" >&2; exit 1; }
  done
}

say "start ruleplane-agent in the node namespace (SNAT: nftables backend)"
# bpffs (for the eBPF backend's pins) where the distribution has not mounted it.
grep -qs " /sys/fs/bpf bpf " /proc/mounts || { mkdir -p /sys/fs/bpf && mount -t bpf bpf /sys/fs/bpf; }
mkdir -p "$lab/run" "$lab/state"
write_config nftables
# nsenter, not `ip netns exec`: that one remounts /sys, hiding bpffs.
nsenter --net="/run/netns/$node" "$agent" --socket="$sock" --state_dir="$lab/state" \
  --metrics_address=127.0.0.1:9464 --config="$config" >"$lab/agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 50); do in_node "$ctl" --socket="$sock" health >/dev/null 2>&1 && break; sleep 0.1; done
in_node "$ctl" --socket="$sock" health

cat >"$conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "ruleplane-lab",
  "plugins": [
    {"type": "bridge", "bridge": "rp0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$lab/ipam"}},
    {"type": "ruleplane", "socket": "$sock", "timeout": "2s",
     "capabilities": {"portMappings": true}}
  ]
}
EOF

say "CNI ADD for $pods pods through bridge + host-local + ruleplane"
declare -a ips
for i in $(seq 1 "$pods"); do
  ns="rp-lab-pod$i-$id"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  pm=$(printf '[{"hostPort": %d, "containerPort": 80, "protocol": "tcp"}]' $((8080 + i)))
  result=$(cnirun --args "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=web-$i;K8S_POD_UID=uid-$i" \
    --port-mappings "$pm" add "pod$i-$id" "/run/netns/$ns" eth0)
  ips[$i]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])' <<<"$result")
  echo "pod$i: ${ips[$i]}  hostPort $((8080 + i)) -> :80"
  # A tiny web server in the pod that says who it is.
  mkdir -p "$lab/www$i" && echo "hello from web-$i (${ips[$i]})" >"$lab/www$i/index.html"
  ip netns exec "$ns" python3 -m http.server 80 --bind 0.0.0.0 --directory "$lab/www$i" >/dev/null 2>&1 &
done
sleep 0.5

say "the agent's view"
in_node "$ctl" --socket="$sock" status
in_node "$ctl" --socket="$sock" attachments

say "pod1 -> pod2 over the bridge"
ip netns exec "rp-lab-pod1-$id" ping -c 2 -W 1 "${ips[2]}"

say "outside -> node hostPort -> pod (DNAT through the hostport map)"
for i in $(seq 1 "$pods"); do
  ip netns exec "$outside" curl -s --max-time 3 "http://192.168.77.1:$((8080 + i))/"
done

say "SNAT: pods reach the outside as the node (nftables backend); the outside has no route to pods"
ip netns exec "$outside" python3 "$peer" server 7777 >"$lab/peer.out" 2>&1 &
for _ in $(seq 50); do grep -q ready "$lab/peer.out" && break; sleep 0.1; done
egress_check
ip netns exec "rp-lab-pod1-$id" ping -c 1 -W 1 192.168.77.2 | grep "bytes from"
sleep 0.6  # one statistics interval
in_node "$ctl" --socket="$sock" snat
echo "the SNAT chain in the agent's table (pod ADD/DEL changes set elements only):"
in_node nft list chain inet ruleplane snat-v4 | sed 's/^/  /'

say "switch SNAT to the tc eBPF backend at runtime (SIGHUP)"
reload bpf
egress_check
sleep 0.6
in_node "$ctl" --socket="$sock" snat
echo "pinned in $pin_dir: $(ls "$pin_dir" | tr '\n' ' ')"
if in_node nft list table inet ruleplane | grep -q "chain snat"; then
  echo "lab: nftables SNAT chain left behind after the switch" >&2; exit 1
fi
echo "no SNAT chain left in nftables"
echo "hostPort DNAT still works next to the eBPF SNAT:"
ip netns exec "$outside" curl -s --max-time 3 "http://192.168.77.1:8082/"

say "switch SNAT off: nothing of the eBPF backend stays behind"
reload off
[[ ! -e "$pin_dir" ]] || { echo "lab: $pin_dir left behind" >&2; exit 1; }
echo "pin dir $pin_dir removed"

say "CNI CHECK pod1, then DEL pod1 twice (second time like a runtime retry), then GC"
cnirun check "pod1-$id" "/run/netns/rp-lab-pod1-$id" eth0 && echo "CHECK ok"
cnirun del "pod1-$id" "/run/netns/rp-lab-pod1-$id" eth0 && echo "DEL ok"
cnirun del "pod1-$id" "" eth0 && echo "DEL again ok"
if ip netns exec "$outside" curl -s --max-time 2 "http://192.168.77.1:8081/" >/dev/null; then
  echo "unexpected: hostPort 8081 still answers after DEL" >&2; exit 1
else
  echo "hostPort 8081 no longer answers (rules removed)"
fi

say "transactions (every commit, its queue wait and netlink round trip)"
in_node "$ctl" --socket="$sock" txns
say "the agent's table as read back from the kernel"
in_node nft list table inet ruleplane
say "metrics (excerpt)"
in_node curl -s 127.0.0.1:9464/metrics | grep -E '^ruleplane_(txn_commits_total|txn_queue_depth|attachments|nft_elements|snat_mode)'
say "lab done; cleaning up"
