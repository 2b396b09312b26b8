#include "agent/core/desired_state.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace ruleplane::core {

std::vector<DesiredState::HostPortKey> DesiredState::HostPortKeys(const Attachment& a) {
  std::vector<HostPortKey> keys;
  bool has_v4 = false, has_v6 = false;
  for (const IpAddress& ip : a.ips) (ip.is_v4() ? has_v4 : has_v6) = true;
  for (const PortMapping& pm : a.port_mappings) {
    auto proto = static_cast<uint8_t>(pm.proto);
    if (pm.host_ip && !pm.host_ip->IsUnspecified()) {
      keys.emplace_back(pm.host_ip->is_v4() ? 4 : 6, pm.host_ip->bytes(), proto, pm.host_port);
      continue;
    }
    // A wildcard (or 0.0.0.0 / ::) mapping lands in the map of every family
    // the pod has an address in; an unspecified host ip of one family only
    // covers that family.
    bool v4 = has_v4 && (!pm.host_ip || pm.host_ip->is_v4());
    bool v6 = has_v6 && (!pm.host_ip || !pm.host_ip->is_v4());
    if (v4) keys.emplace_back(4, std::vector<uint8_t>{}, proto, pm.host_port);
    if (v6) keys.emplace_back(6, std::vector<uint8_t>{}, proto, pm.host_port);
  }
  return keys;
}

absl::Status DesiredState::Validate(const Attachment& a) const {
  if (a.key.container_id.empty()) return absl::InvalidArgumentError("attachment has no container id");
  if (a.key.ifname.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("attachment ", a.key.container_id, " has no ifname"));
  }
  std::set<HostPortKey> own;
  for (const PortMapping& pm : a.port_mappings) {
    if (pm.host_port == 0 || pm.container_port == 0) {
      return absl::InvalidArgumentError(absl::StrCat("attachment ", a.key.ToString(),
                                                     ": port mapping with port 0 (host ",
                                                     pm.host_port, ", container ",
                                                     pm.container_port, ")"));
    }
    bool family_ok = false;
    for (const IpAddress& ip : a.ips) {
      if (!pm.host_ip || pm.host_ip->is_v4() == ip.is_v4()) family_ok = true;
    }
    if (!family_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "attachment ", a.key.ToString(), ": host port ", pm.host_port,
          " has no pod address of its family to forward to"));
    }
  }
  for (const HostPortKey& k : HostPortKeys(a)) {
    if (!own.insert(k).second) {
      return absl::InvalidArgumentError(absl::StrCat("attachment ", a.key.ToString(),
                                                     ": host port ", std::get<3>(k),
                                                     " mapped twice"));
    }
    auto it = host_ports_.find(k);
    if (it != host_ports_.end() && it->second != a.key) {
      return absl::AlreadyExistsError(absl::StrCat(
          "host port ", L4ProtoName(static_cast<L4Proto>(std::get<2>(k))), "/", std::get<3>(k),
          " is already mapped by attachment ", it->second.ToString()));
    }
  }
  return absl::OkStatus();
}

void DesiredState::IndexAdd(const Attachment& a) {
  for (HostPortKey& k : HostPortKeys(a)) host_ports_[std::move(k)] = a.key;
}

void DesiredState::IndexRemove(const Attachment& a) {
  for (const HostPortKey& k : HostPortKeys(a)) {
    auto it = host_ports_.find(k);
    if (it != host_ports_.end() && it->second == a.key) host_ports_.erase(it);
  }
}

const Attachment* DesiredState::Find(const AttachmentKey& key) const {
  auto it = attachments_.find(key);
  return it == attachments_.end() ? nullptr : &it->second;
}

void DesiredState::Restore(const AttachmentKey& key, const std::optional<Attachment>& value) {
  auto it = attachments_.find(key);
  if (it != attachments_.end()) {
    IndexRemove(it->second);
    attachments_.erase(it);
  }
  if (value) {
    IndexAdd(*value);
    attachments_.emplace(key, *value);
  }
}

absl::Status DesiredState::Apply(const Mutation& m, std::vector<Change>* changes, Record record) {
  switch (m.kind) {
    case Mutation::Kind::kUpsert: {
      const Attachment& a = m.attachment;
      if (absl::Status s = Validate(a); !s.ok()) return s;
      auto it = attachments_.find(a.key);
      std::optional<Attachment> before;
      if (it != attachments_.end()) {
        if (it->second == a) return absl::OkStatus();  // idempotent ADD
        IndexRemove(it->second);
        before = std::move(it->second);
        it->second = a;
      } else {
        attachments_.emplace(a.key, a);
      }
      IndexAdd(a);
      if (changes) {
        changes->push_back(Change{a.key, std::move(before),
                                  record == Record::kBeforeAndAfter ? std::optional<Attachment>(a) : std::nullopt});
      }
      return absl::OkStatus();
    }
    case Mutation::Kind::kDelete: {
      auto it = attachments_.find(m.key);
      if (it == attachments_.end()) return absl::OkStatus();  // DEL of unknown: success
      IndexRemove(it->second);
      if (changes) changes->push_back(Change{m.key, std::move(it->second), std::nullopt});
      attachments_.erase(it);
      return absl::OkStatus();
    }
    case Mutation::Kind::kRetain: {
      std::set<AttachmentKey> keep(m.retain.begin(), m.retain.end());
      for (auto it = attachments_.begin(); it != attachments_.end();) {
        if (keep.count(it->first)) {
          ++it;
          continue;
        }
        IndexRemove(it->second);
        if (changes) changes->push_back(Change{it->first, std::move(it->second), std::nullopt});
        it = attachments_.erase(it);
      }
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown mutation kind");
}

}  // namespace ruleplane::core
