// Reading who is who from /proc: file locks (/proc/locks) and processes
// (/proc/<pid>/{comm,cmdline,stat}).
//
// Parsing is pure (text in, values out) so it is unit-tested with canned
// text; the Read* helpers only add the file reads. Nothing here opens the
// locked file or takes any lock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace ruleplane::coexist {

// The identity /proc/locks prints for a file: MAJOR:MINOR of the
// superblock's device (hex) and the inode number.
struct FileId {
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t inode = 0;
  bool operator==(const FileId&) const = default;
};

// One /proc/locks entry for the file we watch.
struct FileLock {
  pid_t pid = 0;         // as seen from our pid namespace; -1 for OFD locks
  std::string kind;      // FLOCK, POSIX, OFDLCK, LEASE, ...
  std::string access;    // WRITE, READ, ...
  bool blocked = false;  // a waiter (the "->" lines under the lock it waits for)
};

// Keeps the entries of `id`, holders and waiters in file order. Lines it
// cannot read are skipped (the format gained indentation over the years).
std::vector<FileLock> ParseProcLocks(absl::string_view text, const FileId& id);

// Fields of /proc/<pid>/stat we use. comm sits between the first '(' and the
// LAST ')' (it may itself contain spaces and parentheses).
struct ProcStat {
  std::string comm;
  char state = '?';
  pid_t ppid = 0;
  uint64_t start_ticks = 0;  // field 22: start time after boot, in clock ticks
};
std::optional<ProcStat> ParseProcStat(absl::string_view text);

// argv as one line: NULs become spaces, trailing NULs dropped, capped at
// `max_bytes` with "..." appended when cut.
std::string CmdlineToString(absl::string_view raw, size_t max_bytes = 256);

// A process and its parent, as far as /proc still shows them.
struct ProcessInfo {
  pid_t pid = 0;
  bool known = false;  // /proc/<pid> was readable when we looked
  // comm is capped at 15 bytes by the kernel ("iptables-restor"); `name` is
  // argv[0]'s basename when it starts with comm, so "iptables-restore".
  std::string comm;
  std::string name;
  std::string cmdline;
  pid_t ppid = 0;
  std::string parent_name;
  std::string parent_cmdline;
};

// The display name rule above, pure.
std::string DisplayName(absl::string_view comm, absl::string_view cmdline);

// Reads /proc/<pid> and /proc/<ppid> under `proc_root` ("/proc").
ProcessInfo ReadProcess(const std::string& proc_root, pid_t pid);

// "iptables-restore (pid 812) child of kube-proxy (pid 90)"; "pid 812
// (gone)" when /proc no longer had it.
std::string Describe(const ProcessInfo& p);

// Whole small file (e.g. under /proc) or nullopt.
std::optional<std::string> ReadSmallFile(const std::string& path, size_t max_bytes = 1 << 20);

}  // namespace ruleplane::coexist
