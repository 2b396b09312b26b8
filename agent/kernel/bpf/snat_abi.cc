#include "agent/kernel/bpf/snat_abi.h"

#include <array>
#include <string>

#include "absl/strings/str_cat.h"

namespace ruleplane::kernel::bpf {

absl::string_view ReasonName(uint32_t reason) {
  // On the integer: a cast to rp_reason would be out of the enum's range for
  // unnamed slots.
  switch (reason) {
    case RP_REASON_NONE:
      return "none";
    case RP_DROP_NO_PORT:
      return "drop_no_port";
    case RP_DROP_NO_EGRESS_ADDR:
      return "drop_no_egress_addr";
    case RP_FAILOVER:
      return "failover";
    case RP_DROP_UNSUPPORTED_PROTO:
      return "drop_unsupported_proto";
    case RP_DROP_FRAGMENT:
      return "drop_fragment";
    case RP_DROP_CSUM:
      return "drop_csum";
    case RP_PASS_EXCLUDED:
      return "pass_excluded";
    case RP_PASS_NOT_POD:
      return "pass_not_pod";
    case RP_PASS_FRAGMENT:
      return "pass_fragment";
    case RP_PASS_NO_STATE:
      return "pass_no_state";
    case RP_DROP_MALFORMED:
      return "drop_malformed";
    case RP_XLATE_EGRESS:
      return "xlate_egress";
    case RP_XLATE_INGRESS:
      return "xlate_ingress";
    case RP_NAT_STALE:
      return "nat_stale";
    case RP_NAT_NEW:
      return "nat_new";
    case RP_NAT_RECLAIM:
      return "nat_reclaim";
    case RP_NAT_RESTORED:
      return "nat_restored";
    case RP_NAT_RACE:
      return "nat_race";
    case RP_NAT_NODE_SOCKET:
      return "nat_node_socket";
  }
  // Unnamed slots: stable strings built once.
  static const auto* const kReserved = [] {
    auto* names = new std::array<std::string, RP_REASON_SLOTS>();
    for (uint32_t i = 0; i < RP_REASON_SLOTS; ++i) (*names)[i] = absl::StrCat("reserved_", i);
    return names;
  }();
  if (reason < RP_REASON_SLOTS) return (*kReserved)[reason];
  return "out_of_range";
}

}  // namespace ruleplane::kernel::bpf
