// The CNI network configuration the container runtime reads.
//
// The runtime reports the node's network ready as soon as a conflist exists
// in its conf dir, so the agent writes it only once it can serve pod setup
// (ready), atomically (temp file + rename in the same dir: the runtime never
// sees half a file), and leaves it in place on a plain restart (pods set up
// while the agent restarts get a clear "agent unreachable" CNI error and are
// retried by kubelet). Only an explicit uninstall removes it.
//
// The content is the operator's conflist (a file, e.g. from the ConfigMap):
// a main plugin followed by {"type": "ruleplane"}. It is validated, never
// rewritten, so what the operator reviewed is what the runtime reads.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace ruleplane::bringup {

// A JSON object with "cniVersion", "name" and a "plugins" list whose entries
// all have a "type", one of which is "ruleplane" and not the first (it is a
// chained plugin). InvalidArgument naming what is wrong.
absl::Status ValidateConflist(const std::string& json);

// Reads and validates `path`.
absl::StatusOr<std::string> LoadConflist(const std::string& path);

// Writes `content` as <dir>/<name> atomically. Returns false when the file
// already had exactly this content (nothing written).
absl::StatusOr<bool> InstallConflist(const std::string& dir, const std::string& name, const std::string& content);

// Removes <dir>/<name> if it is a conflist that chains ruleplane (never
// someone else's file). Returns whether a file was removed.
absl::StatusOr<bool> RemoveConflist(const std::string& dir, const std::string& name);

}  // namespace ruleplane::bringup
