#include "agent/txn/engine.h"

#include <linux/netfilter.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "agent/common/status_macros.h"
#include "glog/logging.h"

namespace ruleplane::txn {
namespace {

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

std::string Ms(absl::Duration d) { return absl::StrCat(absl::ToDoubleMilliseconds(d), "ms"); }

// Latency buckets from 50us to ~26s.
std::vector<double> LatencyBuckets() { return metrics::ExponentialBuckets(0.00005, 2, 20); }

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(EngineOptions options,
                                                       std::unique_ptr<NftPort> port,
                                                       metrics::Registry* registry) {
  ASSIGN_OR_RETURN(std::unique_ptr<StateStore> store, StateStore::Open(options.state_dir, StateStore::Options{options.journal_fsync}));
  return std::unique_ptr<Engine>(
      new Engine(std::move(options), std::move(port), std::move(store), registry));
}

Engine::Engine(EngineOptions options, std::unique_ptr<NftPort> port,
               std::unique_ptr<StateStore> store, metrics::Registry* registry)
    : options_(std::move(options)),
      layout_(options_.layout),
      base_(backend::RenderFullBase(layout_)),
      port_(std::move(port)),
      store_(std::move(store)) {
  auto& r = *registry;
  queue_wait_ = r.GetHistogram("ruleplane_txn_queue_wait_seconds",
                               "Time a mutation waited in the queue before the writer took it",
                               LatencyBuckets());
  commit_seconds_ = r.GetHistogram("ruleplane_txn_commit_seconds",
                                   "Netlink round trip of one nftables batch commit", LatencyBuckets());
  render_seconds_ = r.GetHistogram("ruleplane_txn_render_seconds",
                                   "Time to apply a batch to the model and render its ops",
                                   LatencyBuckets());
  batch_mutations_ = r.GetHistogram("ruleplane_txn_batch_mutations",
                                    "Mutations folded into one commit",
                                    metrics::ExponentialBuckets(1, 2, 18));
  const std::string commits_help = "nftables batch commits by result";
  commits_ok_ = r.GetCounter("ruleplane_txn_commits_total", commits_help, {{"result", "success"}});
  commits_failed_ = r.GetCounter("ruleplane_txn_commits_total", commits_help, {{"result", "error"}});
  commits_unknown_ = r.GetCounter("ruleplane_txn_commits_total", commits_help, {{"result", "unknown"}});
  const std::string mut_help = "Mutations completed by result";
  mutations_ok_ = r.GetCounter("ruleplane_txn_mutations_total", mut_help, {{"result", "success"}});
  mutations_rejected_ = r.GetCounter("ruleplane_txn_mutations_total", mut_help, {{"result", "error"}});
  queue_depth_ = r.GetGauge("ruleplane_txn_queue_depth", "Mutations waiting for the writer");
  last_commit_ts_ = r.GetGauge("ruleplane_txn_last_commit_timestamp_seconds",
                               "Unix time of the last successful commit");
  last_queued_ts_ = r.GetGauge("ruleplane_txn_last_queued_timestamp_seconds",
                               "Unix time a mutation was last queued");
  drift_repairs_total_ = r.GetCounter("ruleplane_drift_repairs_total",
                                      "Times the agent re-asserted its table after someone else changed it");
  persist_errors_ = r.GetCounter("ruleplane_state_persist_errors_total",
                                 "Failures writing the journal or checkpoint");
  attachments_ = r.GetGauge("ruleplane_attachments", "Attachments in the desired state");
  elements_ = r.GetGauge("ruleplane_nft_elements", "Set and map elements the agent owns");
  dataplane_errors_ = r.GetCounter("ruleplane_dataplane_errors_total",
                                   "Failed updates of the BPF dataplane (retried by converging again)");
  dataplane_syncs_ = r.GetCounter("ruleplane_dataplane_converges_total",
                                  "Full convergences of the BPF dataplane (start, reload, resync, retry)");
  snat_backend_ = backend::MakeSnatBackend(layout_.snat);
  snat_mode_.store(layout_.snat.mode);
}

Engine::~Engine() { Stop(); }

render::Plan Engine::MakePlan(std::vector<render::Op> ops) const {
  render::Plan plan;
  plan.table = layout_.table;
  plan.family = NFPROTO_INET;
  plan.ops = std::move(ops);
  return plan;
}

DesiredElements Engine::DesiredElementsNow() const {
  DesiredElements out;
  for (const render::SetSpec& s : base_.sets) {
    std::vector<render::Element> v = index_.ElementsIn(s.name);
    if (!v.empty()) out.emplace(s.name, std::move(v));
  }
  // Configuration and dynamic elements live in sets no pod writes to.
  for (const render::SetElement& se : base_.elements) out[se.set].push_back(se.element);
  for (const auto& [set, elements] : dynamic_) {
    for (const auto& [id, e] : elements) out[set].push_back(e);
  }
  return out;
}

namespace {

// The IPv4 pod addresses of a committed plan's pod-ipv4 element ops.
void PodDelta(const render::Plan& plan, std::vector<render::Ipv4Bytes>& added,
              std::vector<render::Ipv4Bytes>& removed) {
  auto take = [](const std::vector<render::Element>& elements, std::vector<render::Ipv4Bytes>& out) {
    for (const render::Element& e : elements) {
      if (e.key.size() == 4) out.push_back({e.key[0], e.key[1], e.key[2], e.key[3]});
    }
  };
  for (const render::Op& o : plan.ops) {
    if (const auto* a = std::get_if<render::op::AddElements>(&o); a && a->set == render::kSetPodIpv4) {
      take(a->elements, added);
    }
    if (const auto* d = std::get_if<render::op::DeleteElements>(&o); d && d->set == render::kSetPodIpv4) {
      take(d->elements, removed);
    }
  }
}

}  // namespace

absl::Status Engine::SyncDataplane(const std::string& why) {
  render::BpfSnatPlan plan = snat_backend_->PlanBpf();
  if (!options_.dataplane) {
    dataplane_dirty_ = false;
    if (!plan.enabled) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "snat_mode bpf: this agent has no BPF dataplane (built with RULEPLANE_BUILD_BPF=OFF)");
  }
  std::vector<render::Ipv4Bytes> pods;
  if (plan.enabled) {
    for (const render::Element& e : index_.ElementsIn(render::kSetPodIpv4)) {
      if (e.key.size() == 4) pods.push_back({e.key[0], e.key[1], e.key[2], e.key[3]});
    }
  }
  dataplane_syncs_->Increment();
  const absl::Time t0 = absl::Now();
  absl::Status s = options_.dataplane->Converge(plan, pods);
  if (!s.ok()) {
    dataplane_errors_->Increment();
    dataplane_dirty_ = true;
    dataplane_retry_at_ = absl::Now() + options_.dataplane_retry;
    LOG_EVERY_T(ERROR, 5) << "dataplane converge (" << why << ") failed, will retry: " << s;
    return s;
  }
  if (dataplane_dirty_ || plan.enabled) {
    LOG(INFO) << "dataplane converged (" << why << "): " << options_.dataplane->Describe()
              << " took=" << Ms(absl::Now() - t0);
  }
  dataplane_dirty_ = false;
  return absl::OkStatus();
}

void Engine::UpdateDataplanePods(const render::Plan& committed) {
  if (!options_.dataplane || dataplane_dirty_ || !snat_backend_->PlanBpf().enabled) return;
  std::vector<render::Ipv4Bytes> added, removed;
  PodDelta(committed, added, removed);
  if (added.empty() && removed.empty()) return;
  if (absl::Status s = options_.dataplane->UpdatePods(added, removed); !s.ok()) {
    // The pods are committed to nftables and journaled; the BPF map catches
    // up with a full converge shortly (Run() retries).
    dataplane_errors_->Increment();
    dataplane_dirty_ = true;
    dataplane_retry_at_ = absl::Now();
    LOG_EVERY_T(ERROR, 5) << "dataplane pod update failed, converging again: " << s;
  }
}

absl::Status Engine::SetDynamicElements(std::vector<render::SetElement> elements, absl::Duration timeout) {
  auto result = std::make_shared<absl::Status>();
  absl::Status queued = RunOnWriter(
      [this, elements = std::move(elements), result]() mutable {
        std::map<std::string, std::map<std::pair<std::vector<uint8_t>, uint32_t>, render::Element>> want;
        for (const std::string& set : base_.dynamic_sets) want[set];
        for (render::SetElement& se : elements) {
          auto it = want.find(se.set);
          if (it == want.end()) {
            *result = absl::InvalidArgumentError(
                absl::StrCat("set dynamic elements: ", se.set, " is not a dynamic set of the current ruleset"));
            return;
          }
          std::pair<std::vector<uint8_t>, uint32_t> id{se.element.key, se.element.flags};
          it->second[id] = std::move(se.element);
        }
        std::vector<render::Op> deletes, adds;
        for (auto& [set, wanted] : want) {
          render::op::DeleteElements del{set, {}};
          render::op::AddElements add{set, {}};
          const auto& have = dynamic_[set];
          for (const auto& [id, e] : have) {
            auto w = wanted.find(id);
            if (w == wanted.end() || w->second.data != e.data) del.elements.push_back(e);
          }
          for (const auto& [id, e] : wanted) {
            auto h = have.find(id);
            if (h == have.end() || h->second.data != e.data) add.elements.push_back(e);
          }
          if (!del.elements.empty()) deletes.push_back(std::move(del));
          if (!add.elements.empty()) adds.push_back(std::move(add));
        }
        for (render::Op& a : adds) deletes.push_back(std::move(a));
        if (deletes.empty()) return;
        CommitInfo info;
        info.id = next_commit_id_++;
        info.kind = "dynamic";
        info.reason = "snat failover steering";
        info.start = absl::Now();
        info.attempts = 1;
        render::Plan plan = MakePlan(std::move(deletes));
        info.elements = plan.ElementCount();
        CommitReport report = port_->Commit(plan);
        info.commit = absl::Now() - info.start;
        info.messages = report.messages;
        info.status = report.status;
        commit_seconds_->Observe(Seconds(info.commit));
        if (!report.errors.empty()) info.failing_op = render::OpSummary(plan.ops[report.errors[0].op_index]);
        if (report.status.ok()) {
          commits_ok_->Increment();
          for (auto& [set, wanted] : want) dynamic_[set] = std::move(wanted);
          LOG(INFO) << "commit id=" << info.id << " kind=dynamic elements=" << info.elements
                    << " commit=" << Ms(info.commit) << " result=ok";
        } else {
          (report.outcome_unknown ? commits_unknown_ : commits_failed_)->Increment();
          // The kernel's copy may differ from what we believed: read it back.
          RequestResync(absl::StrCat("dynamic elements refused: ", report.status.message()));
          *result = report.status;
        }
        RecordCommit(std::move(info));
      },
      timeout);
  if (!queued.ok()) return queued;
  return *result;
}

absl::Status Engine::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return absl::FailedPreconditionError("engine already started");
  }
  StateStore::Loaded loaded = store_->Load();
  if (!loaded.problem.empty()) {
    LOG(WARNING) << "state dir " << store_->dir() << ": " << loaded.problem;
  }
  state_ = std::move(loaded.state);
  for (const auto& [key, a] : state_.attachments()) {
    index_.Apply(key, nullptr, &a, 0);
  }
  index_.DiscardDelta();
  LOG(INFO) << "checkpoint loaded: found=" << loaded.found << " attachments=" << state_.size()
            << " journal_records=" << loaded.journal_records;
  // Bring-up report (agent/bringup): one callback per step of Start().
  auto phase = [this](const char* name, bool ok, const std::string& detail) {
    if (options_.on_start_phase) options_.on_start_phase(name, ok, detail);
  };
  phase("checkpoint loaded", true,
        absl::StrCat("found=", loaded.found, " attachments=", state_.size(), " journal_records=",
                     loaded.journal_records, loaded.problem.empty() ? "" : " problem: " + loaded.problem));

  absl::StatusOr<KernelTable> dumped = port_->Dump(options_.layout.table, NFPROTO_INET);
  if (!dumped.ok()) {
    phase("kernel state adopted", false, std::string(dumped.status().message()));
    return dumped.status();
  }
  KernelTable kernel = *std::move(dumped);
  // Dynamic elements (SNAT failover steering) are measurements, not
  // desired state: keep what the previous agent left until the monitor
  // recomputes them.
  for (const std::string& set : base_.dynamic_sets) {
    auto it = kernel.sets.find(set);
    if (it == kernel.sets.end()) continue;
    for (const KernelElement& k : it->second.elements) {
      dynamic_[set][{k.key, k.flags}] = render::Element{k.key, k.data, k.comment, "", 0, k.flags};
    }
  }
  if ((!loaded.found || loaded.corrupt) && kernel.exists) {
    // No usable checkpoint but our table is in the kernel: keep its elements
    // (traffic keeps flowing) until the next garbage collection decides.
    std::vector<render::SetElement> orphans;
    for (const auto& [name, set] : kernel.sets) {
      for (const KernelElement& k : set.elements) {
        orphans.push_back({name, render::Element{k.key, k.data, k.comment, "", 0}});
      }
    }
    index_.AdoptOrphans(orphans);
    index_.DiscardDelta();
    LOG(WARNING) << "no usable checkpoint; adopted " << index_.orphans()
                 << " elements from the kernel as orphans until the next CNI GC";
    snapshot_needed_ = true;
  }
  if (loaded.corrupt || !loaded.problem.empty()) snapshot_needed_ = true;

  ReconcileSummary summary;
  absl::Time t0 = absl::Now();
  std::vector<render::Op> ops = Reconcile(base_, DesiredElementsNow(), kernel, &summary);
  CommitInfo info;
  info.id = next_commit_id_++;
  info.kind = "adopt";
  info.start = t0;
  info.render = absl::Now() - t0;
  info.attempts = 1;
  // Always (re)claim the table: with NFT_TABLE_F_OWNER a previous owner's
  // orphaned table must be adopted by this process's socket.
  if (kernel.exists && (ops.empty() || !std::holds_alternative<render::op::AddTable>(ops.front()))) {
    ops.insert(ops.begin(), render::op::AddTable{base_.table});
  }
  render::Plan plan = MakePlan(std::move(ops));
  info.elements = plan.ElementCount();
  phase("kernel state adopted", true,
        absl::StrCat("table existed=", kernel.exists, " ", summary.ToString(), " orphans=", index_.orphans()));
  absl::Time c0 = absl::Now();
  CommitReport report = port_->Commit(plan);
  info.commit = absl::Now() - c0;
  info.messages = report.messages;
  info.status = report.status;
  commit_seconds_->Observe(Seconds(info.commit));
  if (!report.status.ok()) {
    commits_failed_->Increment();
    if (!report.errors.empty()) info.failing_op = render::OpSummary(plan.ops[report.errors[0].op_index]);
    RecordCommit(info);
    phase("base ruleset committed", false, std::string(report.status.message()));
    return absl::Status(report.status.code(),
                        absl::StrCat("commit base ruleset of table inet ", options_.layout.table, ": ",
                                     report.status.message()));
  }
  phase("base ruleset committed", true,
        absl::StrCat("messages=", report.messages, " elements=", info.elements, " commit=", Ms(info.commit)));
  commits_ok_->Increment();
  last_commit_ts_->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  RecordCommit(info);
  LOG(INFO) << "adopted table inet " << options_.layout.table << ": existed=" << kernel.exists << " "
            << summary.ToString() << " messages=" << report.messages << " commit=" << Ms(info.commit);

  if (snapshot_needed_) {
    if (absl::Status s = store_->WriteSnapshot(state_); s.ok()) {
      snapshot_needed_ = false;
    } else {
      persist_errors_->Increment();
      LOG(ERROR) << "write checkpoint: " << s;
    }
  }
  attachments_->Set(static_cast<double>(state_.size()));
  elements_->Set(static_cast<double>(index_.size()));

  // The BPF dataplane (or its removal when the mode is no longer bpf). A
  // dataplane that cannot be set up fails the start: pods would leave
  // untranslated.
  if (absl::Status s = SyncDataplane("start"); !s.ok()) {
    phase("dataplane converged", false, std::string(s.message()));
    return absl::Status(s.code(), absl::StrCat("snat dataplane: ", s.message()));
  }

  {
    absl::MutexLock lock(&mu_);
    started_ = true;
  }
  writer_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

