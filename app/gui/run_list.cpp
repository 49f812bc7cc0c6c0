#include "app/gui/run_list.h"

#include <algorithm>

#include <chrono>
#include <cmath>
#include <ctime>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/util/error.h"
#include "storage/export.h"

namespace kvscope::gui {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

std::vector<std::string> split_tags(const std::string& s) {
  std::string t = s;
  for (auto& c : t)
    if (c == ',') c = ' ';
  std::istringstream in(t);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string now_iso() { return fmt::format("{:%Y-%m-%dT%H:%M:%S}", fmt::gmtime(std::time(nullptr))); }

}  // namespace

views::RunRow run_row(const QuantizeReport& r, int64_t id, const std::string& created, const std::vector<std::string>& tags,
                      const std::string& note) {
  views::RunRow row;
  row.id = id;
  row.created = created;
  row.model = r.model_id;
  row.dump = r.dump_path;
  row.method = r.method;
  row.policy = r.policy_name;
  row.tag = join(tags);
  row.note = note;
  row.bits_per_element = r.bits_per_element;
  row.bytes_per_token = r.bytes_per_token;
  row.k_nmse = r.k_nmse;
  row.v_nmse = r.v_nmse;
  row.attn_cos = r.attn_queries > 0 ? r.attn_cos_mean : NAN;
  row.greedy_match = NAN;
  row.next_token_kl = NAN;
  row.kld_p99 = NAN;
  return row;
}

RunList::RunList() = default;
RunList::~RunList() = default;

void RunList::open_store(const std::string& path) {
  RunStoreOptions o;
  o.busy_timeout_ms = 2000;  // the UI thread must not hang long on another writer
  auto store = std::make_unique<RunStore>(path, o);
  store_ = std::move(store);
  // Session runs stay listed; the store's runs join them.
  for (auto it = cache_.begin(); it != cache_.end();) it = it->first > 0 ? cache_.erase(it) : std::next(it);
  refresh();
}

std::string RunList::store_path() const { return store_ ? store_->path() : std::string(); }

void RunList::remove(int64_t id) {
  if (id < 0) {
    if (!cache_.erase(id)) fail("runs", "no run {}", id);
    session_ids_.erase(std::remove(session_ids_.begin(), session_ids_.end(), id), session_ids_.end());
    rebuild_rows();
    return;
  }
  if (!store_) fail("runs", "no run {}", id);
  store_->delete_run(id);
  cache_.erase(id);
  refresh();
}

void RunList::refresh() {
  listing_ = store_ ? store_->list_runs() : std::vector<RunListing>{};
  rebuild_rows();
}

void RunList::rebuild_rows() {
  rows_.clear();
  for (const auto& l : listing_) {
    views::RunRow row;
    row.id = l.id;
    row.created = l.created_at;
    row.model = l.model_id;
    row.dump = l.source;
    row.method = l.method;
    row.policy = l.policy_name;
    row.tag = join(l.tags);
    row.note = l.note;
    row.bits_per_element = l.kind == "replay" ? l.kv_bits : l.bits_per_element;  // see views::RunRow
    row.bytes_per_token = NAN;
    row.k_nmse = l.k_nmse;
    row.v_nmse = l.v_nmse;
    row.attn_cos = l.attn_cos_mean;
    row.greedy_match = l.greedy_match;
    row.next_token_kl = l.next_token_kl;
    row.replay = l.kind == "replay";
    row.kld_p99 = NAN;
    if (row.replay)  // the RD view's percentile axis: the stored per-slice kld_p99, largest over slices
      if (auto run = stored_run(l.id))
        for (const ReplayMetric& m : run->replay_metrics)
          if (m.name == "kld_p99" && std::isfinite(m.value)) row.kld_p99 = std::isnan(row.kld_p99) ? m.value : std::max(row.kld_p99, m.value);
    if (auto it = cache_.find(l.id); it != cache_.end()) row.bytes_per_token = it->second->report.bytes_per_token;
    rows_.push_back(row);
  }
  for (int64_t id : session_ids_) {
    const StoredRun& s = *cache_.at(id);
    rows_.push_back(run_row(s.report, id, s.created_at, s.tags, s.note));
  }
}

int64_t RunList::add(const QuantizeReport& report, const std::vector<std::string>& tags, const std::string& note) {
  if (store_) {
    RunContext ctx;
    ctx.tags = tags;
    ctx.note = note;
    int64_t id = store_->add_quantize_run(report, ctx);
    refresh();
    return id;
  }
  auto s = std::make_shared<StoredRun>();
  s->id = next_session_id_--;
  s->created_at = now_iso();
  s->report = report;
  s->tags = tags;
  s->note = note;
  cache_[s->id] = s;
  session_ids_.push_back(s->id);
  rebuild_rows();
  return s->id;
}

int64_t RunList::add_replay(const ReplayRecord& record) {
  if (!store_) fail("replay", "no run store is open to keep the replay in");
  int64_t id = store_->add_replay_run(record.identity, record.ctx);
  refresh();
  return id;
}

StoredRun RunList::stored(int64_t id) {
  if (auto it = cache_.find(id); it != cache_.end()) return *it->second;
  if (!store_ || id <= 0) fail("runs", "no run {}", id);
  auto s = std::make_shared<const StoredRun>(store_->load_run(id));
  cache_[id] = s;
  return *s;
}

std::shared_ptr<const StoredRun> RunList::stored_run(int64_t id) {
  if (auto it = cache_.find(id); it != cache_.end()) return it->second;
  if (!store_ || id <= 0) return nullptr;
  try {
    auto s = std::make_shared<const StoredRun>(store_->load_run(id));
    cache_[id] = s;
    return s;
  } catch (const Error&) {
    return nullptr;
  }
}

std::shared_ptr<const QuantizeReport> RunList::report(int64_t id) {
  try {
    StoredRun s = stored(id);
    return std::make_shared<const QuantizeReport>(std::move(s.report));
  } catch (const Error&) {
    return nullptr;
  }
}

Policy RunList::policy(int64_t id) {
  StoredRun s = stored(id);
  nlohmann::json j = nlohmann::json::parse(s.report.policy_json, nullptr, false);
  if (j.is_discarded()) fail("run " + std::to_string(id), "its stored policy is not valid JSON");
  Policy p = parse_policy(j, "run " + std::to_string(id));
  if (p.name.empty()) p.name = s.report.policy_name;
  return p;
}

void RunList::set_tags_and_note(int64_t id, const std::string& tags, const std::string& note) {
  std::vector<std::string> want = split_tags(tags);
  if (id < 0) {
    auto it = cache_.find(id);
    if (it == cache_.end()) fail("runs", "no run {}", id);
    auto s = std::make_shared<StoredRun>(*it->second);
    s->tags = want;
    s->note = note;
    it->second = s;
    rebuild_rows();
    return;
  }
  if (!store_) fail("runs", "no run {}", id);
  StoredRun s = store_->load_run(id);
  store_->in_transaction([&] {
    for (const auto& t : s.tags) store_->remove_tag(id, t);
    for (const auto& t : want) store_->add_tag(id, t);
    store_->set_note(id, note);
  });
  cache_.erase(id);
  refresh();
}

std::string RunList::export_text(const std::vector<int64_t>& ids, const std::string& format, bool compare) {
  if (ids.empty()) fail("export", "no runs selected");
  std::vector<StoredRun> runs;
  for (int64_t id : ids) runs.push_back(stored(id));
  return format_table(make_table(compare && runs.size() >= 2 ? "compare" : "summary", runs), format);
}

}  // namespace kvscope::gui
