// The plugin's process-level entry points. Deliberately free of gRPC,
// protobuf, abseil and JSON headers, so cni/main.cc compiles and links
// without those targets' usage requirements (see cni/CMakeLists.txt: the
// binary links its dependencies statically).
#pragma once

#include <map>
#include <string>

namespace ruleplane::cni {

// Runs the plugin once. `env` holds the process environment (only CNI_* is
// read), `stdin_bytes` the network configuration. Writes the CNI answer
// (prevResult for ADD, error JSON on failure, nothing for DEL/CHECK/GC/
// STATUS success) to `out` and one diagnostic line per failure to `err`.
// Returns the process exit code: 0 on success, 1 on any CNI error.
// Blocks for at most about the configured timeout (the agent call carries a
// deadline and never waits for the agent to become ready).
int RunPlugin(const std::map<std::string, std::string>& env, const std::string& stdin_bytes, std::string* out,
              std::string* err);

// Declares that this process runs RunPlugin once, writes its answer and
// _exits (cni/main.cc; an in-process caller such as a test must not call
// it). From then on the agent connection is not torn down after the call:
// closing the channel destroys gRPC's EventEngine and joins its threads,
// and the last reference runs grpc_shutdown, which joins the executor and
// timer threads; both only delay the answer, and _exit ends them anyway.
// Also turns off abseil's Mutex deadlock detection (on in Debian's abseil
// build, which does not define NDEBUG), which gRPC's locks pay for on every
// acquisition. Call before RunPlugin, from the only thread.
void SetOneShotProcess();

// The error answer (CNI code 5, I/O failure) for when stdin cannot be read;
// `reason` is the strerror text.
std::string StdinReadFailure(const std::string& reason);

}  // namespace ruleplane::cni