void Engine::Stop() {
  std::deque<Item> leftovers;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    cv_.SignalAll();
  }
  if (writer_.joinable()) writer_.join();
  // The dataplane keeps translating while no agent runs (restart safety).
  if (options_.dataplane) options_.dataplane->Release();
  {
    absl::MutexLock lock(&mu_);
    leftovers.swap(pending_);
  }
  MutationResult stopped{absl::UnavailableError("agent is shutting down"), 0, {}, {}};
  for (Item& item : leftovers) {
    if (item.done) std::move(item.done)(stopped);
  }
}

void Engine::Submit(core::Mutation m, Done done) {
  absl::Time now = absl::Now();
  last_queued_ts_->Set(absl::ToDoubleSeconds(now - absl::UnixEpoch()));
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      Item item;
      item.id = next_item_id_++;
      item.mutation = std::move(m);
      item.done = std::move(done);
      item.enqueued = now;
      pending_.push_back(std::move(item));
      queue_depth_->Set(static_cast<double>(pending_.size()));
      cv_.Signal();
      return;
    }
  }
  std::move(done)(MutationResult{absl::UnavailableError("agent is shutting down"), 0, {}, {}});
}

MutationResult Engine::SubmitAndWait(core::Mutation m, absl::Duration timeout) {
  struct Shared {
    absl::Notification done;
    MutationResult result;
  };
  auto shared = std::make_shared<Shared>();
  Submit(std::move(m), [shared](const MutationResult& r) {
    shared->result = r;
    shared->done.Notify();
  });
  if (!shared->done.WaitForNotificationWithTimeout(timeout)) {
    return MutationResult{absl::DeadlineExceededError(absl::StrCat(
                              "mutation not committed within ", absl::FormatDuration(timeout))),
                          0, timeout, {}};
  }
  return shared->result;
}

