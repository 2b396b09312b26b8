#include "agent/bringup/cni_conflist.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/coexist/proc_info.h"
#include "agent/common/status_macros.h"
#include "agent/common/unique_fd.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace ruleplane::bringup {
namespace {

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError("conflist: " + what); }

}  // namespace

absl::Status ValidateConflist(const std::string& json) {
  google::protobuf::Struct root;
  auto st = google::protobuf::util::JsonStringToMessage(json, &root);
  if (!st.ok()) return Invalid(absl::StrCat("not a JSON object: ", std::string(st.message())));
  const auto& f = root.fields();
  for (const char* key : {"cniVersion", "name"}) {
    auto it = f.find(key);
    if (it == f.end() || it->second.string_value().empty()) return Invalid(absl::StrCat("\"", key, "\" missing"));
  }
  auto plugins = f.find("plugins");
  if (plugins == f.end() || !plugins->second.has_list_value() || plugins->second.list_value().values().empty()) {
    return Invalid("\"plugins\" must be a non-empty list");
  }
  int ours = -1;
  const auto& list = plugins->second.list_value().values();
  for (int i = 0; i < list.size(); ++i) {
    if (!list[i].has_struct_value()) return Invalid(absl::StrCat("plugins[", i, "] is not an object"));
    const auto& pf = list[i].struct_value().fields();
    auto type = pf.find("type");
    if (type == pf.end() || type->second.string_value().empty()) {
      return Invalid(absl::StrCat("plugins[", i, "] has no \"type\""));
    }
    if (type->second.string_value() == "ruleplane") ours = i;
  }
  if (ours < 0) return Invalid("no plugin of type \"ruleplane\" in \"plugins\"");
  if (ours == 0) return Invalid("\"ruleplane\" is a chained plugin: it must follow a main plugin (bridge, ptp, ...)");
  return absl::OkStatus();
}

absl::StatusOr<std::string> LoadConflist(const std::string& path) {
  std::optional<std::string> text = coexist::ReadSmallFile(path, 1 << 20);
  if (!text) return absl::NotFoundError(absl::StrCat("conflist ", path, ": cannot read"));
  if (absl::Status s = ValidateConflist(*text); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return *text;
}

absl::StatusOr<bool> InstallConflist(const std::string& dir, const std::string& name, const std::string& content) {
  const std::string path = absl::StrCat(dir, "/", name);
  if (std::optional<std::string> existing = coexist::ReadSmallFile(path, 1 << 20); existing && *existing == content) {
    return false;
  }
  // A dot name without a .conf/.conflist/.json suffix: runtimes ignore it.
  const std::string tmp = absl::StrCat(dir, "/.", name, ".tmp");
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("install CNI config: open ", tmp));
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::unlink(tmp.c_str());
      return absl::ErrnoToStatus(errno, absl::StrCat("install CNI config: write ", tmp));
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) {
    ::unlink(tmp.c_str());
    return absl::ErrnoToStatus(errno, absl::StrCat("install CNI config: fsync ", tmp));
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat("install CNI config: rename to ", path));
  }
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.valid()) ::fsync(d.get());  // best effort: the rename itself is durable on the next sync anyway
  return true;
}

absl::StatusOr<bool> RemoveConflist(const std::string& dir, const std::string& name) {
  const std::string path = absl::StrCat(dir, "/", name);
  std::optional<std::string> existing = coexist::ReadSmallFile(path, 1 << 20);
  if (!existing) return false;
  if (!ValidateConflist(*existing).ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("uninstall: ", path, " is not a conflist chaining ruleplane; leaving it alone"));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("uninstall: remove ", path));
  }
  return true;
}

}  // namespace ruleplane::bringup
