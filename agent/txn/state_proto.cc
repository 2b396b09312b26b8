#include "agent/txn/state_proto.h"

#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
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
      // Set even when empty: "retain nothing" is a real GC that removes
      // every attachment, not a mutation without a kind.
      p.mutable_retain();
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

namespace {

// Protobuf wire format, just what state.proto needs: varints (wire type 0)
// and length-delimited fields (wire type 2), field numbers < 16 (one-byte
// tags). Encoders are templates over a sink so one function both sizes a
// nested message (SizeSink) and writes it (StringSink).
constexpr uint8_t kVarint = 0;
constexpr uint8_t kLengthDelimited = 2;

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

struct SizeSink {
  size_t size = 0;
  void Raw(absl::string_view s) { size += s.size(); }
  void Byte(uint8_t) { ++size; }
  void Varint(uint64_t v) { size += VarintSize(v); }
};

struct StringSink {
  std::string* out;
  void Raw(absl::string_view s) { out->append(s.data(), s.size()); }
  void Byte(uint8_t b) { out->push_back(static_cast<char>(b)); }
  void Varint(uint64_t v) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  }
};

template <typename Sink>
void Tag(Sink& s, uint32_t field, uint8_t wire_type) {
  s.Byte(static_cast<uint8_t>(field << 3 | wire_type));
}
// A repeated string element: written even when empty.
template <typename Sink>
void StringElement(Sink& s, uint32_t field, absl::string_view v) {
  Tag(s, field, kLengthDelimited);
  s.Varint(v.size());
  s.Raw(v);
}
// A singular proto3 string: omitted when empty.
template <typename Sink>
void String(Sink& s, uint32_t field, absl::string_view v) {
  if (!v.empty()) StringElement(s, field, v);
}
template <typename Sink>
void Uint(Sink& s, uint32_t field, uint64_t v) {
  if (v == 0) return;
  Tag(s, field, kVarint);
  s.Varint(v);
}
// A nested message (written even when empty, as a set message field is).
// Sizing it walks the body once; writing it walks the body twice (size,
// then bytes), so a message at depth d is walked d+1 times in all.
template <typename Sink, typename Body>
void Message(Sink& s, uint32_t field, const Body& body) {
  SizeSink size;
  body(size);
  Tag(s, field, kLengthDelimited);
  s.Varint(size.size);
  if constexpr (std::is_same_v<Sink, SizeSink>) {
    s.size += size.size;
  } else {
    body(s);
  }
}

template <typename Sink>
void EncodeKey(Sink& s, const core::AttachmentKey& k) {
  String(s, 1, k.container_id);
  String(s, 2, k.ifname);
}

template <typename Sink>
void EncodeAttachment(Sink& s, const core::Attachment& a) {
  EncodeKey(s, a.key);
  String(s, 3, a.netns);
  String(s, 4, a.pod_namespace);
  String(s, 5, a.pod_name);
  String(s, 6, a.pod_uid);
  char text[core::IpAddress::kMaxTextSize];
  for (const core::IpAddress& ip : a.ips) StringElement(s, 7, ip.ToChars(text));
  for (const core::PortMapping& pm : a.port_mappings) {
    Message(s, 8, [&pm](auto& m) {
      Uint(m, 1, pm.host_port);
      Uint(m, 2, pm.container_port);
      String(m, 3, core::L4ProtoName(pm.proto));
      char host_ip[core::IpAddress::kMaxTextSize];
      if (pm.host_ip) String(m, 4, pm.host_ip->ToChars(host_ip));
    });
  }
}

template <typename Sink>
void EncodeMutation(Sink& s, const core::Mutation& m) {
  switch (m.kind) {
    case core::Mutation::Kind::kUpsert:
      Message(s, 1, [&m](auto& a) { EncodeAttachment(a, m.attachment); });
      break;
    case core::Mutation::Kind::kDelete:
      Message(s, 2, [&m](auto& k) { EncodeKey(k, m.key); });
      break;
    case core::Mutation::Kind::kRetain:
      Message(s, 3, [&m](auto& r) {
        for (const core::AttachmentKey& k : m.retain) {
          Message(r, 1, [&k](auto& pk) { EncodeKey(pk, k); });
        }
      });
      break;
  }
}

}  // namespace

void AppendJournalRecord(uint64_t commit_id, const std::vector<const core::Mutation*>& mutations,
                         std::string* out) {
  auto record = [&](auto& s) {
    Uint(s, 1, commit_id);
    for (const core::Mutation* m : mutations) {
      Message(s, 2, [m](auto& pm) { EncodeMutation(pm, *m); });
    }
  };
  // A guess, not a sizing pass (that would walk every mutation once more).
  out->reserve(out->size() + 16 + 256 * mutations.size());
  StringSink sink{out};
  record(sink);
}

}  // namespace ruleplane::txn
