#include "app/gui/workspace.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "app/gui/policy_tuning.h"
#include "core/model/capture.h"
#include "core/model/capture_file.h"
#include "core/model/model.h"
#include "core/replay/replay.h"
#include "core/synth/synth.h"
#include "core/tokenizer/tokenizer.h"
#include "core/quant/group_kernels.h"
#include "core/quant/method_registry.h"
#include "core/quant/quantize_stream.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "core/util/json_text.h"
#include "storage/run_store.h"
#include "views/policy_editor_view.h"

namespace kvscope::gui {

namespace {

// Public-domain prose (Alice in Wonderland, ch. 1) used when no capture text file is given.
constexpr const char* kCapturePassage =
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once "
    "or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, "
    "'and what is the use of a book,' thought Alice 'without pictures or conversations?' So she was considering in "
    "her own mind (as well as she could, for the hot day made her feel very sleepy and stupid), whether the pleasure "
    "of making a daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a White "
    "Rabbit with pink eyes ran close by her. ";

std::string policy_label(const Policy& p) { return p.name.empty() ? method_name(p.method) : p.name; }

}  // namespace

Workspace::Workspace(WorkspaceHooks hooks) : hooks_(std::move(hooks)) { policy_ = kvscope::load_preset("kivi-2"); }

// ---------------------------------------------------------------------------------------------
// Dump

void Workspace::set_dump(std::shared_ptr<const KvDump> dump, const std::string& name) {
  set_source(DumpSource::in_memory(std::move(dump)), name);
}

void Workspace::set_source(std::shared_ptr<const DumpSource> dump, const std::string& name) {
  dump_ = std::move(dump);
  dump_name_ = name;
  report_.reset();
  deq_.reset();
  profile_.reset();
  sel_layer_ = sel_head_ = -1;
  // A new dump: nothing cached, a new mailbox (a pass still running on the old dump posts into the old one).
  slices_.clear();
  attn_.clear();
  target_keys_.clear();
  attn_positions_ = 0;
  inbox_ = std::make_shared<UpdateInbox>();
  if (!script_path_.empty()) replan_script();  // the script's hooks see the new dump's statistics
  policy_edited(true);
}

void Workspace::open_demo(int tokens) {
  runner_.submit(
      "synthesize demo dump (" + std::to_string(tokens) + " tokens)",
      [this, tokens](JobContext& ctx) -> JobRunner::Completion {
        SynthOptions so;
        so.tokens = tokens;
        auto dump = DumpSource::in_memory(std::make_shared<const KvDump>(make_synthetic_dump(so)));
        ctx.progress = 1.0;
        return [this, dump] { set_source(dump, "demo (synthetic Qwen2.5-0.5B-shaped)"); };
      },
      "dump");
}

void Workspace::open_dump(const std::string& path) {
  runner_.submit(
      "load " + std::filesystem::path(path).filename().string(),
      [this, path](JobContext& ctx) -> JobRunner::Completion {
        auto dump = DumpSource::open_file(path);  // mapped, validated; layers are read when quantized
        ctx.progress = 1.0;
        return [this, dump, path] {
          if (hooks_.dump_opened) hooks_.dump_opened(path);
          set_source(dump, path);
        };
      },
      "dump");
}

// The GUI's capture is `kvscope dump`'s (capture_model_to_file: memory plan, vocabulary check,
// streamed to a file layer by layer), then the file is opened like any dump. Here the text must not
// be empty and the context must fit the model (the CLI only warns about the latter).
void Workspace::capture(const ModelEntry& entry, const std::string& text_file, int tokens) {
  const std::string dir = entry.dir, id = entry.id;
  std::string out_dir = capture_dir_;
  if (out_dir.empty()) out_dir = (std::filesystem::path(default_db_path()).parent_path() / "captures").string();
  runner_.submit(
      "capture " + id + " (" + std::to_string(tokens) + " tokens)",
      [this, dir, id, text_file, tokens, out_dir](JobContext& ctx) -> JobRunner::Completion {
        if (tokens < 1) fail("capture", "tokens must be >= 1, got {}", tokens);
        std::string text;
        if (text_file.empty()) {
          while (text.size() < static_cast<size_t>(tokens) * 8) text += kCapturePassage;
        } else {
          text = read_text_file(text_file, "text file");
          if (text.empty()) fail(text_file, "the text file is empty");
        }
        auto tok = load_tokenizer(dir);
        CaptureFileRequest r;
        r.model_dir = dir;
        r.tokenizer_vocab = tok->vocab_size();
        r.ids = tok->encode(text, /*add_bos=*/true);
        if (static_cast<int>(r.ids.size()) > tokens) r.ids.resize(tokens);
        r.refuse_past_max_positions = true;
        r.capture.model_id = id;
        r.capture.prompt = utf8_prefix(text, 4096);
        r.capture.workload = text_file.empty() ? "gui:passage" : "text:" + std::filesystem::path(text_file).filename().string();
        r.capture.progress = [c = &ctx](int done, int total) {
          c->progress = double(done) / total;
          if (c->cancel) throw Cancelled();  // between prefill chunks; capture_to_file removes its temporary
        };
        std::string name = id;
        std::replace(name.begin(), name.end(), '/', '_');
        std::filesystem::create_directories(out_dir);
        r.out = (std::filesystem::path(out_dir) / fmt::format("{}-{}tok.safetensors", name, r.ids.size())).string();
        capture_model_to_file(r);
        auto dump = DumpSource::open_file(r.out);
        return [this, dump, id, path = r.out] {
          if (hooks_.dump_opened) hooks_.dump_opened(path);
          set_source(dump, id + " (captured: " + path + ")");
        };
      },
      "dump");
}

// ---------------------------------------------------------------------------------------------
// Policy

void Workspace::policy_edited(bool commit) {
  ++policy_gen_;
  auto now = Clock::now();
  auto due = commit ? now : now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(kDebounceSeconds));
  // A commit never waits; a drag keeps pushing the deadline out (debounce).
  requant_due_ = due;
  if (commit && hooks_.committed) hooks_.committed(policy_gen_);
}

