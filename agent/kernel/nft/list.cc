#include "agent/kernel/nft/list.h"

#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/common/status_macros.h"
#include "agent/kernel/nft/objects.h"
#include "agent/kernel/nl/errors.h"
#include "glog/logging.h"

namespace ruleplane::kernel::nft {
namespace {

std::string Str(const char* s) { return s == nullptr ? "" : s; }

absl::StatusOr<std::vector<ChainListing>> ListOnce(nl::NetlinkSocket& socket) {
  std::vector<char> buf(8192, 0);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, 0);
  std::vector<ChainListing> out;
  RETURN_IF_ERROR(socket.Request(nlh, "dump chains of every table", [&](const nlmsghdr* reply) {
    NftnlChainPtr chain(nftnl_chain_alloc());
    CHECK(chain != nullptr) << "allocate nftnl chain";
    if (nftnl_chain_nlmsg_parse(reply, chain.get()) < 0) {
      return absl::InternalError("dump chains of every table: unparsable reply");
    }
    ChainListing c;
    c.family = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_FAMILY);
    c.table = Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TABLE));
    c.name = Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME));
    if (nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_HOOKNUM)) {
      render::BaseChainSpec base;
      base.type = Str(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_TYPE));
      base.hook = nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_HOOKNUM);
      base.priority = nftnl_chain_get_s32(chain.get(), NFTNL_CHAIN_PRIO);
      base.policy = nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_POLICY)
                        ? nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_POLICY)
                        : NF_ACCEPT;
      c.base = base;
    }
    out.push_back(std::move(c));
    return absl::OkStatus();
  }));
  return out;
}

}  // namespace

absl::StatusOr<std::vector<ChainListing>> ListChains(nl::NetlinkSocket& socket, int max_attempts) {
  absl::Status last;
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    if (attempt > 1) absl::SleepFor(absl::Milliseconds(5 * (attempt - 1)));
    absl::StatusOr<std::vector<ChainListing>> r = ListOnce(socket);
    if (r.ok() || nl::StatusErrno(r.status()) != EINTR) return r;
    last = r.status();
  }
  return absl::AbortedError(absl::StrCat("dump chains of every table: ruleset kept changing, gave up after ",
                                         max_attempts, " attempts (last: ", last.message(), ")"));
}

absl::StatusOr<std::vector<ChainListing>> ListChains(const std::string& netns_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<nl::NetlinkSocket> socket, nl::NetlinkSocket::OpenNetfilter(netns_path));
  return ListChains(*socket);
}

}  // namespace ruleplane::kernel::nft
