#include "agent/kernel/nft/dump.h"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cerrno>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/objects.h"
#include "agent/kernel/nl/errors.h"
#include "agent/kernel/nl/generation.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

// Requests are tiny: a header and one or two names.
constexpr size_t kRequestBytes = 8192;

std::string Str(const char* s) { return s == nullptr ? "" : s; }

class TableReader {
 public:
  TableReader(nl::NetlinkSocket& socket, std::string_view table, uint32_t family)
      : socket_(socket), table_(table), family_(family), what_(FamilyName(family) + " " + table_) {}

  // One attempt; Aborted with errno EINTR when the ruleset changed meanwhile.
  absl::StatusOr<txn::KernelTable> ReadOnce() {
    stale_.clear();
    txn::KernelTable out;
    ASSIGN_OR_RETURN(const uint32_t before, ReadGeneration(socket_));
    want_ = static_cast<uint16_t>(before & 0xffff);

    RETURN_IF_ERROR(ReadTable(out));
    if (out.exists) {
      RETURN_IF_ERROR(ReadChains(out));
      RETURN_IF_ERROR(ReadRules(out));
      RETURN_IF_ERROR(ReadSets(out));
      for (auto& [name, set] : out.sets) RETURN_IF_ERROR(ReadElements(set));
    }

    ASSIGN_OR_RETURN(const uint32_t after, ReadGeneration(socket_));
    if (after != before) {
      Stale(absl::StrCat("generation changed ", before, " -> ", after));
    }
    if (!stale_.empty()) {
      return nl::KernelError(
          EINTR, absl::StrCat("dump table ", what_, ": inconsistent read (", stale_, ")"));
    }
    out.generation = before;
    return out;
  }

 private:
  nlmsghdr* Header(std::vector<char>& buf, uint16_t type, uint16_t flags) {
    buf.assign(kRequestBytes, 0);
    return nftnl_nlmsg_build_hdr(buf.data(), type, static_cast<uint16_t>(family_), flags, 0);
  }

  // Every nf_tables reply carries the generation it was built in
  // (nfgenmsg.res_id, low 16 bits); nftables checks it the same way.
  void Check(const nlmsghdr* nlh) {
    if (nl::DumpMessageGeneration(nlh) != want_) Stale("a reply came from another generation");
  }

  void Stale(absl::string_view why) {
    if (stale_.empty()) stale_ = std::string(why);
  }