void Workspace::load_preset(const std::string& name) {
  try {
    policy_ = kvscope::load_preset(name);
    policy_edited(true);
  } catch (const Error& e) {
    error(e.what());
  }
}

void Workspace::add_override(const std::string& json) {
  try {
    nlohmann::json j = policy_to_json(policy_);
    if (!j.contains("overrides")) j["overrides"] = nlohmann::json::array();
    j["overrides"].push_back(nlohmann::json::parse(json));
    policy_ = parse_policy(j, "policy editor");
    policy_edited(true);
  } catch (const std::exception& e) {
    error(e.what());
  }
}

void Workspace::remove_override(int index) {
  try {
    nlohmann::json j = policy_to_json(policy_);
    j["overrides"].erase(static_cast<size_t>(index));
    policy_ = parse_policy(j, "policy editor");
    policy_edited(true);
  } catch (const std::exception& e) {
    error(e.what());
  }
}

void Workspace::toggle_head_fp16(int layer, int head, char kind) {
  try {
    gui::toggle_head_fp16(policy_, layer, head, kind);
    policy_edited(true);
  } catch (const Error& e) {
    error(e.what());
  }
}

void Workspace::set_field(const std::string& field, const std::string& value, const std::string& where) {
  double x = 0;
  try {
    x = std::stod(value);
  } catch (const std::exception&) {
    if (field != "method") fail(where, "'{}' is not a number", value);
  }
  int n = static_cast<int>(std::lround(x));
  if (field == "k.bits") policy_.k.bits = n;
  else if (field == "v.bits") policy_.v.bits = n;
  else if (field == "bits") policy_.k.bits = policy_.v.bits = n;
  else if (field == "group_size") policy_.k.group_size = policy_.v.group_size = n;
  else if (field == "residual") policy_.residual = n;
  else if (field == "sink_tokens") policy_.sink_tokens = n;
  else if (field == "clip_ratio") policy_.k.clip_ratio = policy_.v.clip_ratio = x;
  else if (field == "outlier_ratio") {
    policy_.outliers.rule = OutlierSelect::Rule::MseOverMedian;
    policy_.outliers.ratio = x;
  } else if (field == "method") {
    const QuantMethod* m = find_method(value);
    if (!m) fail(where, "unknown method '{}'", value);
    policy_.method = m;
  } else {
    fail(where, "unknown field '{}' (k.bits v.bits bits group_size residual sink_tokens clip_ratio outlier_ratio method)", field);
  }
  policy_edited(true);  // a scripted set is a slider released
}

