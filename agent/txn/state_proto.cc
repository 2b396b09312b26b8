#include "agent/txn/state_proto.h"

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"

namespace ruleplane::txn {

v1::Attachment ToProto(const core::Attachment& a) {
  v1::Attachment p;
  p.set_container_id(a.key.container_id);
  p.set_ifname(a.key.ifname);
  p.set_netns(a.netns);
  p.set_pod_namespace(a.pod_namespace);
  p.set_pod_name(a.pod_name);
  p.set_pod_uid(a.pod_uid);
  for (const core::IpAddress& ip : a.ips) p.add_ips(ip.ToString());
  for (const core::PortMapping& pm : a.port_mappings) {
    v1::PortMapping* m = p.add_port_mappings();
    m->set_host_port(pm.host_port);
    m->set_container_port(pm.container_port);
    m->set_protocol(std::string(core::L4ProtoName(pm.proto)));
    if (pm.host_ip) m->set_host_ip(pm.host_ip->ToString());
  }
  return p;
}

absl::StatusOr<core::Attachment> FromProto(const v1::Attachment& p) {
  core::Attachment a;
  a.key = {p.container_id(), p.ifname()};
  a.netns = p.netns();
  a.pod_namespace = p.pod_namespace();
  a.pod_name = p.pod_name();
  a.pod_uid = p.pod_uid();
  for (int i = 0; i < p.ips_size(); ++i) {
    auto ip = core::IpAddress::Parse(p.ips(i));
    if (!ip.ok()) return absl::InvalidArgumentError(absl::StrCat("ips[", i, "]: ", ip.status().message()));
    a.ips.push_back(*ip);
  }
  for (int i = 0; i < p.port_mappings_size(); ++i) {
    const v1::PortMapping& m = p.port_mappings(i);
    auto field = [i](absl::string_view f) { return absl::StrCat("port_mappings[", i, "].", f); };
    if (m.host_port() == 0 || m.host_port() > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(field("host_port"), ": ", m.host_port(), " is not 1-65535"));
    }
    if (m.container_port() == 0 || m.container_port() > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat(field("container_port"), ": ", m.container_port(), " is not 1-65535"));
    }
    core::PortMapping pm;
    pm.host_port = static_cast<uint16_t>(m.host_port());
    pm.container_port = static_cast<uint16_t>(m.container_port());
    auto proto = core::ParseL4Proto(m.protocol());
    if (!proto.ok()) return absl::InvalidArgumentError(absl::StrCat(field("protocol"), ": ", proto.status().message()));
    pm.proto = *proto;
    if (!m.host_ip().empty()) {
      auto ip = core::IpAddress::Parse(m.host_ip());
      if (!ip.ok()) return absl::InvalidArgumentError(absl::StrCat(field("host_ip"), ": ", ip.status().message()));
      pm.host_ip = *ip;
    }
    a.port_mappings.push_back(pm);
  }
  return a;
}

v1::Mutation ToProto(const core::Mutation& m) {
  v1::Mutation p;
  switch (m.kind) {
    case core::Mutation::Kind::kUpsert:
      *p.mutable_upsert() = ToProto(m.attachment);
      break;
    case core::Mutation::Kind::kDelete:
      p.mutable_delete_()->set_container_id(m.key.container_id);
      p.mutable_delete_()->set_ifname(m.key.ifname);
      break;
    case core::Mutation::Kind::kRetain:
      for (const core::AttachmentKey& k : m.retain) {
        v1::AttachmentKey* pk = p.mutable_retain()->add_keys();
        pk->set_container_id(k.container_id);
        pk->set_ifname(k.ifname);
      }
      break;
  }
  return p;
}

absl::StatusOr<core::Mutation> FromProto(const v1::Mutation& p) {
  switch (p.kind_case()) {
    case v1::Mutation::kUpsert: {
      ASSIGN_OR_RETURN(core::Attachment a, FromProto(p.upsert()));
      return core::Mutation::Upsert(std::move(a));
    }
    case v1::Mutation::kDelete:
      return core::Mutation::Delete({p.delete_().container_id(), p.delete_().ifname()});
    case v1::Mutation::kRetain: {
      std::vector<core::AttachmentKey> keys;
      for (const auto& k : p.retain().keys()) keys.push_back({k.container_id(), k.ifname()});
      return core::Mutation::Retain(std::move(keys));
    }
    case v1::Mutation::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("mutation has no kind");
}

}  // namespace ruleplane::txn
