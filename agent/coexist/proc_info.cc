#include "agent/coexist/proc_info.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/common/unique_fd.h"

namespace ruleplane::coexist {
namespace {

bool ParseHex(absl::string_view s, uint32_t* out) {
  if (s.empty() || s.size() > 8) return false;
  uint32_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return false;
    }
    v = v * 16 + static_cast<uint32_t>(d);
  }
  *out = v;
  return true;
}

// "fe:00:10953012" -> FileId.
std::optional<FileId> ParseFileToken(absl::string_view tok) {
  std::vector<absl::string_view> parts = absl::StrSplit(tok, ':');
  if (parts.size() != 3) return std::nullopt;
  FileId id;
  if (!ParseHex(parts[0], &id.major) || !ParseHex(parts[1], &id.minor)) return std::nullopt;
  if (!absl::SimpleAtoi(parts[2], &id.inode)) return std::nullopt;
  return id;
}

bool IsKind(absl::string_view t) {
  return t == "FLOCK" || t == "POSIX" || t == "OFDLCK" || t == "LEASE" || t == "DELEG" || t == "ACCESS" ||
         t == "UNKNOWN";
}

bool IsAccess(absl::string_view t) {
  return t == "WRITE" || t == "READ" || t == "UNLCK" || t == "RW" || t == "NONE";
}

}  // namespace

std::vector<FileLock> ParseProcLocks(absl::string_view text, const FileId& id) {
  std::vector<FileLock> out;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> toks = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (toks.size() < 4) continue;
    FileLock lock;
    std::optional<FileId> file;
    for (size_t i = 0; i < toks.size(); ++i) {
      absl::string_view t = toks[i];
      if (t == "->") {
        lock.blocked = true;
      } else if (lock.kind.empty() && IsKind(t)) {
        lock.kind = std::string(t);
      } else if (lock.access.empty() && !lock.kind.empty() && IsAccess(t)) {
        lock.access = std::string(t);
      } else if (!file && i > 0 && !lock.access.empty() && (file = ParseFileToken(t))) {
        int pid = 0;
        if (!absl::SimpleAtoi(toks[i - 1], &pid)) file.reset();
        lock.pid = pid;
        break;
      }
    }
    if (file && *file == id) out.push_back(std::move(lock));
  }
  return out;
}

std::optional<ProcStat> ParseProcStat(absl::string_view text) {
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == absl::string_view::npos || close == absl::string_view::npos || close < open) return std::nullopt;
  ProcStat st;
  st.comm = std::string(text.substr(open + 1, close - open - 1));
  // After ") ": field 3 (state), 4 (ppid), ... 22 (starttime).
  std::vector<absl::string_view> f = absl::StrSplit(text.substr(close + 1), ' ', absl::SkipEmpty());
  if (f.size() < 20 || f[0].size() != 1) return std::nullopt;
  st.state = f[0][0];
  int ppid = 0;
  if (!absl::SimpleAtoi(f[1], &ppid)) return std::nullopt;
  st.ppid = ppid;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(f[19]), &st.start_ticks)) return std::nullopt;
  return st;
}

std::string CmdlineToString(absl::string_view raw, size_t max_bytes) {
  while (!raw.empty() && raw.back() == '\0') raw.remove_suffix(1);
  std::string out;
  out.reserve(std::min(raw.size(), max_bytes + 3));
  for (char c : raw) {
    if (out.size() >= max_bytes) {
      out += "...";
      break;
    }
    out.push_back(c == '\0' || c == '\n' ? ' ' : c);
  }
  return out;
}

std::string DisplayName(absl::string_view comm, absl::string_view cmdline) {
  absl::string_view argv0 = cmdline.substr(0, cmdline.find(' '));
  size_t slash = argv0.rfind('/');
  if (slash != absl::string_view::npos) argv0.remove_prefix(slash + 1);
  // comm is the first 15 bytes of the executable's name; argv[0] may be set
  // freely by the caller, so only trust it when it extends comm.
  if (!comm.empty() && argv0.size() > comm.size() && absl::StartsWith(argv0, comm)) return std::string(argv0);
  return std::string(comm);
}

std::optional<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < max_bytes) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

namespace {

void ReadOne(const std::string& proc_root, pid_t pid, std::string* name, std::string* cmdline, pid_t* ppid,
             std::string* comm, bool* known) {
  const std::string dir = absl::StrCat(proc_root, "/", pid);
  std::optional<std::string> stat = ReadSmallFile(dir + "/stat", 4096);
  std::optional<ProcStat> ps = stat ? ParseProcStat(*stat) : std::nullopt;
  if (!ps) return;
  *known = true;
  if (ppid) *ppid = ps->ppid;
  std::optional<std::string> raw = ReadSmallFile(dir + "/cmdline", 4096);
  *cmdline = raw ? CmdlineToString(*raw) : "";
  // comm from stat and from /proc/<pid>/comm are the same text.
  if (comm) *comm = ps->comm;
  *name = DisplayName(ps->comm, *cmdline);
}

}  // namespace

ProcessInfo ReadProcess(const std::string& proc_root, pid_t pid) {
  ProcessInfo p;
  p.pid = pid;
  if (pid <= 0) return p;
  ReadOne(proc_root, pid, &p.name, &p.cmdline, &p.ppid, &p.comm, &p.known);
  if (p.known && p.ppid > 0) {
    bool parent_known = false;
    ReadOne(proc_root, p.ppid, &p.parent_name, &p.parent_cmdline, nullptr, nullptr, &parent_known);
  }
  return p;
}

std::string Describe(const ProcessInfo& p) {
  if (p.pid < 0) return "an open file description lock (no owning pid)";
  if (!p.known) return absl::StrCat("pid ", p.pid, " (gone before it could be read)");
  std::string out = absl::StrCat(p.name, " (pid ", p.pid, ")");
  if (p.ppid > 0) {
    absl::StrAppend(&out, " child of ", p.parent_name.empty() ? "?" : p.parent_name, " (pid ", p.ppid, ")");
  }
  return out;
}

}  // namespace ruleplane::coexist
