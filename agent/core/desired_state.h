// DesiredState: every attachment the agent has accepted, keyed by container
// id + ifname. Pure; the engine thread owns the live copy.
#pragma once

#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "agent/core/types.h"

namespace ruleplane::core {

// What one applied mutation did to one attachment; used by the renderer to
// compute element deltas and by the engine to undo a batch.
struct Change {
  AttachmentKey key;
  std::optional<Attachment> before;
  std::optional<Attachment> after;  // empty with Record::kBeforeOnly
};

class DesiredState {
 public:
  using Map = std::map<AttachmentKey, Attachment>;

  // What a Change records. kBeforeOnly leaves `after` empty: the caller
  // reads the new value with Find(key) right after Apply() instead (the
  // engine does; a copy of every applied attachment was a tenth of its
  // writer's time).
  enum class Record { kBeforeAndAfter, kBeforeOnly };

  // Validates and applies one mutation, appending what changed to `changes`
  // (if non-null). On error nothing changes.
  // InvalidArgument: malformed attachment (no container id, bad port...).
  // AlreadyExists: a host port (family, host ip, proto, port) already owned
  // by another attachment.
  [[nodiscard]] absl::Status Apply(const Mutation& m, std::vector<Change>* changes = nullptr,
                                   Record record = Record::kBeforeAndAfter);

  // Puts `key` back to `value` (nullopt = absent) without validation; used
  // to undo changes in reverse order.
  void Restore(const AttachmentKey& key, const std::optional<Attachment>& value);

  const Map& attachments() const { return attachments_; }
  const Attachment* Find(const AttachmentKey& key) const;
  size_t size() const { return attachments_.size(); }

 private:
  // (family 4/6, host ip bytes or empty for wildcard, proto, host port)
  using HostPortKey = std::tuple<int, std::vector<uint8_t>, uint8_t, uint16_t>;
  static std::vector<HostPortKey> HostPortKeys(const Attachment& a);
  absl::Status Validate(const Attachment& a) const;
  void IndexAdd(const Attachment& a);
  void IndexRemove(const Attachment& a);

  Map attachments_;
  std::map<HostPortKey, AttachmentKey> host_ports_;
};

}  // namespace ruleplane::core
