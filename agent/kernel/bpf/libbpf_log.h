// Routes libbpf's diagnostics into glog (STYLE.md section 7): libbpf must
// never write to stderr on its own.
#pragma once

namespace ruleplane::kernel::bpf {

// Installs the libbpf print callback: LIBBPF_WARN and LIBBPF_INFO at VLOG(1),
// LIBBPF_DEBUG at VLOG(2). Process-wide and idempotent; thread-safe. Called by
// every loader in this folder before its first libbpf call.
void RouteLibbpfLogsToGlog();

}  // namespace ruleplane::kernel::bpf
