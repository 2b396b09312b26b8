#include "agent/bringup/uninstall.h"

#include <linux/netfilter.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "agent/bringup/cni_conflist.h"
#include "agent/common/unique_fd.h"

namespace ruleplane::bringup {
namespace {

// True when something accepts connections on the unix socket `path`.
bool SomeoneListens(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return false;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> Uninstall(const UninstallOptions& o, txn::NftPort* port) {
  if (SomeoneListens(o.socket)) {
    return absl::FailedPreconditionError(
        absl::StrCat("uninstall: an agent is running on ", o.socket, "; stop it first"));
  }
  std::vector<std::string> done;
  if (!o.cni_conf_dir.empty()) {
    absl::StatusOr<bool> removed = RemoveConflist(o.cni_conf_dir, o.cni_conflist_name);
    if (!removed.ok()) return removed.status();
    done.push_back(absl::StrCat(*removed ? "removed " : "no ", o.cni_conf_dir, "/", o.cni_conflist_name));
  }
  absl::StatusOr<txn::KernelTable> table = port->Dump(o.table, NFPROTO_INET);
  if (!table.ok()) return table.status();
  if (table->exists) {
    render::Plan plan{o.table, NFPROTO_INET, {render::op::DeleteTable{}}};
    txn::CommitReport r = port->Commit(plan);
    if (!r.status.ok()) {
      return absl::Status(r.status.code(), absl::StrCat("uninstall: delete table inet ", o.table, ": ",
                                                        r.status.message(),
                                                        r.status.code() == absl::StatusCode::kPermissionDenied
                                                            ? " (still owned by a running agent?)"
                                                            : ""));
    }
    done.push_back(absl::StrCat("deleted table inet ", o.table));
  } else {
    done.push_back(absl::StrCat("no table inet ", o.table));
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const char* f : {"checkpoint.pb", "journal.log", "bringup-history.json", "bringup-history.json.tmp"}) {
    fs::path p = fs::path(o.state_dir) / f;
    if (fs::remove(p, ec)) done.push_back(absl::StrCat("removed ", p.string()));
    if (ec) return absl::InternalError(absl::StrCat("uninstall: remove ", p.string(), ": ", ec.message()));
  }
  if (fs::is_directory(o.state_dir, ec) && fs::is_empty(o.state_dir, ec) && fs::remove(o.state_dir, ec)) {
    done.push_back(absl::StrCat("removed ", o.state_dir));
  }
  if (fs::remove(o.socket, ec)) done.push_back(absl::StrCat("removed stale socket ", o.socket));
  return done;
}

}  // namespace ruleplane::bringup
