#include "agent/render/bpf_plan.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ruleplane::render {
namespace {

std::string Ip(const Ipv4Bytes& b) { return absl::StrCat(b[0], ".", b[1], ".", b[2], ".", b[3]); }

}  // namespace

std::string BpfPlanToText(const BpfSnatPlan& plan) {
  if (!plan.enabled) return "bpf snat disabled: no tc filters, no clsact qdisc of ours, no pins\n";
  std::string out = absl::StrCat("bpf snat pin_dir ", plan.pin_dir, " ports ", plan.port_min, "-", plan.port_max,
                                 " max_retries ", plan.max_retries,
                                 " max_flows ", plan.max_flows, " attach ",
                                 core::BpfAttachName(plan.attach), plan.fully_random ? "" : " keep_port", "\n");
  for (const std::string& ifname : plan.interfaces) {
    absl::StrAppend(&out, "attach tc ingress+egress ", ifname, "\n");
  }
  for (size_t i = 0; i < plan.egress.size(); ++i) {
    absl::StrAppend(&out, "egress slot ", i, " ", Ip(plan.egress[i]), "\n");
  }
  for (const BpfPrefix4& p : plan.exclusions) {
    absl::StrAppend(&out, "exclude ", Ip(p.addr), "/", p.len, "\n");
  }
  return out;
}

}  // namespace ruleplane::render
