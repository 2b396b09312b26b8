#!/usr/bin/env bash
# Installs everything ruleplane needs to build, test and run its demo lab on
# Debian 12. Idempotent: safe to run again. Must run as root (apt-get).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: must run as root (it installs Debian packages with apt-get)" >&2
  exit 1
fi

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # kernel-facing libraries
  libmnl-dev libnftnl-dev libbpf-dev libelf-dev zlib1g-dev
  # abseil, protobuf, gRPC (with reflection), tests
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev libgrpc-dev
  protobuf-compiler-grpc grpc-proto libgtest-dev libgmock-dev libbenchmark-dev
  # logging and the /metrics HTTP endpoint
  libgoogle-glog-dev libgflags-dev libmicrohttpd-dev nlohmann-json3-dev
  # BPF objects: clang/llvm compile, bpftool generates skeletons
  clang llvm bpftool
  # CLIs used only by tests, the demo lab and benchmarks (never by the product)
  nftables iptables iproute2 iputils-ping containernetworking-plugins iperf3 curl
  procps util-linux psmisc libcap2-bin python3 python3-yaml ethtool
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: all packages present"
fi
