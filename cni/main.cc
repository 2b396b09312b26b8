// `ruleplane`: the chained CNI plugin. Process I/O only; the logic is
// RunPlugin (cni/plugin.h).
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "cni/run.h"

extern char** environ;

namespace {

bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads all of stdin; false with errno set on a read error.
bool ReadAll(int fd, std::string* out) {
  char buf[16384];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) return true;
    out->append(buf, static_cast<size_t>(n));
  }
}

}  // namespace

int main() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const char* kv = *e;
    if (std::strncmp(kv, "CNI_", 4) != 0) continue;
    const char* eq = std::strchr(kv, '=');
    if (eq == nullptr) continue;
    env.emplace(std::string(kv, eq), std::string(eq + 1));
  }

  std::string input;
  std::string out;
  std::string err;
  int rc = 0;
  auto command = env.find("CNI_COMMAND");
  // VERSION ignores its stdin; not reading it keeps a manual
  // `CNI_COMMAND=VERSION ruleplane` from waiting on a terminal.
  bool needs_stdin = command == env.end() || command->second != "VERSION";
  if (needs_stdin && !ReadAll(STDIN_FILENO, &input)) {
    int saved = errno;
    out = ruleplane::cni::StdinReadFailure(std::strerror(saved));
    rc = 1;
  } else {
    ruleplane::cni::SetOneShotProcess();
    rc = ruleplane::cni::RunPlugin(env, input, &out, &err);
  }
  // Best effort: if stdout is gone there is nobody left to tell.
  (void)WriteAll(STDOUT_FILENO, out);
  (void)WriteAll(STDERR_FILENO, err);
  // _exit: the answer is written; skip static destructors and gRPC's
  // shutdown, which can only add latency (or wait) after that.
  _exit(rc);
}