  absl::Status ReadTable(txn::KernelTable& out) {
    std::vector<char> buf;
    nlmsghdr* nlh = Header(buf, NFT_MSG_GETTABLE, 0);
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, table_.c_str());
    absl::Status status = socket_.Request(nlh, "get table " + what_, [&](const nlmsghdr* reply) {
      Check(reply);
      NftnlTablePtr table(nftnl_table_alloc());
      CHECK(table != nullptr) << "allocate nftnl table";
      if (nftnl_table_nlmsg_parse(reply, table.get()) < 0) {
        return absl::InternalError(absl::StrCat("get table ", what_, ": unparsable reply"));
      }
      if (Str(nftnl_table_get_str(table.get(), NFTNL_TABLE_NAME)) != table_)
        return absl::OkStatus();
      out.exists = true;
      out.flags = nftnl_table_get_u32(table.get(), NFTNL_TABLE_FLAGS);
      if (nftnl_table_is_set(table.get(), NFTNL_TABLE_OWNER)) {
        out.owner = nftnl_table_get_u32(table.get(), NFTNL_TABLE_OWNER);
      }
      uint32_t len = 0;
      const void* udata = nftnl_table_get_data(table.get(), NFTNL_TABLE_USERDATA, &len);
      out.comment = UdataString(udata, len, NFTNL_UDATA_TABLE_COMMENT);
      return absl::OkStatus();
    });
    if (nl::StatusErrno(status) == ENOENT) {
      out.exists = false;
      return absl::OkStatus();
    }
    return status;
  }

  absl::Status ReadChains(txn::KernelTable& out) {
    std::vector<char> buf;
    nlmsghdr* nlh = Header(buf, NFT_MSG_GETCHAIN, NLM_F_DUMP);
    mnl_attr_put_strz(nlh, NFTA_CHAIN_TABLE, table_.c_str());
    return socket_.Request(nlh, "dump chains of " + what_, [&](const nlmsghdr* reply) {
      Check(reply);
      NftnlChainPtr chain(nftnl_chain_alloc());
      CHECK(chain != nullptr) << "allocate nftnl chain";
      if (nftnl_chain_nlmsg_parse(reply, chain.get()) < 0) {
        return absl::InternalError(absl::StrCat("dump chains of ", what_, ": unparsable reply"));
      }
      // Older kernels ignore the table filter of a chain dump.
      if (Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE)) != table_) {
        return absl::OkStatus();
      }
      std::string name = Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME));
      txn::KernelChain& kc = out.chains[name];
      kc.name = name;
      if (nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM)) {
        render::BaseChainSpec base;
        base.type = Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TYPE));
        base.hook = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM);
        base.priority = nftnl_chain_get_s32(chain.get(), NFTNL_CHAIN_PRIO);
        base.policy = nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_POLICY)
                          ? nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_POLICY)
                          : NF_ACCEPT;
        kc.base = base;
      }
      uint32_t len = 0;
      const void* udata = nftnl_chain_get_data(chain.get(), NFTNL_CHAIN_USERDATA, &len);
      kc.comment = UdataString(udata, len, NFTNL_UDATA_CHAIN_COMMENT);
      return absl::OkStatus();
    });
  }

  absl::Status ReadRules(txn::KernelTable& out) {
    std::vector<char> buf;
    nlmsghdr* nlh = Header(buf, NFT_MSG_GETRULE, NLM_F_DUMP);
    mnl_attr_put_strz(nlh, NFTA_RULE_TABLE, table_.c_str());
    return socket_.Request(nlh, "dump rules of " + what_, [&](const nlmsghdr* reply) {
      Check(reply);
      NftnlRulePtr rule(nftnl_rule_alloc());
      CHECK(rule != nullptr) << "allocate nftnl rule";
      if (nftnl_rule_nlmsg_parse(reply, rule.get()) < 0) {
        return absl::InternalError(absl::StrCat("dump rules of ", what_, ": unparsable reply"));
      }
      if (Str(nftnl_rule_get_str(rule.get(), NFTNL_RULE_TABLE)) != table_) return absl::OkStatus();
      std::string chain = Str(nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN));
      txn::KernelChain& kc = out.chains[chain];
      kc.name = chain;
      txn::KernelRule kr;
      kr.handle = nftnl_rule_get_u64(rule.get(), NFTNL_RULE_HANDLE);
      uint32_t len = 0;
      const void* udata = nftnl_rule_get_data(rule.get(), NFTNL_RULE_USERDATA, &len);
      kr.tag = UdataString(udata, len, NFTNL_UDATA_RULE_COMMENT);
      kc.rules.push_back(std::move(kr));  // the dump lists a chain's rules in order
      return absl::OkStatus();
    });
  }

  absl::Status ReadSets(txn::KernelTable& out) {
    std::vector<char> buf;
    nlmsghdr* nlh = Header(buf, NFT_MSG_GETSET, NLM_F_DUMP);
    mnl_attr_put_strz(nlh, NFTA_SET_TABLE, table_.c_str());
    return socket_.Request(nlh, "dump sets of " + what_, [&](const nlmsghdr* reply) {
      Check(reply);
      NftnlSetPtr set(nftnl_set_alloc());
      CHECK(set != nullptr) << "allocate nftnl set";
      if (nftnl_set_nlmsg_parse(reply, set.get()) < 0) {
        return absl::InternalError(absl::StrCat("dump sets of ", what_, ": unparsable reply"));
      }
      if (Str(nftnl_set_get_str(set.get(), NFTNL_SET_TABLE)) != table_) return absl::OkStatus();
      const uint32_t flags = nftnl_set_get_u32(set.get(), NFTNL_SET_FLAGS);
      // Anonymous sets belong to the rules that use them.
      if (flags & NFT_SET_ANONYMOUS) return absl::OkStatus();
      std::string name = Str(nftnl_set_get_str(set.get(), NFTNL_SET_NAME));
      txn::KernelSet& ks = out.sets[name];
      ks.name = name;
      ks.flags = flags;
      ks.key_type = nftnl_set_get_u32(set.get(), NFTNL_SET_KEY_TYPE);
      ks.key_len = nftnl_set_get_u32(set.get(), NFTNL_SET_KEY_LEN);
      ks.data_type = nftnl_set_get_u32(set.get(), NFTNL_SET_DATA_TYPE);
      ks.data_len = nftnl_set_get_u32(set.get(), NFTNL_SET_DATA_LEN);
      ks.size = nftnl_set_get_u32(set.get(), NFTNL_SET_DESC_SIZE);
      uint32_t len = 0;
      const void* udata = nftnl_set_get_data(set.get(), NFTNL_SET_USERDATA, &len);
      ks.comment = UdataString(udata, len, NFTNL_UDATA_SET_COMMENT);
      return absl::OkStatus();
    });
  }

  absl::Status ReadElements(txn::KernelSet& out) {
    std::vector<char> buf;
    nlmsghdr* nlh = Header(buf, NFT_MSG_GETSETELEM, NLM_F_DUMP);
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table_.c_str());
    mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, out.name.c_str());
    NftnlSetPtr set(nftnl_set_alloc());
    CHECK(set != nullptr) << "allocate nftnl set";
    RETURN_IF_ERROR(socket_.Request(
        nlh, absl::StrCat("dump elements of ", what_, " ", out.name), [&](const nlmsghdr* reply) {
          Check(reply);
          if (nftnl_set_elems_nlmsg_parse(reply, set.get()) < 0) {
            return absl::InternalError(
                absl::StrCat("dump elements of ", what_, " ", out.name, ": unparsable reply"));
          }
          return absl::OkStatus();
        }));
    // A hash set dump restarts its walk for every datagram and skips what
    // was already sent; if the rhashtable is being resized meanwhile (it
    // grows in a deferred worker after big inserts) the order changes and
    // the dump repeats some elements and misses others, while the
    // generation stays the same (nft_rhash_walk() continues on -EAGAIN).
    // Seen on 6.18 right after adding 100k elements. A repeated element is
    // the tell: treat the dump as interrupted and retry.
    std::set<std::pair<std::vector<uint8_t>, uint32_t>> seen;
    NftnlSetElemsIterPtr it(nftnl_set_elems_iter_create(set.get()));
    CHECK(it != nullptr) << "allocate nftnl element iterator";
    for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it.get()); e != nullptr;
         e = nftnl_set_elems_iter_next(it.get())) {
      txn::KernelElement ke;
      uint32_t len = 0;
      const auto* key =
          static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
      if (key != nullptr) ke.key.assign(key, key + len);
      // Interval sets may hold a start and an end element with one key.
      const uint32_t flags = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS)
                                 ? nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS)
                                 : 0;
      ke.flags = flags;
      if (!seen.emplace(ke.key, flags).second) {
        Stale(absl::StrCat("set ", out.name, " listed an element twice (resized during the dump)"));
      }
      if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_DATA)) {
        const auto* data =
            static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &len));
        if (data != nullptr) ke.data.assign(data, data + len);
      }
      if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
        const void* udata = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &len);
        ke.comment = UdataString(udata, len, NFTNL_UDATA_SET_ELEM_COMMENT);
      }
      out.elements.push_back(std::move(ke));
    }
    return absl::OkStatus();
  }

  nl::NetlinkSocket& socket_;
  const std::string table_;
  const uint32_t family_;
  const std::string what_;  // "inet ruleplane"
  uint16_t want_ = 0;
  std::string stale_;  // why this attempt is inconsistent; empty = consistent
};

}  // namespace

