// Uninstall: the one way the agent's node state is removed on purpose
// (`ruleplane-agent --uninstall`). A plain stop or restart never does this.
//
// Order: the CNI conflist first (the runtime stops sending pods to
// ruleplane), then the nftables table (hostPort DNAT goes away), then the
// checkpoint, journal and bring-up history, then a stale socket file.
// Refused while an agent answers on the socket.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/txn/nft_port.h"

namespace ruleplane::bringup {

struct UninstallOptions {
  std::string table;
  std::string state_dir;
  std::string socket;
  std::string cni_conf_dir;       // empty: no conflist to remove
  std::string cni_conflist_name;
};

// One line per thing removed or left alone. `port` deletes the table (one
// atomic batch) and is used only here, on the caller's single thread.
absl::StatusOr<std::vector<std::string>> Uninstall(const UninstallOptions& options, txn::NftPort* port);

}  // namespace ruleplane::bringup
