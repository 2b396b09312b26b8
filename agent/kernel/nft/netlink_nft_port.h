// NetlinkNftPort: the real NftPort, speaking nf_tables netlink through
// libmnl/libnftnl.
//
// Owns one long-lived commit socket and, lazily, a second socket for dumps.
// The commit socket never changes for the life of the port: a table created
// with kTableFlagOwner belongs to that socket's portid, and only it may
// modify the table (the kernel answers EPERM to every other socket).
//
// Threading: not thread-safe. Commit(), Generation() and Probe() run on the
// engine thread only; Dump() on the engine thread, or on a separate port
// instance owned by a diagnostics reader. Never execs nft.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/kernel/nft/table_flags.h"
#include "agent/kernel/nl/socket.h"
#include "agent/render/plan.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::kernel::nft {

class NetlinkNftPort final : public txn::NftPort {
 public:
  struct Options {
    // Network namespace to work in (/run/netns/x, /proc/<pid>/ns/net);
    // empty = the agent's own.
    std::string netns_path;
    // Upper bound of one NEWSETELEM/DELSETELEM message; bigger element ops
    // are split into several messages of the same batch (one netlink
    // attribute is capped near 64 KiB). Clamped to [1 KiB, 60 KiB].
    size_t max_message_bytes = 32 * 1024;
  };

  // Opens and binds the commit socket in options.netns_path. Does not talk
  // to nf_tables yet; call Probe() for a clear "unusable here" diagnosis.
  // FailedPrecondition when the kernel has no nfnetlink at all.
  static absl::StatusOr<std::unique_ptr<NetlinkNftPort>> Create(const Options& options);

  ~NetlinkNftPort() override;

  // See txn::NftPort. Validation failures (comment too long, ...) return
  // InvalidArgument OpErrors without sending anything. Kernel refusals come
  // back per op with the errno's code (nl::KernelErrnoToCode) and a message
  // "commit nft batch seq=<n> op=<summary>[ element <i> (<text>)]: <strerror>
  // (extack: ...)"; the batch is then not applied.
  txn::CommitReport Commit(const render::Plan& plan) override;

  // See txn::NftPort. Uses the dump socket; retries up to 10 times while the
  // generation changes, then Aborted.
  absl::StatusOr<txn::KernelTable> Dump(std::string_view table, uint32_t family) override;

  // The current ruleset generation id (NFT_MSG_GETGEN, commit socket).
  absl::StatusOr<uint32_t> Generation();

  // Whether nf_tables is usable here: OK, FailedPrecondition "kernel has no
  // nf_tables support (modprobe nf_tables?)", or PermissionDenied "no
  // CAP_NET_ADMIN ...". Sends one GETGEN; changes nothing.
  absl::Status Probe();

  // Netlink portid of the commit socket: the owner of tables this port
  // creates with kTableFlagOwner (KernelTable::owner).
  uint32_t portid() const;

 private:
  NetlinkNftPort(Options options, std::unique_ptr<nl::NetlinkSocket> socket);

  Options options_;
  std::unique_ptr<nl::NetlinkSocket> socket_;       // commits; lives as long as the port
  std::unique_ptr<nl::NetlinkSocket> dump_socket_;  // dumps; reopened after a failure
};

}  // namespace ruleplane::kernel::nft
