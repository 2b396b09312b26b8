// ruleplane-bpf-bench: what the tc SNAT programs (bpf/snat.bpf.c) cost per
// packet, path by path, measured in the kernel with BPF_PROG_TEST_RUN.
//
// Each sample is one test run of one packet (repeat = 1: the programs rewrite
// the packet, so a repeated run would take another path); the kernel reports
// the program's own run time. The baseline, measured in the same run the same
// way, is a two-instruction program that returns TC_ACT_UNSPEC: its figure is
// the timer and dispatch overhead, and every path is printed with it
// subtracted.
//
// Caches are warm here (the same few map entries, back to back), so the
// figures are a floor: on a real node the flow's map entries are cold and
// cost more. They are for comparing program versions and paths, not for
// predicting throughput; tools/bench/snat_bench.py measures that.
//
// Needs CAP_BPF + CAP_NET_ADMIN (root). Loads its own unpinned program; no
// interface, netns or pin is touched.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/common/unique_fd.h"
#include "agent/kernel/bpf/errors.h"
#include "agent/kernel/bpf/snat_program.h"
#include "test/bpf/harness.h"
#include "test/bpf/packet.h"

ABSL_FLAG(int, samples, 20000, "test runs per path (each one packet)");
ABSL_FLAG(int, rounds, 5, "rounds; paths are interleaved within a round, the median round is printed");
ABSL_FLAG(int, pods, 256, "pod addresses in ruleplane_pods");
ABSL_FLAG(int, max_flows, 65536, "snat_bpf_max_flows of the loaded program");
ABSL_FLAG(bool, json, false, "print one JSON object instead of the table");

namespace ruleplane::bench {
namespace {

using kernel::bpf::EgressAddress;
using kernel::bpf::Ipv4Prefix;
using kernel::bpf::SnatConfig;
using kernel::bpf::SnatProgram;
using kernel::bpf::SnatProgramOptions;
using testing::Bytes;
using testing::Ipv4Addr;

constexpr Ipv4Addr kEgress = Ipv4Addr::FromOctets(192, 0, 2, 10);
constexpr Ipv4Addr kRemote = Ipv4Addr::FromOctets(203, 0, 113, 7);
constexpr Ipv4Addr kService = Ipv4Addr::FromOctets(10, 96, 0, 10);
constexpr Ipv4Addr kHost = Ipv4Addr::FromOctets(192, 0, 2, 99);

Ipv4Addr Pod(int i) { return Ipv4Addr::FromOctets(10, 244, static_cast<uint8_t>(i / 250), static_cast<uint8_t>(1 + i % 250)); }
// 198.18.0.0/15 (RFC 2544 benchmarking): 131072 distinct remotes.
Ipv4Addr Remote(uint32_t i) { return Ipv4Addr::FromOctets(198, static_cast<uint8_t>(18 + (i >> 16) % 2), static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)); }

// A program that only returns TC_ACT_UNSPEC: the measurement's own cost.
absl::StatusOr<UniqueFd> LoadBaseline() {
  const bpf_insn insns[] = {
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, TC_ACT_UNSPEC},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  const int fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "rp_bench_base", "GPL", insns, 2, nullptr);
  if (fd < 0) return kernel::bpf::BpfError(fd, "load the baseline program");
  return UniqueFd(fd);
}

// One test run of `frame` (the bpf test tier's RunTc); nullopt when the
// kernel refused it, which the caller skips as a sample.
std::optional<testing::TcRun> RunOnce(int prog_fd, const Bytes& frame) {
  auto run = testing::RunTc(prog_fd, frame);
  if (!run.ok()) return std::nullopt;
  return *std::move(run);
}

