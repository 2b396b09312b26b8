// Domain types of the desired state. Pure values: no I/O, no kernel headers
// beyond constants. Owned by whoever holds them; thread-compatible.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace ruleplane::core {

// An IPv4 or IPv6 address (no zone, no prefix).
class IpAddress {
 public:
  enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

  IpAddress() = default;
  static absl::StatusOr<IpAddress> Parse(absl::string_view text);
  static IpAddress V4(const std::array<uint8_t, 4>& bytes);
  static IpAddress V6(const std::array<uint8_t, 16>& bytes);

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::kV4; }
  // Network byte order; 4 or 16 bytes.
  std::vector<uint8_t> bytes() const;
  bool IsUnspecified() const;  // 0.0.0.0 or ::
  std::string ToString() const;
  // The same text written into `buf` (kMaxTextSize bytes, INET6_ADDRSTRLEN),
  // without allocating; the view points into `buf`.
  static constexpr size_t kMaxTextSize = 46;
  absl::string_view ToChars(char (&buf)[kMaxTextSize]) const;

  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;

 private:
  Family family_ = Family::kV4;
  std::array<uint8_t, 16> bytes_{};  // v4 uses the first 4
};

enum class L4Proto : uint8_t { kTcp = 6, kUdp = 17, kSctp = 132 };
absl::StatusOr<L4Proto> ParseL4Proto(absl::string_view text);
absl::string_view L4ProtoName(L4Proto proto);

// One hostPort mapping of an attachment (CNI capability "portMappings").
struct PortMapping {
  uint16_t host_port = 0;
  uint16_t container_port = 0;
  L4Proto proto = L4Proto::kTcp;
  std::optional<IpAddress> host_ip;  // nullopt = every local address

  friend auto operator<=>(const PortMapping&, const PortMapping&) = default;
  friend bool operator==(const PortMapping&, const PortMapping&) = default;
};

// Identity of an attachment: one interface of one container (CNI's
// CONTAINERID + IFNAME).
struct AttachmentKey {
  std::string container_id;
  std::string ifname;

  friend auto operator<=>(const AttachmentKey&, const AttachmentKey&) = default;
  friend bool operator==(const AttachmentKey&, const AttachmentKey&) = default;
  std::string ToString() const { return container_id + "/" + ifname; }
};

// A pod's interface as the agent knows it from CNI ADD.
struct Attachment {
  AttachmentKey key;
  std::string netns;
  std::string pod_namespace;
  std::string pod_name;
  std::string pod_uid;
  std::vector<IpAddress> ips;
  std::vector<PortMapping> port_mappings;

  friend bool operator==(const Attachment&, const Attachment&) = default;
  // Short owner tag stored on every kernel element this attachment owns, so
  // deletion is exact and `nft list` says whose element it is.
  std::string OwnerTag() const;
};

// One requested change of the desired state. Mutations for the same
// container id are applied in arrival order by the engine.
struct Mutation {
  enum class Kind {
    kUpsert,  // add or replace the attachment `attachment`
    kDelete,  // remove `key` (unknown key: success, nothing changes)
    kRetain,  // garbage-collect: remove every attachment not in `retain`
  };
  Kind kind = Kind::kUpsert;
  Attachment attachment;           // kUpsert
  AttachmentKey key;               // kDelete
  std::vector<AttachmentKey> retain;  // kRetain

  static Mutation Upsert(Attachment a);
  static Mutation Delete(AttachmentKey key);
  static Mutation Retain(std::vector<AttachmentKey> keys);
  // The container id this mutation is ordered by ("" for kRetain).
  absl::string_view OrderingKey() const;
  std::string Describe() const;
};

}  // namespace ruleplane::core