absl::StatusOr<uint32_t> ReadGeneration(nl::NetlinkSocket& socket) {
  std::vector<char> buf(kRequestBytes, 0);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETGEN, AF_UNSPEC, 0, 0);
  std::optional<uint32_t> generation;
  RETURN_IF_ERROR(socket.Request(nlh, "get nft generation", [&](const nlmsghdr* reply) {
    if (std::optional<nl::GenerationInfo> gen = nl::ParseNewGen(reply)) generation = gen->id;
    return absl::OkStatus();
  }));
  if (!generation) return absl::InternalError("get nft generation: no NEWGEN in the reply");
  return *generation;
}

absl::StatusOr<txn::KernelTable> DumpTable(nl::NetlinkSocket& socket, std::string_view table,
                                           uint32_t family, int max_attempts) {
  TableReader reader(socket, table, family);
  absl::Status last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    // Back off a little so a commit burst or a set resize can finish
    // (at most ~0.25 s over all attempts).
    if (attempt > 1) absl::SleepFor(absl::Milliseconds(5 * (attempt - 1)));
    absl::StatusOr<txn::KernelTable> result = reader.ReadOnce();
    if (result.ok()) return result;
    if (nl::StatusErrno(result.status()) != EINTR) return result.status();
    last = result.status();
    VLOG(1) << "dump table " << FamilyName(family) << " " << std::string(table) << ": attempt "
            << attempt << " inconsistent, retrying: " << last.message();
  }
  return absl::AbortedError(absl::StrCat("dump table ", FamilyName(family), " ", std::string(table),
                                         ": ruleset kept changing, gave up after ", max_attempts,
                                         " attempts (last: ", last.message(), ")"));
}

}  // namespace ruleplane::kernel::nft
