#include "agent/kernel/nft/events.h"

#include <endian.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/objects.h"
#include "agent/kernel/nl/errors.h"
#include "agent/kernel/nl/generation.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

// Every nf_tables object message names its table in attribute 1
// (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE,
// NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, NFTA_FLOWTABLE_TABLE).
constexpr uint16_t kTableAttr = 1;
static_assert(NFTA_TABLE_NAME == kTableAttr && NFTA_CHAIN_TABLE == kTableAttr &&
              NFTA_RULE_TABLE == kTableAttr && NFTA_SET_TABLE == kTableAttr &&
              NFTA_SET_ELEM_LIST_TABLE == kTableAttr && NFTA_OBJ_TABLE == kTableAttr &&
              NFTA_FLOWTABLE_TABLE == kTableAttr);

constexpr uint16_t kMaxAttr = 31;

struct EventKind {
  const char* verb;
  const char* kind;
  uint16_t name_attr;  // 0 = the table itself
};

std::optional<EventKind> Classify(uint16_t type) {
  switch (type) {
    case NFT_MSG_NEWTABLE:
      return EventKind{"add", "table", 0};
    case NFT_MSG_DELTABLE:
      return EventKind{"delete", "table", 0};
    case NFT_MSG_NEWCHAIN:
      return EventKind{"add", "chain", NFTA_CHAIN_NAME};
    case NFT_MSG_DELCHAIN:
      return EventKind{"delete", "chain", NFTA_CHAIN_NAME};
    case NFT_MSG_NEWRULE:
      return EventKind{"add", "rule", NFTA_RULE_CHAIN};
    case NFT_MSG_DELRULE:
      return EventKind{"delete", "rule", NFTA_RULE_CHAIN};
    case NFT_MSG_NEWSET:
      return EventKind{"add", "set", NFTA_SET_NAME};
    case NFT_MSG_DELSET:
      return EventKind{"delete", "set", NFTA_SET_NAME};
    case NFT_MSG_NEWSETELEM:
      return EventKind{"add", "element", NFTA_SET_ELEM_LIST_SET};
    case NFT_MSG_DELSETELEM:
      return EventKind{"delete", "element", NFTA_SET_ELEM_LIST_SET};
    case NFT_MSG_NEWOBJ:
      return EventKind{"add", "object", NFTA_OBJ_NAME};
    case NFT_MSG_DELOBJ:
      return EventKind{"delete", "object", NFTA_OBJ_NAME};
    case NFT_MSG_NEWFLOWTABLE:
      return EventKind{"add", "flowtable", NFTA_FLOWTABLE_NAME};
    case NFT_MSG_DELFLOWTABLE:
      return EventKind{"delete", "flowtable", NFTA_FLOWTABLE_NAME};
    default:
      return std::nullopt;
  }
}

int CollectAttr(const nlattr* attr, void* data) {
  auto** tb = static_cast<const nlattr**>(data);
  uint16_t type = mnl_attr_get_type(attr);
  if (type <= kMaxAttr) tb[type] = attr;
  return MNL_CB_OK;
}

std::string AttrString(const nlattr* attr) {
  if (attr == nullptr) return "";
  const char* s = static_cast<const char*>(mnl_attr_get_payload(attr));
  return std::string(s, ::strnlen(s, mnl_attr_get_payload_len(attr)));
}

RulesetChange OverflowChange() {
  RulesetChange change;
  change.events.push_back(NftEventWatcher::kOverflowEvent);
  return change;
}

}  // namespace

NftEventWatcher::NftEventWatcher(std::unique_ptr<nl::NetlinkSocket> socket, std::string table,
                                 uint32_t family)
    : socket_(std::move(socket)), table_(std::move(table)), family_(family) {}