void Workspace::save_policy(const std::string& path) {
  try {
    write_file_atomic(path, json_text(policy_to_json(policy_), 2) + "\n");
    live_status_ = "policy written to " + path;
  } catch (const std::exception& e) {
    error(e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Quantization

void Workspace::tick() {
  runner_.poll();
  apply_live_updates();  // layers the background pass delivered since the last frame
  for (auto& e : runner_.take_errors()) error(e);
  watch_policy_script();
  maybe_requantize();
}

bool Workspace::idle() const { return !runner_.busy() && !requant_due_ && (!dump_ || report_); }

void Workspace::maybe_requantize() {
  if (!requant_due_ || Clock::now() < *requant_due_ || !dump_) return;
  requant_due_.reset();
  Policy p;
  try {
    p = parse_policy(policy_to_json(policy_), "policy editor");
  } catch (const Error& e) {
    live_status_ = e.what();
    return;
  }
  const uint64_t gen = policy_gen_;
  const std::string name = policy_label(p);
  runner_.cancel_slot("attention");
  auto pass = std::make_shared<LivePass>();
  try {
    pass->keys = slice_keys(dump_->header(), p, &pass->plans);
  } catch (const Error& e) {  // overrides naming layers/heads the dump lacks
    error(e.what());
    return;
  }
  if (pass->keys.empty()) {
    start_whole_dump_job(p, gen, name);
    return;
  }
  // Incremental: what changed since the cache was filled.
  const DumpShape& s = dump_->shape();
  const size_t pairs = static_cast<size_t>(s.layers) * s.kv_heads;
  if (slices_.size() != pass->keys.size()) slices_.assign(pass->keys.size(), {});
  if (attn_.size() != pairs) attn_.assign(pairs, {});
  target_keys_ = pass->keys;
  live_plans_ = pass->plans;
  live_policy_ = p;
  live_gen_ = gen;
  whole_tensor_pending_ = whole_attention_pending_ = false;
  deq_.reset();
  for (size_t i = 0; i < slices_.size(); ++i)
    if (slices_[i].key != target_keys_[i]) pass->slices.push_back(i);
  if (dump_->has_q())
    for (size_t i = 0; i < pairs; ++i)
      if (attn_positions_ == 0 || attn_[i].positions != attn_positions_ || attn_[i].key != pair_key(i)) pass->attention.push_back(i);
  if (attn_positions_ > 0) pass->positions = sample_positions(s.tokens, attn_positions_);
  pass->gen = gen;
  pass->policy = p;
  pass->attention_budget_s = attn_budget_s_;
  last_slices_ = pass->slices;
  last_pairs_ = pass->attention;
  first_rows_pending_ = true;
  rebuild_live_report(false);  // the cached rows at once, the changed ones marked stale
  if (pass->slices.empty() && pass->attention.empty()) {  // rebuild_live_report reported it done
    runner_.cancel_slot("requantize");
    return;
  }
  live_status_ = fmt::format("re-quantizing {} of {} slices...", pass->slices.size(), slices_.size());
  auto dump = dump_;
  auto inbox = inbox_;
  runner_.submit(
      fmt::format("quantize: {} ({} slices, {} attention heads)", name, pass->slices.size(), pass->attention.size()),
      [this, dump, pass, inbox](JobContext& ctx) -> JobRunner::Completion {
        run_live_pass(*dump, *pass, ctx.cancel, *inbox, [c = &ctx](double f) { c->progress = f; });
        return [this] { apply_live_updates(); };
      },
      "requantize");
}

void Workspace::apply_live_updates() {
  bool fresh_rows = false, changed = false;
  for (LayerUpdate& u : inbox_->take()) {
    for (auto& [i, o] : u.slices)
      if (i < target_keys_.size() && o.key == target_keys_[i]) {
        slices_[i] = std::move(o);
        changed = true;
        fresh_rows |= u.gen == live_gen_;
      }
    for (auto& [i, o] : u.attention) {
      if (attn_positions_ == 0) attn_positions_ = o.positions;  // chosen by the first pass
      if (i < attn_.size() && !target_keys_.empty() && o.positions == attn_positions_ && o.key == pair_key(i)) {
        attn_[i] = std::move(o);
        changed = true;
      }
    }
  }
  if (changed) rebuild_live_report(fresh_rows);
}

void Workspace::rebuild_live_report(bool fresh_rows) {
  if (target_keys_.empty() || !dump_) return;
  report_ = std::make_shared<const QuantizeReport>(assemble_report(dump_->header(), live_policy_, slices_, attn_, attn_positions_));
  if (fresh_rows && first_rows_pending_) {
    first_rows_pending_ = false;
    if (hooks_.first_rows) hooks_.first_rows(live_gen_);
  }
  size_t tensor_left = 0, attn_left = 0;
  for (size_t i = 0; i < slices_.size(); ++i) tensor_left += slices_[i].key != target_keys_[i];
  if (dump_->has_q())
    for (size_t i = 0; i < attn_.size(); ++i)
      attn_left += attn_positions_ == 0 || attn_[i].positions != attn_positions_ || attn_[i].key != pair_key(i);
  const bool latest = live_gen_ == policy_gen_;
  if (tensor_left == 0 && tensor_done_gen_ != live_gen_) {
    tensor_done_gen_ = live_gen_;
    report_gen_ = live_gen_;
    first_rows_pending_ = false;
    refresh_profile();
    if (hooks_.tensor_result) hooks_.tensor_result(live_gen_);
  }
  if (tensor_left == 0 && attn_left == 0 && attn_done_gen_ != live_gen_) {
    attn_done_gen_ = live_gen_;
    if (latest) live_status_ = dump_->has_q() ? "up to date" : "up to date (the dump has no queries: no attention metrics)";
    if (hooks_.attention_result) hooks_.attention_result(live_gen_);
  } else if (latest && tensor_left > 0) {
    live_status_ = fmt::format("re-quantizing: {} of {} slices left...", tensor_left, slices_.size());
  } else if (latest && attn_left > 0) {
    live_status_ = fmt::format("attention metrics updating: {} of {} heads left...", attn_left, attn_.size());
  }
}

std::vector<bool> Workspace::stale_rows(char kind) const {
  std::vector<bool> out(dump_ ? dump_->shape().layers : 0, false);
  if (!dump_) return out;
  const int H = dump_->shape().kv_heads;
  if (target_keys_.empty()) {  // the whole-dump path: everything waits for its one result
    if (kind == 'a' ? whole_attention_pending_ || whole_tensor_pending_ : whole_tensor_pending_) out.assign(out.size(), true);
    return out;
  }
  if (kind == 'a') {
    if (!dump_->has_q()) return out;
    for (size_t i = 0; i < attn_.size(); ++i)
      if (attn_positions_ == 0 || attn_[i].positions != attn_positions_ || attn_[i].key != pair_key(i)) out[i / H] = true;
    return out;
  }
  for (size_t i = 0; i < slices_.size(); ++i)
    if ((i % 2 == 0) == (kind == 'k') && slices_[i].key != target_keys_[i]) out[i / (2 * H)] = true;
  return out;
}

// Policies that need statistics over the whole dump (ranked outlier rules, KVSmooth, SKVQ,
// WaterSIC, ...): quantize_dump on the dump in f32, tensor metrics first, attention second.
void Workspace::start_whole_dump_job(const Policy& p, uint64_t gen, const std::string& name) {
  target_keys_.clear();
  slices_.clear();
  attn_.clear();
  last_slices_.clear();
  last_pairs_.clear();
  whole_tensor_pending_ = whole_attention_pending_ = true;
  live_status_ = "re-quantizing...";
  auto dump = dump_;
  runner_.submit(
      "quantize: " + name,
      [this, dump, p, gen, name](JobContext& ctx) -> JobRunner::Completion {
        QuantizeOptions qo;
        qo.attention = false;
        qo.cancel = &ctx.cancel;
        qo.progress = [c = &ctx](double f) { c->progress = f; };
        qo.keep_dequantized = true;
        auto deq = std::make_shared<DequantizedKV>();
        auto rep = std::make_shared<const QuantizeReport>(quantize_dump(*dump->whole(), p, qo, deq.get()));
        return [this, dump, rep, deq, gen, p, name] {
          if (dump != dump_) return;  // the dump changed meanwhile
          report_ = rep;
          deq_ = deq;
          report_gen_ = gen;
          whole_tensor_pending_ = false;
          live_status_ = gen == policy_gen_ ? "attention metrics updating..." : "re-quantizing...";
          refresh_profile();
          if (hooks_.tensor_result) hooks_.tensor_result(gen);
          if (dump->has_q()) {
            start_attention_job(dump, p, gen, name);
          } else {
            whole_attention_pending_ = false;
            if (gen == policy_gen_) live_status_ = "up to date (the dump has no queries: no attention metrics)";
          }
        };
      },
      "requantize");
}

void Workspace::start_attention_job(std::shared_ptr<const DumpSource> dump, const Policy& p, uint64_t gen, const std::string& name) {
  runner_.submit(
      "attention metrics: " + name,
      [this, dump, p, gen](JobContext& ctx) -> JobRunner::Completion {
        QuantizeOptions qo;
        qo.attn_queries = kLiveAttnQueries;
        qo.cancel = &ctx.cancel;
        qo.progress = [c = &ctx](double f) { c->progress = f; };
        auto rep = std::make_shared<const QuantizeReport>(quantize_dump(*dump->whole(), p, qo));
        return [this, dump, rep, gen] {
          if (dump != dump_ || gen != report_gen_) return;  // a newer tensor pass is on screen
          report_ = rep;
          whole_attention_pending_ = false;
          if (gen == policy_gen_) live_status_ = "up to date";
          if (hooks_.attention_result) hooks_.attention_result(gen);
        };
      },
      "attention");
}

void Workspace::select_head(char kind, int layer, int head) {
  sel_kind_ = kind;
  sel_layer_ = layer;
  sel_head_ = head;
  refresh_profile();
}

void Workspace::clear_selection() {
  sel_layer_ = sel_head_ = -1;
  profile_.reset();
}

void Workspace::refresh_profile() {
  if (!dump_ || sel_layer_ < 0) {
    profile_.reset();
    return;
  }
  const int layer = sel_layer_, head = sel_head_;
  try {
    std::vector<float> recon;
    const float* deq = nullptr;
    const DumpShape& s = dump_->shape();
    const size_t i = (static_cast<size_t>(layer) * s.kv_heads + head) * 2 + (sel_kind_ == 'v');
    if (!target_keys_.empty() && i < live_plans_.size() && layer < s.layers && head < s.kv_heads) {
      // Incremental path: the one slice is re-quantized here (milliseconds), nothing is kept per slice.
      const HeadPlan& p = live_plans_[i];
      recon.resize(static_cast<size_t>(s.tokens) * s.head_dim);
      (void)quantize_stored(dump_->slice(layer, head, sel_kind_), p.quant, p.fp_head, p.fp_tail, nullptr, recon.data());
      deq = recon.data();
    } else if (deq_) {
      const auto& t = sel_kind_ == 'k' ? deq_->k : deq_->v;
      if (layer < static_cast<int>(t.size()) && !t[layer].empty()) deq = t[layer].data() + head * dump_->header().head_elems();
    }
    profile_ = dump_->profile(layer, head, sel_kind_, deq, policy_.rotation ? &*policy_.rotation : nullptr);
  } catch (const Error& e) {
    profile_.reset();
    error(e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Runs, sweeps, replay

void Workspace::start_sweep() {
  if (!dump_) return;
  auto dump = dump_;
  std::vector<Policy> policies;
  for (const auto& info : list_presets()) {
    try {
      policies.push_back(kvscope::load_preset(info.name));
    } catch (const Error& e) {
      error(e.what());
    }
  }
  runner_.submit("sweep " + std::to_string(policies.size()) + " presets", [this, dump, policies](JobContext& ctx) -> JobRunner::Completion {
    auto reports = std::make_shared<std::vector<std::pair<Policy, std::shared_ptr<const QuantizeReport>>>>();
    for (size_t i = 0; i < policies.size(); ++i) {
      QuantizeOptions qo;
      qo.attn_queries = kLiveAttnQueries;
      qo.cancel = &ctx.cancel;
      double base = double(i) / policies.size(), share = 1.0 / policies.size();
      qo.progress = [c = &ctx, base, share](double f) { c->progress = base + share * f; };
      // Layer by layer from the mapped file when the preset allows it; else the dump in f32.
      const bool streamed = dump->reader() && dump->stored_q_positions().empty() && quantizes_streamed(policies[i]);
      reports->emplace_back(policies[i], std::make_shared<const QuantizeReport>(streamed ? quantize_dump_streamed(*dump->reader(), policies[i], qo)
                                                                                         : quantize_dump(*dump->whole(), policies[i], qo)));
    }
    return [this, reports] {
      try {
        for (auto& [pol, rep] : *reports) runs_.add(*rep, {"sweep"});
      } catch (const Error& e) {
        error(e.what());
      }
    };
  });
}

void Workspace::save_run() {
  if (!report_) {
    error("save run: no quantization result yet (wait for the job to finish)");
    return;
  }
  try {
    // "Save run" keeps it: open the default run store when none is open yet.
    if (!runs_.has_store()) open_store(default_db_path());
    int64_t id = runs_.add(*report_);
    attn_runs_.push_back(id);
    live_status_ = "saved as run " + std::to_string(id) + " in " + runs_.store_path();
  } catch (const Error& e) {
    error(e.what());
  }
}

void Workspace::open_store(const std::string& path) {
  runs_.open_store(path);
  if (hooks_.store_opened) hooks_.store_opened(path);
}

bool Workspace::open_run(int64_t id) {
  // Opening a run shows its stored report and loads its policy into the editor; the next
  // edit re-quantizes the open dump with it. A replay run has no per-head report: only its policy.
  auto row = std::find_if(runs_.rows().begin(), runs_.rows().end(), [&](const views::RunRow& r) { return r.id == id; });
  if (row != runs_.rows().end() && row->replay) {
    try {
      policy_ = runs_.policy(id);
      policy_edited(true);
      live_status_ = "run " + std::to_string(id) + " is a replay: its policy is in the editor, its metrics in the runs table";
    } catch (const Error& e) {
      error(e.what());
    }
    return false;
  }
  auto rep = runs_.report(id);
  if (!rep) {
    error("run " + std::to_string(id) + ": cannot be loaded");
    return false;
  }
  try {
    policy_ = runs_.policy(id);
  } catch (const Error& e) {
    error(e.what());
  }
  report_ = rep;
  deq_.reset();
  refresh_profile();
  return true;
}

void Workspace::export_runs(const std::vector<int64_t>& ids, const std::string& format, bool compare, const std::string& path) {
  if (path.empty()) fail("export", "enter a file path first");
  write_file_atomic(path, runs_.export_text(ids, format, compare));
  live_status_ = "exported to " + path;
}

// Replays the model with the policy in the editor against the fp16 reference (core/replay), off the
// UI thread; the TEST_METRICS lines go to the sidebar and to stdout (as `kvscope replay` prints them).
void Workspace::replay(const ModelEntry& entry, const std::string& spec) {
  Policy p;
  try {
    p = parse_policy(policy_to_json(policy_), "policy editor");
  } catch (const Error& e) {
    error(e.what());
    return;
  }
  const std::string dir = entry.dir, id = entry.id;
  runner_.submit(
      "replay " + id + " " + policy_label(p) + " on " + spec,
      [this, dir, id, spec, p](JobContext& ctx) -> JobRunner::Completion {
        auto tok = load_tokenizer(dir);
        auto model = Model::load(dir);
        check_bit_budget(model->config(), p);
        auto slices = load_workloads({spec}, *tok, model->config().max_position_embeddings);
        size_t total = 0, done = 0;
        for (const auto& sl : slices) total += sl.items.size();
        ReplayOptions ro;
        ro.cancel = &ctx.cancel;
        ro.progress = [&](const std::string&) { ctx.progress = total ? double(++done) / total : 0.5; };
        const auto t0 = Clock::now();
        auto metrics = run_replay(*model, *tok, slices, p, ro);
        // stdout gets the CLI's TEST_METRICS lines; the narrow sidebar the numbers one reads first.
        auto lines = std::make_shared<std::vector<std::string>>(), summary = std::make_shared<std::vector<std::string>>();
        for (const auto& m : metrics) {
          lines->push_back(test_metrics_line(m));
          summary->push_back(fmt::format("{}: {:.2f} b/KV, KL {:.3g}, greedy {:.3f}, quality {:.3g} ({:+.3g} vs fp16)", m.slice,
                                         m.avg_bits_per_kv_token, m.next_token_kl, m.greedy_match_ratio, m.quality_main,
                                         m.quality_delta_vs_ref));
        }
        auto record = std::make_shared<ReplayRecord>(replay_record(p, policy_label(p), id, model->config(), spec, metrics,
                                                                   std::chrono::duration<double>(Clock::now() - t0).count()));
        return [this, lines, summary, record] {
          replay_lines_ = *summary;
          for (const auto& l : *lines) std::printf("%s\n", l.c_str());
          std::fflush(stdout);
          // Kept like `kvscope replay` keeps it: in the open store, else the default one.
          try {
            if (!runs_.has_store()) open_store(default_db_path());
            int64_t id = runs_.add_replay(*record);
            live_status_ = "replay stored as run " + std::to_string(id) + " in " + runs_.store_path();
          } catch (const Error& e) {
            error(e.what());
          }
        };
      },
      "replay");
}

}  // namespace kvscope::gui
