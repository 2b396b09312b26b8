// Diagnostics/GetSnatStats: the SNAT monitor's latest snapshot as proto.
// Never touches the kernel on a gRPC thread: the monitor collects on its own
// thread, this only copies.
#include "absl/strings/str_cat.h"
#include "agent/api/diagnostics_service.h"
#include "agent/api/grpc_status.h"
#include "ruleplane/reasons.h"

namespace ruleplane::api {
namespace {

// The proto enum is the third copy of the reason codes (BPF C, C++, proto):
// the numbers must agree forever (STYLE.md section 7).
static_assert(static_cast<int>(v1::SNAT_REASON_NONE) == static_cast<int>(RP_REASON_NONE));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_NO_PORT) == static_cast<int>(RP_DROP_NO_PORT));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_NO_EGRESS_ADDR) == static_cast<int>(RP_DROP_NO_EGRESS_ADDR));
static_assert(static_cast<int>(v1::SNAT_REASON_FAILOVER) == static_cast<int>(RP_FAILOVER));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_UNSUPPORTED_PROTO) == static_cast<int>(RP_DROP_UNSUPPORTED_PROTO));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_FRAGMENT) == static_cast<int>(RP_DROP_FRAGMENT));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_CSUM) == static_cast<int>(RP_DROP_CSUM));
static_assert(static_cast<int>(v1::SNAT_REASON_PASS_EXCLUDED) == static_cast<int>(RP_PASS_EXCLUDED));
static_assert(static_cast<int>(v1::SNAT_REASON_PASS_NOT_POD) == static_cast<int>(RP_PASS_NOT_POD));
static_assert(static_cast<int>(v1::SNAT_REASON_PASS_FRAGMENT) == static_cast<int>(RP_PASS_FRAGMENT));
static_assert(static_cast<int>(v1::SNAT_REASON_PASS_NO_STATE) == static_cast<int>(RP_PASS_NO_STATE));
static_assert(static_cast<int>(v1::SNAT_REASON_DROP_MALFORMED) == static_cast<int>(RP_DROP_MALFORMED));
static_assert(static_cast<int>(v1::SNAT_REASON_XLATE_EGRESS) == static_cast<int>(RP_XLATE_EGRESS));
static_assert(static_cast<int>(v1::SNAT_REASON_XLATE_INGRESS) == static_cast<int>(RP_XLATE_INGRESS));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_STALE) == static_cast<int>(RP_NAT_STALE));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_NEW) == static_cast<int>(RP_NAT_NEW));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_RECLAIM) == static_cast<int>(RP_NAT_RECLAIM));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_RESTORED) == static_cast<int>(RP_NAT_RESTORED));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_RACE) == static_cast<int>(RP_NAT_RACE));
static_assert(static_cast<int>(v1::SNAT_REASON_NAT_NODE_SOCKET) == static_cast<int>(RP_NAT_NODE_SOCKET));

const char* ProtoName(uint8_t proto) {
  switch (proto) {
    case 6: return "tcp";
    case 17: return "udp";
    case 1: return "icmp";
    default: return "other";
  }
}

}  // namespace

grpc::ServerUnaryReactor* DiagnosticsService::GetSnatStats(grpc::CallbackServerContext* c,
                                                           const v1::GetSnatStatsRequest*,
                                                           v1::GetSnatStatsResponse* resp) {
  grpc::ServerUnaryReactor* reactor = c->DefaultReactor();
  if (absl::Status s = ctx_->Authorize(c, false, "Diagnostics/GetSnatStats"); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  resp->set_mode(std::string(core::SnatModeName(ctx_->engine()->snat_mode())));
  if (ctx_->options().snat_settings) resp->set_settings(ctx_->options().snat_settings());
  std::optional<backend::SnatStats> stats;
  if (ctx_->options().snat_stats) stats = ctx_->options().snat_stats();
  if (!stats) {
    resp->set_error("the SNAT monitor is not running");
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  if (stats->collected_at != absl::InfinitePast()) resp->set_collected_unix_us(absl::ToUnixMicros(stats->collected_at));
  resp->set_collect_seconds(absl::ToDoubleSeconds(stats->collect_duration));
  resp->set_port_capacity(stats->capacity_per_tuple);
  resp->set_port_range(stats->port_range);
  resp->set_egress_waiting(stats->egress_waiting);
  resp->set_ports_shared_with_node(stats->ports_shared_with_node);
  resp->set_node_ephemeral_ports(stats->node_ephemeral_ports);
  resp->set_node_socket_skips(stats->node_socket_skips);
  resp->set_translations(stats->translations_total);
  resp->set_flow_table_capacity(stats->flow_table_capacity);
  resp->set_bpf_hook(stats->bpf_hook);
  resp->set_bpf_l4_checksum(stats->bpf_l4_checksum);
  resp->set_bpf_clock(stats->bpf_clock);
  resp->set_bpf_exclusions(stats->bpf_exclusions);
  for (const backend::SnatEgressStat& e : stats->egress) {
    v1::SnatEgressAddressStats* p = resp->add_egress();
    p->set_address(e.addr.ToString());
    p->set_slot(e.slot);
    p->set_in_pool(e.in_pool);
    p->set_translations(e.translations);
    p->set_busiest_translations(e.busiest_in_use);
    p->set_allocations(e.allocations);
    p->set_exhausted(e.exhausted);
  }
  for (const backend::SnatTupleStat& t : stats->top) {
    v1::SnatTupleStats* p = resp->add_busiest();
    p->set_egress_ip(t.egress.ToString());
    p->set_dst_ip(t.remote.ToString());
    p->set_dst_port(t.remote_port);
    p->set_proto(ProtoName(t.proto));
    p->set_translations(t.in_use);
    p->set_capacity(t.capacity);
    p->set_utilization(t.utilization);
  }
  resp->set_failovers(stats->failovers);
  for (const auto& [reason, n] : stats->drops) (*resp->mutable_drops())[reason] = n;
  resp->set_steered_destinations(stats->steered_destinations);
  resp->set_exhausted_destinations(stats->exhausted_destinations);
  if (stats->mode != ctx_->engine()->snat_mode() && stats->error.empty()) {
    resp->set_error(absl::StrCat("snapshot is from mode ", core::SnatModeName(stats->mode),
                                 "; the next collection follows the reload"));
  } else {
    resp->set_error(stats->error);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ruleplane::api