absl::StatusOr<std::unique_ptr<NftEventWatcher>> NftEventWatcher::Create(
    const std::string& netns_path, std::string table, uint32_t family,
    size_t receive_buffer_bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<nl::NetlinkSocket> socket,
                   nl::NetlinkSocket::OpenNetfilter(netns_path));
  RETURN_IF_ERROR(socket->JoinGroup(NFNLGRP_NFTABLES));
  // Big element commits emit one notification per element; a roomy queue
  // makes ENOBUFS (and the resync it forces) rare. Best effort.
  absl::StatusOr<size_t> rcvbuf = socket->SetReceiveBuffer(receive_buffer_bytes);
  if (!rcvbuf.ok()) LOG(WARNING) << "nft event watcher: " << rcvbuf.status();
  return std::unique_ptr<NftEventWatcher>(
      new NftEventWatcher(std::move(socket), std::move(table), family));
}

void NftEventWatcher::AddEvent(std::string event) {
  if (pending_.size() < kMaxEventsPerChange) {
    pending_.push_back(std::move(event));
  } else {
    ++pending_dropped_;
  }
}

void NftEventWatcher::HandleMessage(const nlmsghdr* nlh, std::vector<RulesetChange>& out) {
  if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES) return;
  if (std::optional<nl::GenerationInfo> gen = nl::ParseNewGen(nlh)) {
    if (!pending_.empty() || pending_dropped_ > 0) {
      RulesetChange change;
      change.generation = gen->id;
      change.pid = gen->pid;
      change.proc_name = gen->proc_name;
      change.events = std::move(pending_);
      if (pending_dropped_ > 0) {
        change.events.push_back(absl::StrCat("... and ", pending_dropped_, " more events"));
      }
      out.push_back(std::move(change));
    }
    pending_.clear();
    pending_dropped_ = 0;
    return;
  }
  std::optional<EventKind> kind = Classify(NFNL_MSG_TYPE(nlh->nlmsg_type));
  if (!kind || mnl_nlmsg_get_payload_len(nlh) < sizeof(nfgenmsg)) return;
  const auto* gen = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
  if (gen->nfgen_family != family_) return;
  const nlattr* tb[kMaxAttr + 1] = {};
  if (mnl_attr_parse(nlh, sizeof(nfgenmsg), CollectAttr, tb) < 0) return;
  if (AttrString(tb[kTableAttr]) != table_) return;

  std::string event =
      absl::StrCat(kind->verb, " ", kind->kind, " ", FamilyName(family_), " ", table_);
  if (kind->name_attr != 0) absl::StrAppend(&event, " ", AttrString(tb[kind->name_attr]));
  if (NFNL_MSG_TYPE(nlh->nlmsg_type) == NFT_MSG_NEWRULE ||
      NFNL_MSG_TYPE(nlh->nlmsg_type) == NFT_MSG_DELRULE) {
    const nlattr* handle = tb[NFTA_RULE_HANDLE];
    if (handle != nullptr && mnl_attr_validate(handle, MNL_TYPE_U64) == 0) {
      absl::StrAppend(&event, " handle ", be64toh(mnl_attr_get_u64(handle)));
    }
  }
  AddEvent(std::move(event));
}

absl::StatusOr<std::vector<RulesetChange>> NftEventWatcher::ReadPending() {
  std::vector<RulesetChange> out;
  std::vector<char> buf(nl::kReceiveBufferBytes);
  for (;;) {
    absl::StatusOr<size_t> received = socket_->Receive(buf, absl::ZeroDuration());
    if (!received.ok()) {
      if (nl::StatusErrno(received.status()) == ENOBUFS) {
        // The kernel dropped notifications: what we buffered is incomplete
        // and the table may have changed in ways we did not see. recvmsg()
        // reports the error before the messages still queued, which are the
        // head of the overflowed burst (its NEWGEN usually lost): discard
        // them too, or they would be glued onto the next transaction.
        pending_.clear();
        pending_dropped_ = 0;
        socket_->DiscardPending();
        if (out.empty() || out.back().events != OverflowChange().events) {
          out.push_back(OverflowChange());
        }
        continue;
      }
      return received.status();
    }
    if (*received == 0) return out;
    int remaining = static_cast<int>(*received);
    for (const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
         mnl_nlmsg_ok(nlh, remaining); nlh = mnl_nlmsg_next(nlh, &remaining)) {
      HandleMessage(nlh, out);
    }
  }
}

}  // namespace ruleplane::kernel::nft