void Engine::RequestResync(std::string reason) {
  absl::MutexLock lock(&mu_);
  if (resync_reason_.empty()) {
    resync_reason_ = std::move(reason);
  } else if (resync_reason_.size() < 512) {
    absl::StrAppend(&resync_reason_, "; ", reason);
  }
  cv_.Signal();
}

absl::Status Engine::Inspect(
    absl::AnyInvocable<void(const core::DesiredState&, const render::ElementIndex&) &&> fn,
    absl::Duration timeout) {
  return RunOnWriter([this, fn = std::move(fn)]() mutable { std::move(fn)(state_, index_); }, timeout);
}

absl::Status Engine::Reconfigure(render::Layout layout, absl::Duration timeout) {
  if (layout.table != options_.layout.table) {
    return absl::FailedPreconditionError(absl::StrCat("table: changing \"", options_.layout.table, "\" to \"",
                                                      layout.table, "\" needs a restart"));
  }
  auto result = std::make_shared<absl::Status>();
  absl::Status queued = RunOnWriter(
      [this, layout = std::move(layout), result]() mutable {
        render::Layout previous = layout_;
        render::BaseRuleset previous_base = std::move(base_);
        std::unique_ptr<backend::SnatBackend> previous_backend = std::move(snat_backend_);
        auto previous_dynamic = dynamic_;
        layout_ = std::move(layout);
        base_ = backend::RenderFullBase(layout_);
        snat_backend_ = backend::MakeSnatBackend(layout_.snat);
        // Dynamic elements of sets that no longer exist go with their sets.
        for (auto it = dynamic_.begin(); it != dynamic_.end();) {
          const bool kept = std::find(base_.dynamic_sets.begin(), base_.dynamic_sets.end(), it->first) !=
                            base_.dynamic_sets.end();
          it = kept ? std::next(it) : dynamic_.erase(it);
        }
        auto rollback = [&] {
          // Keep running with what the kernel still has.
          layout_ = std::move(previous);
          base_ = std::move(previous_base);
          snat_backend_ = std::move(previous_backend);
          dynamic_ = std::move(previous_dynamic);
          snat_mode_.store(layout_.snat.mode);
          SyncDataplane("reconfigure rolled back").IgnoreError();  // logged and retried inside
        };
        // A BPF dataplane being enabled or changed comes up before the
        // nftables rules of the previous mode go, so new flows are translated
        // throughout; one being disabled goes after them (end of ResyncNow).
        if (snat_backend_->PlanBpf().enabled) {
          if (absl::Status s = SyncDataplane("reconfigure"); !s.ok()) {
            *result = absl::Status(s.code(), absl::StrCat("snat dataplane: ", s.message()));
            rollback();
            return;
          }
        }
        snat_mode_.store(layout_.snat.mode);
        *result = ResyncNow("reconfigure", "configuration reloaded");
        if (!result->ok()) rollback();
      },
      timeout);
  if (!queued.ok()) return queued;
  return *result;
}

