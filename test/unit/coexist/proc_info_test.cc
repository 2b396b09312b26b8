#include "agent/coexist/proc_info.h"

#include <unistd.h>

#include "gtest/gtest.h"

namespace ruleplane::coexist {
namespace {

TEST(ParseProcLocks, HolderAndIndentedWaitersOfOneFile) {
  // As printed by Linux 6.x: waiters are "->" lines, deeper ones indented.
  const char* text =
      "1: FLOCK  ADVISORY  WRITE 21657 fe:00:10953012 0 EOF\n"
      "1: -> FLOCK  ADVISORY  WRITE 21661 fe:00:10953012 0 EOF\n"
      "1:  -> FLOCK  ADVISORY  READ 21663 fe:00:10953012 0 EOF\n"
      "2: POSIX  ADVISORY  WRITE 800 fe:00:42 0 EOF\n"
      "3: OFDLCK ADVISORY  WRITE -1 00:1a:10953012 0 EOF\n"
      "garbage line\n";
  std::vector<FileLock> l = ParseProcLocks(text, FileId{0xfe, 0, 10953012});
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].pid, 21657);
  EXPECT_FALSE(l[0].blocked);
  EXPECT_EQ(l[0].kind, "FLOCK");
  EXPECT_EQ(l[0].access, "WRITE");
  EXPECT_EQ(l[1].pid, 21661);
  EXPECT_TRUE(l[1].blocked);
  EXPECT_EQ(l[2].pid, 21663);
  EXPECT_TRUE(l[2].blocked);
  EXPECT_EQ(l[2].access, "READ");
  // Same inode on another device is another file.
  std::vector<FileLock> other = ParseProcLocks(text, FileId{0, 0x1a, 10953012});
  ASSERT_EQ(other.size(), 1u);
  EXPECT_EQ(other[0].pid, -1);
  EXPECT_EQ(other[0].kind, "OFDLCK");
}

TEST(ParseProcLocks, OldFormatWithArrowBeforeId) {
  std::vector<FileLock> l = ParseProcLocks(" -> 1: FLOCK  ADVISORY  WRITE 7 08:01:99 0 EOF\n", FileId{8, 1, 99});
  ASSERT_EQ(l.size(), 1u);
  EXPECT_TRUE(l[0].blocked);
  EXPECT_EQ(l[0].pid, 7);
}

TEST(ParseProcStat, CommWithSpacesAndParentheses) {
  std::string stat = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
  std::optional<ProcStat> s = ParseProcStat(stat);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->comm, "my (odd) name");
  EXPECT_EQ(s->state, 'S');
  EXPECT_EQ(s->ppid, 17);
  EXPECT_EQ(s->start_ticks, 123456u);
  EXPECT_FALSE(ParseProcStat("4242 (x) S").has_value());
}

TEST(CmdlineToString, NulsBecomeSpacesAndLongLinesAreCut) {
  EXPECT_EQ(CmdlineToString(std::string("iptables-restore\0-w\0--noflush\0", 30)), "iptables-restore -w --noflush");
  EXPECT_EQ(CmdlineToString(std::string(300, 'a'), 10), "aaaaaaaaaa...");
}

TEST(DisplayName, Argv0ExtendsTheTruncatedComm) {
  EXPECT_EQ(DisplayName("iptables-restor", "/usr/sbin/iptables-restore -w 5"), "iptables-restore");
  EXPECT_EQ(DisplayName("kube-proxy", "/usr/local/bin/kube-proxy --v=2"), "kube-proxy");
  // argv[0] that does not extend comm is not trusted.
  EXPECT_EQ(DisplayName("sh", "fake-name -c x"), "sh");
  EXPECT_EQ(DisplayName("kworker/0:1", ""), "kworker/0:1");
}

TEST(ReadProcess, OurselvesAndOurParent) {
  ProcessInfo p = ReadProcess("/proc", getpid());
  EXPECT_TRUE(p.known);
  EXPECT_EQ(p.ppid, getppid());
  EXPECT_FALSE(p.comm.empty());
  EXPECT_FALSE(p.cmdline.empty());
  EXPECT_FALSE(p.parent_name.empty());
  EXPECT_NE(Describe(p).find(std::string("child of ")), std::string::npos) << Describe(p);
  ProcessInfo gone = ReadProcess("/proc", 0x3fffffff);
  EXPECT_FALSE(gone.known);
  EXPECT_NE(Describe(gone).find("gone"), std::string::npos);
}

}  // namespace
}  // namespace ruleplane::coexist