int64_t Median(std::vector<int64_t> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int64_t Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// A path: how to build the i-th packet, which program runs it, which verdict
// proves it took the path meant.
struct Path {
  std::string name;
  std::string what;
  bool egress;
  // 0: the program as the agent loads it; 1: the same code taking the
  // helper calls it made before (stamp clock through a helper, exclusions in
  // the LPM trie, L4 checksums through bpf_l4_csum_replace), the in-run
  // baseline for those choices.
  int prog = 0;
  int want_verdict;
  std::vector<Bytes> frames;  // cycled
  std::vector<int64_t> round_medians;
  std::vector<int64_t> p90s;
  int64_t wrong_verdicts = 0;
};

int Run() {
  if (std::string why = testing::MissingBpfPrivileges(); !why.empty()) {
    std::fprintf(stderr, "ruleplane-bpf-bench: %s\n", why.c_str());
    return 2;
  }
  const int samples = absl::GetFlag(FLAGS_samples);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int pods = std::clamp(absl::GetFlag(FLAGS_pods), 1, 16000);

  SnatProgramOptions options;
  options.pin_dir = "";
  options.config = SnatConfig{};
  options.config.port_min = 1024;  // room for a full flow table towards few remotes
  options.config.port_max = 65535;
  options.config.max_flows = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_flows));
  auto prog = SnatProgram::Create(options);
  SnatProgramOptions slow_options = options;
  slow_options.clock_jiffies = false;
  slow_options.csum_direct = false;
  auto slow = prog.ok() ? SnatProgram::Create(slow_options) : prog.status();
  if (!prog.ok() || !slow.ok()) {
    std::fprintf(stderr, "ruleplane-bpf-bench: load: %s\n",
                 (prog.ok() ? slow.status() : prog.status()).ToString().c_str());
    return 1;
  }
  std::vector<Ipv4Addr> pod_addrs;
  for (int i = 0; i < pods; ++i) pod_addrs.push_back(Pod(i));
  std::vector<Ipv4Prefix> excl;
  for (const char* c : {"10.96.0.0/12", "10.244.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}) {
    excl.push_back(*Ipv4Prefix::Parse(c));
  }
  // The same five CIDRs plus a dozen unrelated /32s: more than one bank of
  // ruleplane_exclf holds, so the trie answers.
  std::vector<Ipv4Prefix> many = excl;
  for (uint8_t i = 1; many.size() <= RP_SNAT_FAST_EXCLUSIONS; ++i) {
    many.push_back(Ipv4Prefix{Ipv4Addr::FromOctets(198, 51, 100, i), 32});
  }
  absl::Status st = absl::OkStatus();
  for (auto [p, x] : {std::pair{prog->get(), &excl}, std::pair{slow->get(), &many}}) {
    if (st.ok()) st = p->ReplacePodAddresses(pod_addrs);
    if (st.ok()) st = p->ReplaceExclusions(*x);
    if (st.ok()) st = p->SetEgressAddresses({EgressAddress{kEgress, false}});
  }
  if (st.ok()) {
    // Each program must take the lookup it is measured for.
    auto bank = (*prog)->ReadExclusionBank();
    auto slow_bank = (*slow)->ReadExclusionBank();
    if (!bank.ok() || !slow_bank.ok() || !bank->has_value() || slow_bank->has_value()) {
      st = absl::InternalError("exclusion lookups are not the ones meant (bank for the agent's, trie for the old)");
    }
  }
  if (!st.ok()) {
    std::fprintf(stderr, "ruleplane-bpf-bench: fill maps: %s\n", st.ToString().c_str());
    return 1;
  }
  auto base = LoadBaseline();
  if (!base.ok()) {
    std::fprintf(stderr, "ruleplane-bpf-bench: %s\n", base.status().ToString().c_str());
    return 1;
  }
  const int prog_fd[2][2] = {{(*prog)->ingress_prog_fd(), (*prog)->egress_prog_fd()},
                             {(*slow)->ingress_prog_fd(), (*slow)->egress_prog_fd()}};

  // Established flows: one per pod (pod port 40000 -> kRemote:443), primed by
  // a SYN; the ingress frames are their replies to the translated port.
  std::vector<Bytes> est_egress, est_ingress, est_ingress_slow, excluded, not_pod;
  const std::vector<uint8_t> payload(64, 'x');
  for (int i = 0; i < pods; ++i) {
    const Bytes syn = testing::BuildTcp(Pod(i), 40000, kRemote, 443);
    const auto s = RunOnce(prog_fd[0][1], syn);
    const auto s_slow = RunOnce(prog_fd[1][1], syn);
    auto parsed = s ? testing::ParseFrame(s->out) : absl::StatusOr<testing::ParsedPacket>(absl::UnknownError("run"));
    auto parsed_slow =
        s_slow ? testing::ParseFrame(s_slow->out) : absl::StatusOr<testing::ParsedPacket>(absl::UnknownError("run"));
    if (!s || s->verdict != TC_ACT_OK || !parsed.ok() || !s_slow || s_slow->verdict != TC_ACT_OK ||
        !parsed_slow.ok()) {
      std::fprintf(stderr, "ruleplane-bpf-bench: priming flow %d was not translated (verdict %d)\n", i,
                   s ? s->verdict : -1);
      return 1;
    }
    est_egress.push_back(testing::BuildTcp(Pod(i), 40000, kRemote, 443, payload, testing::kTcpAck));
    est_ingress.push_back(testing::BuildTcp(kRemote, 443, kEgress, parsed->sport, payload, testing::kTcpAck));
    est_ingress_slow.push_back(
        testing::BuildTcp(kRemote, 443, kEgress, parsed_slow->sport, payload, testing::kTcpAck));
    excluded.push_back(testing::BuildTcp(Pod(i), 40000, kService, 80, payload, testing::kTcpAck));
  }
  not_pod.push_back(testing::BuildTcp(kHost, 40000, kRemote, 443, payload, testing::kTcpAck));

  // New flows: SYNs of distinct (pod, port, remote) tuples, never repeated.
  // "room": into maps with free entries; "full": after max_flows flows, so
  // every new flow evicts the least recently used one.
  const uint32_t max_flows = (*prog)->max_flows();
  uint32_t next_flow = 0;
  auto new_syn = [&]() {
    const uint32_t f = next_flow++;
    return testing::BuildTcp(Pod(static_cast<int>(f % static_cast<uint32_t>(pods))), static_cast<uint16_t>(20000 + (f / static_cast<uint32_t>(pods)) % 40000),
                             Remote(f), 443);
  };

  constexpr char kOld[] = "; old: clock/trie/csum helpers";
  std::vector<Path> paths = {
      {"egress_established", "pod -> remote, ACK with 64 B, flow known", true, 0, TC_ACT_OK, est_egress, {}, {}, 0},
      {"ingress_established", "remote -> egress addr reply, flow known", false, 0, TC_ACT_OK, est_ingress, {}, {}, 0},
      {"egress_excluded", "pod -> excluded CIDR (cluster traffic)", true, 0, TC_ACT_UNSPEC, excluded, {}, {}, 0},
      {"egress_not_pod", "host's own traffic", true, 0, TC_ACT_UNSPEC, not_pod, {}, {}, 0},
      {"egress_established_old", absl::StrCat("egress_established", kOld), true, 1, TC_ACT_OK, est_egress, {}, {}, 0},
      {"ingress_established_old", absl::StrCat("ingress_established", kOld), false, 1, TC_ACT_OK, est_ingress_slow,
       {}, {}, 0},
      {"egress_excluded_old", absl::StrCat("egress_excluded", kOld), true, 1, TC_ACT_UNSPEC, excluded, {}, {}, 0},
  };
  Path room{"egress_new_flow", "pod SYN, new flow, maps with room", true, 0, TC_ACT_OK, {}, {}, {}, 0};
  Path full{"egress_new_flow_full", "pod SYN, new flow, maps full (LRU evicts)", true, 0, TC_ACT_OK, {}, {}, {}, 0};
  std::vector<int64_t> base_medians;
  // One round of `n` new flows into `path`.
  auto new_flows = [&](Path& path, int n) {
    std::vector<int64_t> nv;
    for (int i = 0; i < n; ++i) {
      const auto s = RunOnce(prog_fd[0][1], new_syn());
      if (!s) continue;
      if (s->verdict != path.want_verdict) ++path.wrong_verdicts;
      nv.push_back(s->duration_ns);
    }
    path.round_medians.push_back(Median(nv));
    path.p90s.push_back(Percentile(nv, 0.9));
  };

  const uint64_t room_budget = std::max<uint64_t>(1, max_flows / 2 - static_cast<uint32_t>(pods));
  const int new_per_round = static_cast<int>(std::min<uint64_t>(static_cast<uint64_t>(samples), room_budget / static_cast<uint64_t>(rounds)));
  for (int r = 0; r < rounds; ++r) {
    std::vector<int64_t> b;
    std::vector<std::vector<int64_t>> v(paths.size());
    for (int i = 0; i < samples; ++i) {
      for (size_t p = 0; p < paths.size(); ++p) {
        Path& path = paths[p];
        const auto s = RunOnce(prog_fd[path.prog][path.egress ? 1 : 0],
                               path.frames[static_cast<size_t>(i) % path.frames.size()]);
        if (!s) continue;
        if (s->verdict != path.want_verdict) ++path.wrong_verdicts;
        v[p].push_back(s->duration_ns);
      }
      if (const auto s = RunOnce(base->get(), not_pod[0])) b.push_back(s->duration_ns);
    }
    base_medians.push_back(Median(b));
    for (size_t p = 0; p < paths.size(); ++p) {
      paths[p].round_medians.push_back(Median(v[p]));
      paths[p].p90s.push_back(Percentile(v[p], 0.9));
    }
    // New flows into half-empty maps (bounded so they stay below half full).
    new_flows(room, new_per_round);
  }
  // Fill the maps, then measure new flows that each evict one.
  while (next_flow < max_flows + max_flows / 4) RunOnce(prog_fd[0][1], new_syn());
  for (int r = 0; r < rounds; ++r) new_flows(full, samples);
  paths.push_back(std::move(room));
  paths.push_back(std::move(full));

  const int64_t base_ns = Median(base_medians);
  int64_t wrong = 0;
  for (const Path& p : paths) wrong += p.wrong_verdicts;
  // Net cost of the agent's program ÷ the old lookups', per path.
  std::vector<std::pair<std::string, double>> ratios;
  for (const Path& p : paths) {
    if (p.prog != 0) continue;
    for (const Path& o : paths) {
      if (o.name != p.name + "_old") continue;
      const int64_t now_net = Median(p.round_medians) - base_ns;
      const int64_t old_net = Median(o.round_medians) - base_ns;
      if (old_net > 0) ratios.emplace_back(p.name, static_cast<double>(now_net) / static_cast<double>(old_net));
    }
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::string out = absl::StrFormat(R"({"samples": %d, "rounds": %d, "pods": %d, "max_flows": %u, "baseline_ns": %d, "paths": [)",
                                      samples, rounds, pods, max_flows, base_ns);
    for (size_t i = 0; i < paths.size(); ++i) {
      const Path& p = paths[i];
      absl::StrAppendFormat(&out, R"(%s{"name": "%s", "what": "%s", "median_ns": %d, "p90_ns": %d, "net_ns": %d, "wrong_verdicts": %d})",
                            i ? ", " : "", p.name, p.what, Median(p.round_medians), Median(p.p90s),
                            Median(p.round_medians) - base_ns, p.wrong_verdicts);
    }
    out += R"(], "net_ratio_to_old": {)";
    for (size_t i = 0; i < ratios.size(); ++i) {
      absl::StrAppendFormat(&out, R"(%s"%s": %.3f)", i ? ", " : "", ratios[i].first, ratios[i].second);
    }
    out += "}}\n";
    std::fputs(out.c_str(), stdout);
  } else {
    std::printf("tc SNAT program cost per packet (BPF_PROG_TEST_RUN, warm caches), median of %d rounds x %d samples\n",
                rounds, samples);
    std::printf("baseline (return TC_ACT_UNSPEC): %lld ns; net = median - baseline\n\n", static_cast<long long>(base_ns));
    std::printf("%-24s %8s %8s %8s  %s\n", "path", "median", "p90", "net", "what");
    for (const Path& p : paths) {
      std::printf("%-24s %8lld %8lld %8lld  %s%s\n", p.name.c_str(), static_cast<long long>(Median(p.round_medians)),
                  static_cast<long long>(Median(p.p90s)), static_cast<long long>(Median(p.round_medians) - base_ns),
                  p.what.c_str(), p.wrong_verdicts ? absl::StrCat(" (", p.wrong_verdicts, " wrong verdicts)").c_str() : "");
    }
    std::printf("\nnet ns, this program / old (clock helper, trie, csum helper), same run:");
    for (const auto& [name, r] : ratios) std::printf(" %s %.2f", name.c_str(), r);
    std::printf("\n");
  }
  if (wrong != 0) {
    std::fprintf(stderr, "ruleplane-bpf-bench: %lld packets took another path than measured (see wrong verdicts)\n",
                 static_cast<long long>(wrong));
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace ruleplane::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("ruleplane-bpf-bench [--samples N] [--rounds R] [--json]: tc SNAT program cost per packet");
  absl::ParseCommandLine(argc, argv);
  return ruleplane::bench::Run();
}