absl::Status Engine::RunOnWriter(absl::AnyInvocable<void() &&> task, absl::Duration timeout) {
  auto done = std::make_shared<absl::Notification>();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ || !started_) return absl::UnavailableError("engine is not running");
    Item item;
    item.id = next_item_id_++;
    item.enqueued = absl::Now();
    item.task = [task = std::move(task), done]() mutable {
      std::move(task)();
      done->Notify();
    };
    pending_.push_back(std::move(item));
    cv_.Signal();
  }
  if (!done->WaitForNotificationWithTimeout(timeout)) {
    return absl::DeadlineExceededError("the writer did not run the task in time");
  }
  return absl::OkStatus();
}

size_t Engine::QueueDepth() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

std::vector<CommitInfo> Engine::RecentCommits() const {
  absl::MutexLock lock(&history_mu_);
  return std::vector<CommitInfo>(history_.begin(), history_.end());
}

void Engine::RecordCommit(CommitInfo info) {
  std::optional<CommitInfo> copy;
  if (options_.on_commit) copy = info;
  {
    absl::MutexLock lock(&history_mu_);
    history_.push_back(std::move(info));
    while (history_.size() > options_.history) history_.pop_front();
  }
  if (copy) options_.on_commit(*copy);
}

void Engine::Run() {
  for (;;) {
    std::vector<Item> batch;
    std::string resync;
    {
      absl::MutexLock lock(&mu_);
      // last_full_sync_ is writer state; this lambda runs on the writer.
      auto periodic_due = [this] {
        return options_.periodic_resync > absl::ZeroDuration() &&
               absl::Now() - last_full_sync_ > options_.periodic_resync;
      };
      // Writer state too: a failed dataplane update is retried on time.
      auto dataplane_due = [this] { return dataplane_dirty_ && absl::Now() >= dataplane_retry_at_; };
      auto has_work = [this, &periodic_due, &dataplane_due]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty() || periodic_due() || dataplane_due() ||
               (!resync_reason_.empty() && absl::Now() >= resync_not_before_);
      };
      while (!has_work()) {
        absl::Duration wait = resync_reason_.empty() ? absl::Seconds(1) : resync_not_before_ - absl::Now();
        if (options_.periodic_resync > absl::ZeroDuration()) {
          wait = std::min(wait, last_full_sync_ + options_.periodic_resync - absl::Now());
        }
        if (dataplane_dirty_) wait = std::min(wait, dataplane_retry_at_ - absl::Now());
        cv_.WaitWithTimeout(&mu_, std::max(wait, absl::Milliseconds(1)));
      }
      if (stopping_) return;
      if (resync_reason_.empty() && periodic_due()) resync_reason_ = "periodic full sync";
      // Take every pending mutation (up to the cap), stopping before an
      // inspection task so it observes exactly the state before it.
      while (!pending_.empty() && batch.size() < options_.max_batch_mutations) {
        if (pending_.front().task) {
          if (batch.empty()) {
            batch.push_back(std::move(pending_.front()));
            pending_.pop_front();
          }
          break;
        }
        batch.push_back(std::move(pending_.front()));
        pending_.pop_front();
      }
      queue_depth_->Set(static_cast<double>(pending_.size()));
      if (absl::Now() >= resync_not_before_) resync.swap(resync_reason_);
    }
    if (!resync.empty()) {
      absl::Status s = ResyncNow("resync", resync);
      if (!s.ok()) {
        LOG_EVERY_T(ERROR, 5) << "resync failed, will retry: " << s;
        absl::MutexLock lock(&mu_);
        if (resync_reason_.empty()) resync_reason_ = resync;
        resync_not_before_ = absl::Now() + options_.resync_retry;
      }
    }
    if (dataplane_dirty_ && absl::Now() >= dataplane_retry_at_) {
      SyncDataplane("retry after failure").IgnoreError();  // logged, counted and rescheduled inside
    }
    if (batch.empty()) continue;
    if (batch.front().task) {
      std::move(batch.front().task)();
      continue;
    }
    ProcessBatch(batch, /*allow_split=*/true);
  }
}

