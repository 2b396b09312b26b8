// StateStore: the desired state on disk, so a restart (or SIGKILL) loses no
// acknowledged mutation.
//
// Layout in the state dir:
//   checkpoint.pb   snapshot (ruleplane.v1.Checkpoint), written to a temp
//                   file, fsynced, renamed over, directory fsynced
//   journal.log     records [u32 length][u32 crc32][JournalRecord] appended
//                   with write(2) after each successful commit, BEFORE the
//                   commit's waiters are acknowledged; fdatasynced too only
//                   when Options::sync_journal (config journal_fsync)
// Why a journal next to the snapshot: rewriting a 100k-attachment snapshot
// after every commit would cost O(state) per commit. The journal is folded
// into a fresh snapshot once it outgrows the snapshot (Compact()).
// A torn journal tail (crash mid-append) is by construction unacknowledged
// and is dropped on load. Engine thread only.
//
// Why the journal is not fdatasynced per commit by default: what it must
// survive is the death of the agent process (crash, OOM kill, SIGKILL on a
// rollout), and a completed write(2) is in the page cache, which outlives the
// process. What it mirrors (the nftables ruleset, pinned BPF maps) does not
// survive a node crash or reboot at all; after a reboot the runtime creates
// every sandbox again and calls CNI ADD (and GC) again, so a journal record
// that reached the platter buys nothing there. An fdatasync per commit did
// cost: 0.3-4 ms per commit on a shared VM disk, >90% of a single mutation's
// latency, and every commit's waiters stall behind the disk of a busy node.
// journal_fsync=true keeps the old behaviour (e.g. a state dir on a disk
// that outlives the node's kernel state). The snapshot is always written
// temp + fsync + rename + directory fsync: it is rare and replaces a file.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/common/unique_fd.h"
#include "agent/core/desired_state.h"
#include "agent/core/types.h"

namespace ruleplane::txn {

class StateStore {
 public:
  struct Options {
    // fdatasync the journal after every Append (see the file comment).
    bool sync_journal = false;
  };
  // Creates the directory (0700) if needed and checks it is writable.
  // FailedPrecondition naming the path when it is not.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir, Options options);
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& dir) { return Open(dir, Options{}); }

  struct Loaded {
    bool found = false;       // a snapshot or journal existed
    std::string problem;      // non-empty: what was wrong (corrupt snapshot, torn tail...)
    bool corrupt = false;     // the snapshot could not be used at all
    core::DesiredState state;
    size_t journal_records = 0;
  };
  // Reads snapshot + journal. Never fails on bad content: reports it in
  // `problem`/`corrupt` so the caller can recover from the kernel instead.
  Loaded Load();

  // Appends the mutations of one commit (write(2); fdatasync as well with
  // Options::sync_journal). OK means a SIGKILL of the agent cannot lose them.
  // On error the journal is cut back to its size before the call, so a torn
  // record never sits in front of later ones; if even that fails, appends
  // are refused (FailedPrecondition) until WriteSnapshot() succeeds.
  [[nodiscard]] absl::Status Append(uint64_t commit_id, const std::vector<const core::Mutation*>& mutations);
  // Writes a snapshot of `state` and truncates the journal.
  [[nodiscard]] absl::Status WriteSnapshot(const core::DesiredState& state);
  // True when the journal has grown past the snapshot (time to compact).
  bool ShouldCompact() const;

  const std::string& dir() const { return dir_; }

 private:
  StateStore(std::string dir, Options options) : dir_(std::move(dir)), options_(options) {}
  absl::Status OpenJournal();

  std::string dir_;
  Options options_;
  UniqueFd journal_;
  size_t journal_bytes_ = 0;  // end of the last complete record
  size_t snapshot_bytes_ = 0;
  bool journal_damaged_ = false;  // a failed append could not be cut off
};

}  // namespace ruleplane::txn
