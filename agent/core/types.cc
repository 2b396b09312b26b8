#include "agent/core/types.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"

namespace ruleplane::core {

absl::StatusOr<IpAddress> IpAddress::Parse(absl::string_view text) {
  std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes_.data()) == 1) {
    ip.family_ = Family::kV4;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes_.data()) == 1) {
    ip.family_ = Family::kV6;
    return ip;
  }
  return absl::InvalidArgumentError(absl::StrCat("not an IP address: \"", text, "\""));
}

IpAddress IpAddress::V4(const std::array<uint8_t, 4>& bytes) {
  IpAddress ip;
  ip.family_ = Family::kV4;
  std::memcpy(ip.bytes_.data(), bytes.data(), 4);
  return ip;
}

IpAddress IpAddress::V6(const std::array<uint8_t, 16>& bytes) {
  IpAddress ip;
  ip.family_ = Family::kV6;
  ip.bytes_ = bytes;
  return ip;
}

std::vector<uint8_t> IpAddress::bytes() const {
  return std::vector<uint8_t>(bytes_.begin(), bytes_.begin() + (is_v4() ? 4 : 16));
}

bool IpAddress::IsUnspecified() const {
  for (size_t i = 0; i < (is_v4() ? 4u : 16u); ++i) {
    if (bytes_[i] != 0) return false;
  }
  return true;
}

absl::string_view IpAddress::ToChars(char (&buf)[kMaxTextSize]) const {
  static_assert(kMaxTextSize >= INET6_ADDRSTRLEN);
  if (is_v4()) {
    // glibc's inet_ntop formats IPv4 through sprintf; this runs for every
    // pod element the engine renders and journals, so format by hand.
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
      unsigned v = bytes_[i];
      if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
      if (v >= 10) *p++ = static_cast<char>('0' + v / 10 % 10);
      *p++ = static_cast<char>('0' + v % 10);
      if (i < 3) *p++ = '.';
    }
    return absl::string_view(buf, static_cast<size_t>(p - buf));
  }
  inet_ntop(AF_INET6, bytes_.data(), buf, kMaxTextSize);
  return absl::string_view(buf);
}

std::string IpAddress::ToString() const {
  char buf[kMaxTextSize];
  return std::string(ToChars(buf));
}

absl::StatusOr<L4Proto> ParseL4Proto(absl::string_view text) {
  std::string p = absl::AsciiStrToLower(text);
  if (p == "tcp" || p.empty()) return L4Proto::kTcp;  // CNI: protocol defaults to tcp
  if (p == "udp") return L4Proto::kUdp;
  if (p == "sctp") return L4Proto::kSctp;
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported protocol \"", text, "\" (want tcp, udp or sctp)"));
}

absl::string_view L4ProtoName(L4Proto proto) {
  switch (proto) {
    case L4Proto::kTcp: return "tcp";
    case L4Proto::kUdp: return "udp";
    case L4Proto::kSctp: return "sctp";
  }
  return "?";
}

std::string Attachment::OwnerTag() const {
  // nftables caps element comments at 128 bytes; container ids are 64 hex
  // chars, so keep a 12-char prefix like `crictl ps` does. One allocation:
  // this runs for every element the engine renders.
  const absl::string_view cid = absl::string_view(key.container_id).substr(0, 12);
  std::string tag;
  tag.reserve(2 + cid.size() + 1 + key.ifname.size() +
              (pod_name.empty() ? 0 : 5 + pod_namespace.size() + 1 + pod_name.size()));
  absl::StrAppend(&tag, "c=", cid, "/", key.ifname);
  if (!pod_name.empty()) absl::StrAppend(&tag, " pod=", pod_namespace, "/", pod_name);
  if (tag.size() > 120) tag.resize(120);
  return tag;
}

Mutation Mutation::Upsert(Attachment a) {
  Mutation m;
  m.kind = Kind::kUpsert;
  m.key = a.key;
  m.attachment = std::move(a);
  return m;
}

Mutation Mutation::Delete(AttachmentKey key) {
  Mutation m;
  m.kind = Kind::kDelete;
  m.key = std::move(key);
  return m;
}

Mutation Mutation::Retain(std::vector<AttachmentKey> keys) {
  Mutation m;
  m.kind = Kind::kRetain;
  m.retain = std::move(keys);
  return m;
}

absl::string_view Mutation::OrderingKey() const {
  return kind == Kind::kRetain ? absl::string_view() : absl::string_view(key.container_id);
}

std::string Mutation::Describe() const {
  switch (kind) {
    case Kind::kUpsert: return absl::StrCat("upsert ", key.ToString());
    case Kind::kDelete: return absl::StrCat("delete ", key.ToString());
    case Kind::kRetain: return absl::StrCat("retain ", retain.size(), " attachments");
  }
  return "?";
}

}  // namespace ruleplane::core