absl::Status Engine::ResyncNow(const std::string& kind, const std::string& reason) {
  CommitInfo info;
  info.id = next_commit_id_++;
  info.kind = kind;
  info.reason = reason;
  info.start = absl::Now();
  info.attempts = 1;
  last_full_sync_ = absl::Now();
  absl::StatusOr<KernelTable> kernel = port_->Dump(options_.layout.table, NFPROTO_INET);
  if (!kernel.ok()) {
    info.status = kernel.status();
    RecordCommit(info);
    return absl::Status(kernel.status().code(),
                        absl::StrCat("read back table for resync: ", kernel.status().message()));
  }
  ReconcileSummary summary;
  std::vector<render::Op> ops = Reconcile(base_, DesiredElementsNow(), *kernel, &summary);
  info.render = absl::Now() - info.start;
  if (ops.empty()) {
    info.status = absl::OkStatus();
    RecordCommit(info);
    VLOG(1) << "resync: kernel already matches (" << reason << ")";
    // The dataplane may have drifted too (or follows a new layout).
    SyncDataplane(kind).IgnoreError();  // logged, counted and retried inside
    return absl::OkStatus();
  }
  render::Plan plan = MakePlan(std::move(ops));
  info.elements = plan.ElementCount();
  absl::Time c0 = absl::Now();
  CommitReport report = port_->Commit(plan);
  info.commit = absl::Now() - c0;
  info.messages = report.messages;
  info.status = report.status;
  commit_seconds_->Observe(Seconds(info.commit));
  if (!report.errors.empty()) info.failing_op = render::OpSummary(plan.ops[report.errors[0].op_index]);
  RecordCommit(info);
  if (!report.status.ok()) {
    (report.outcome_unknown ? commits_unknown_ : commits_failed_)->Increment();
    return report.status;
  }
  commits_ok_->Increment();
  last_commit_ts_->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  drift_repairs_.fetch_add(1);
  drift_repairs_total_->Increment();
  LOG(INFO) << "commit id=" << info.id << " kind=" << kind << " reason=\"" << reason << "\" "
            << summary.ToString() << " messages=" << report.messages << " commit=" << Ms(info.commit)
            << " result=ok";
  SyncDataplane(kind).IgnoreError();  // logged, counted and retried inside
  return absl::OkStatus();
}

