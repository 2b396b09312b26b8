#include "agent/kernel/bpf/libbpf_log.h"

#include <bpf/libbpf.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"

namespace ruleplane::kernel::bpf {
namespace {

int LibbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  const int verbosity = level == LIBBPF_DEBUG ? 2 : 1;
  if (!VLOG_IS_ON(verbosity)) return 0;
  // libbpf prints one line per call; longer lines (verifier logs go through
  // our own buffers, not here) are truncated rather than allocated for.
  char buf[1024];
  const int n = std::vsnprintf(buf, sizeof(buf), format, args);
  if (n < 0) return 0;
  absl::string_view line(buf, std::min<size_t>(static_cast<size_t>(n), sizeof(buf) - 1));
  line = absl::StripSuffix(line, "\n");
  VLOG(verbosity) << line;  // libbpf prefixes its own "libbpf: "
  return n;
}

}  // namespace

void RouteLibbpfLogsToGlog() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(&LibbpfPrint); });
}

}  // namespace ruleplane::kernel::bpf