void Engine::PersistOrFail(uint64_t commit_id, std::vector<Item>& items,
                           const std::vector<std::optional<absl::Status>>& results,
                           std::vector<absl::Status>& final_status) {
  std::vector<const core::Mutation*> applied;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!results[i]) applied.push_back(&*items[i].mutation);
  }
  if (applied.empty()) return;
  absl::Status s = snapshot_needed_ ? store_->WriteSnapshot(state_) : store_->Append(commit_id, applied);
  if (s.ok() && snapshot_needed_) snapshot_needed_ = false;
  if (s.ok() && store_->ShouldCompact()) {
    if (absl::Status c = store_->WriteSnapshot(state_); !c.ok()) {
      persist_errors_->Increment();
      LOG(ERROR) << "compact checkpoint: " << c;
    }
  }
  if (!s.ok()) {
    // The kernel and the in-memory model have the change; only durability
    // is missing. Tell the caller to retry (an identical retry is a no-op
    // for the kernel) and write a full snapshot at the next chance.
    persist_errors_->Increment();
    snapshot_needed_ = true;
    LOG_EVERY_T(ERROR, 5) << "persist commit id=" << commit_id << ": " << s;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!results[i]) {
        final_status[i] = absl::UnavailableError(
            absl::StrCat("applied but not persisted to ", store_->dir(), ": ", s.message()));
      }
    }
  }
}

void Engine::ProcessBatch(std::vector<Item>& items, bool allow_split) {
  const absl::Time picked = absl::Now();
  CommitInfo info;
  info.id = next_commit_id_++;
  info.kind = "mutations";
  info.start = picked;
  info.mutations = items.size();
  for (const Item& item : items) {
    absl::Duration wait = picked - item.enqueued;
    queue_wait_->Observe(Seconds(wait));
    info.queue_wait_max = std::max(info.queue_wait_max, wait);
  }
  batch_mutations_->Observe(static_cast<double>(items.size()));

  // Item id -> index, for attributing kernel errors; built on the first
  // refused commit only (the common case never needs it).
  std::map<uint64_t, size_t> by_id;

  // results[i] set = final error for item i; unset = still in the batch.
  std::vector<std::optional<absl::Status>> results(items.size());
  bool resynced = false;
  bool committed = false;
  CommitReport report;

  for (;;) {
    ++info.attempts;
    absl::Time r0 = absl::Now();
    std::vector<std::vector<core::Change>> changes(items.size());
    std::vector<size_t> applied;
    for (size_t i = 0; i < items.size(); ++i) {
      if (results[i]) continue;
      const core::Mutation& m = *items[i].mutation;
      if (absl::Status s = state_.Apply(m, &changes[i], core::DesiredState::Record::kBeforeOnly); !s.ok()) {
        results[i] = s;  // validation failure: never reaches the kernel
        continue;
      }
      // The changes of one mutation touch distinct keys, so the state holds
      // each change's `after` now (kBeforeOnly: not copied into the Change).
      for (const core::Change& c : changes[i]) {
        index_.Apply(c.key, c.before ? &*c.before : nullptr, state_.Find(c.key), items[i].id);
      }
      if (m.kind == core::Mutation::Kind::kRetain && index_.orphans() > 0) {
        size_t n = index_.DropOrphans(items[i].id);
        LOG(INFO) << "garbage collection dropped " << n << " adopted orphan elements";
      }
      applied.push_back(i);
    }
    std::vector<render::Op> ops = index_.TakeDelta();
    info.render += absl::Now() - r0;
    if (ops.empty()) {
      committed = true;  // nothing for the kernel (idempotent ADD, DEL of unknown)
      break;
    }
    render::Plan plan = MakePlan(std::move(ops));
    info.elements = plan.ElementCount();
    absl::Time c0 = absl::Now();
    report = port_->Commit(plan);
    absl::Duration took = absl::Now() - c0;
    info.commit += took;
    info.messages = report.messages;
    commit_seconds_->Observe(Seconds(took));
    if (report.status.ok()) {
      commits_ok_->Increment();
      committed = true;
      UpdateDataplanePods(plan);
      break;
    }
    if (report.outcome_unknown) {
      // The kernel may or may not have applied it; the model has it. Read
      // back and converge: afterwards the kernel matches the model for sure.
      commits_unknown_->Increment();
      absl::Status rs = ResyncNow("resync", absl::StrCat("commit outcome unknown: ", report.status.message()));
      if (rs.ok()) {
        committed = true;
        break;
      }
      report.status = rs;
    } else {
      commits_failed_->Increment();
    }
    if (info.failing_op.empty() && !report.errors.empty()) {
      info.failing_op = render::OpSummary(plan.ops[report.errors[0].op_index]);
    }

    // The batch was rejected as a whole: undo it in memory (reverse order).
    for (auto it = applied.rbegin(); it != applied.rend(); ++it) {
      for (auto c = changes[*it].rbegin(); c != changes[*it].rend(); ++c) {
        // Undone in reverse order, the state holds exactly this change's
        // `after` for its key until Restore().
        index_.Apply(c->key, state_.Find(c->key), c->before ? &*c->before : nullptr, 0);
        state_.Restore(c->key, c->before);
      }
    }
    index_.DiscardDelta();
    if (report.outcome_unknown) {
      for (size_t i : applied) results[i] = report.status;
      break;
    }

    // Attribute: which mutation caused each refused op/element?
    if (by_id.empty()) {
      for (size_t i = 0; i < items.size(); ++i) by_id[items[i].id] = i;
    }
    bool drift = false;
    std::map<size_t, absl::Status> culprits;
    for (const OpError& e : report.errors) {
      if (e.op_index >= plan.ops.size()) continue;
      const render::Op& o = plan.ops[e.op_index];
      const std::vector<render::Element>* elements = nullptr;
      if (const auto* a = std::get_if<render::op::AddElements>(&o)) elements = &a->elements;
      if (const auto* d = std::get_if<render::op::DeleteElements>(&o)) {
        elements = &d->elements;
        // Deleting an element that is not there means someone else removed
        // it (drift), not that the request is bad.
        if (absl::IsNotFound(e.status)) drift = true;
      }
      if (!elements || absl::IsNotFound(e.status)) {
        drift = true;  // our table, chain or set is missing or changed
        continue;
      }
      std::optional<uint64_t> origin;
      if (e.element_index && *e.element_index < elements->size()) {
        origin = (*elements)[*e.element_index].origin;
      } else {
        uint64_t first = elements->empty() ? 0 : elements->front().origin;
        bool same = true;
        for (const render::Element& el : *elements) same = same && el.origin == first;
        if (same) origin = first;
      }
      if (!origin) continue;
      auto it = by_id.find(*origin);
      if (it == by_id.end() || results[it->second]) continue;
      std::string detail = e.element_index && *e.element_index < elements->size()
                               ? (*elements)[*e.element_index].text
                               : std::string();
      culprits.emplace(it->second, absl::Status(e.status.code(),
                                                absl::StrCat(items[it->second].mutation->Describe(),
                                                             ": kernel refused ", render::OpSummary(o),
                                                             detail.empty() ? "" : " " + detail, ": ",
                                                             e.status.message())));
    }
    if (drift && !resynced) {
      resynced = true;
      absl::Status rs = ResyncNow("resync", absl::StrCat("commit refused: ", report.status.message()));
      if (rs.ok()) continue;  // retry the same batch against a repaired table
    }
    if (!culprits.empty()) {
      for (auto& [i, s] : culprits) results[i] = std::move(s);
      continue;  // commit the rest without the culprits
    }
    // Not attributable. Fall back to one mutation per commit so that
    // neighbours still succeed; a lone mutation gets the kernel's error.
    if (allow_split && applied.size() > 1) {
      std::vector<Item> rest;
      std::vector<size_t> rest_index;
      for (size_t i : applied) {
        rest_index.push_back(i);
      }
      // Complete the already-failed ones now; re-run the others singly.
      for (size_t i = 0; i < items.size(); ++i) {
        if (results[i]) {
          mutations_rejected_->Increment();
          if (items[i].done) std::move(items[i].done)(MutationResult{*results[i], 0, picked - items[i].enqueued, {}});
          items[i].done = nullptr;
        }
      }
      info.status = report.status;
      info.rejected = 0;
      RecordCommit(info);
      LOG(WARNING) << "commit id=" << info.id << " refused without attribution (" << report.status
                   << "); retrying " << rest_index.size() << " mutations one by one";
      for (size_t i : rest_index) {
        std::vector<Item> one;
        one.push_back(std::move(items[i]));
        ProcessBatch(one, /*allow_split=*/false);
      }
      return;
    }
    for (size_t i : applied) {
      results[i] = absl::Status(report.status.code(),
                                absl::StrCat(items[i].mutation->Describe(), ": ", report.status.message()));
    }
    break;
  }

  std::vector<absl::Status> final_status(items.size());
  for (size_t i = 0; i < items.size(); ++i) final_status[i] = results[i] ? *results[i] : absl::OkStatus();
  if (committed) {
    PersistOrFail(info.id, items, results, final_status);
    last_commit_ts_->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  }
  attachments_->Set(static_cast<double>(state_.size()));
  elements_->Set(static_cast<double>(index_.size()));

  for (const absl::Status& s : final_status) {
    if (s.ok()) {
      mutations_ok_->Increment();
    } else {
      ++info.rejected;
      mutations_rejected_->Increment();
    }
  }
  info.status = committed ? absl::OkStatus() : report.status;
  LOG(INFO) << "commit id=" << info.id << " mutations=" << info.mutations << " rejected=" << info.rejected
            << " messages=" << info.messages << " elements=" << info.elements
            << " attempts=" << info.attempts << " queue_wait_max=" << Ms(info.queue_wait_max)
            << " render=" << Ms(info.render) << " commit=" << Ms(info.commit)
            << " result=" << (committed ? "ok" : std::string(absl::StatusCodeToString(report.status.code())))
            << (info.failing_op.empty() ? "" : " failing_op=\"" + info.failing_op + "\"");
  const absl::Duration commit_time = info.commit;
  const uint64_t id = info.id;
  RecordCommit(std::move(info));
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].done) continue;
    std::move(items[i].done)(
        MutationResult{final_status[i], committed ? id : 0, picked - items[i].enqueued, commit_time});
  }
}

}  // namespace ruleplane::txn
