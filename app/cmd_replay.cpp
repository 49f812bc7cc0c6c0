// `kvscope replay --model M --workload SPEC (--preset P | --policy F)`: decode the workloads with the
// fp16 reference cache and with the policy's quantized cache; one TEST_METRICS line per slice.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <cstdio>

#include "app/cli.h"
#include "app/store_options.h"
#include "core/quant/method_registry.h"
#include "core/model/discovery.h"
#include "core/model/model.h"
#include "core/policy/policy.h"
#include "core/replay/base_distribution.h"
#include "core/replay/replay.h"
#include "core/sweep/sweep.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/json_text.h"
#include "python/chat_template.h"
#include "python/policy_blocks.h"
#include "python/policy_script.h"
#include "storage/replay_record.h"

namespace kvscope::cli {

namespace {

struct ReplayCliOptions {
  std::string model;
  std::vector<std::string> workloads;
  std::string preset, policy_file;
  bool json = false, chat = false;
  int max_tokens = 0;
  double bit_budget = 0;
  std::string save_base, base;  // --save-base F / --base F
  bool kl_stats = false;         // --kl-stats
  StoreOptions store;
};

std::atomic<bool> g_cancel{false};
extern "C" void on_sigint(int) { g_cancel.store(true); }

// Installs the Ctrl-C handler for the lifetime of the replay: the replay stops at the next token
// and throws, so nothing partial is stored.
struct SigintGuard {
  void (*previous)(int);
  SigintGuard() : previous(std::signal(SIGINT, on_sigint)) { g_cancel.store(false); }
  ~SigintGuard() { std::signal(SIGINT, previous); }
};

void run_replay_command(const ReplayCliOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.preset.empty() == o.policy_file.empty()) fail("replay", "give exactly one of --preset or --policy");
  if (o.max_tokens < 0) fail("--max-tokens", "must be >= 0, got {}", o.max_tokens);
  if (!o.base.empty() && !o.save_base.empty()) fail("replay", "give at most one of --base and --save-base");
  // A policy script is compiled and imported before the model loads (a syntax error costs nothing),
  // then planned for the model's shape; choose_bits is asked per block as tokens leave the residual
  // window (python/policy_blocks.h), the other hooks once here.
  const bool script = !o.policy_file.empty() && is_policy_script(o.policy_file);
  if (script) check_policy_script(o.policy_file);
  Policy policy = o.preset.empty() ? (script ? load_preset("fp16") : load_policy_file(o.policy_file)) : load_preset(o.preset);
  const std::string dir = resolve_model(o.model);
  auto tok = load_tokenizer(dir);
  auto model = Model::load(dir);
  const ModelConfig& cfg = model->config();
  std::unique_ptr<ScriptBlockHook> block_hook;
  if (script) {
    ScriptTarget target;
    target.model_id = o.model;
    target.layers = cfg.num_layers;
    target.kv_heads = cfg.num_kv_heads;
    target.head_dim = cfg.head_dim;
    target.source = "replay";
    policy = plan_policy_script(o.policy_file, target);
    block_hook = ScriptBlockHook::create(o.policy_file, policy, target);
  }
  check_bit_budget(cfg, policy, o.bit_budget);
  if (!policy.method->replay_note.empty()) std::fprintf(stderr, "kvscope: note: %s\n", policy.method->replay_note.c_str());
  ChatRenderer chat;
  if (o.chat) {
    auto tmpl = std::make_shared<ChatTemplate>(load_chat_template(dir));
    chat = [tmpl](const std::string& messages) {
      return render_chat(*tmpl, nlohmann::ordered_json::parse(messages), /*add_generation_prompt=*/true);
    };
  }
  std::vector<WorkloadSlice> slices = load_workloads(o.workloads, *tok, cfg.max_position_embeddings, chat);
  if (o.max_tokens > 0) {
    for (auto& s : slices)
      for (auto& it : s.items) {
        if (it.target.size() > static_cast<size_t>(o.max_tokens)) it.target.resize(o.max_tokens);
        it.max_new = std::min(it.max_new, o.max_tokens);
      }
  }

  std::string workload_desc;
  for (const auto& w : o.workloads) workload_desc += (workload_desc.empty() ? "" : " ") + w;
  if (o.chat) workload_desc += " --chat";

  SigintGuard guard;
  ReplayOptions ro;
  ro.cancel = &g_cancel;
  ro.bit_budget = o.bit_budget;
  ro.block_hook = block_hook.get();
  ro.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  // The reference from a base-distribution file, or computed once and saved (docs/REPLAY.md).
  BaseDistribution base;
  if (!o.base.empty() || !o.save_base.empty()) {
    const std::string model_hash = model_identity_hash(dir);
    if (!o.base.empty()) {
      base = load_base(o.base);
      check_base_matches(base, o.base, model_hash, cfg.vocab_size, slices);
    } else {
      base = compute_base(*model, slices, ro.progress, &g_cancel);
      base.model_id = o.model;
      base.model_hash = model_hash;
      base.workload = workload_desc;
      save_base(o.save_base, base);
      std::fprintf(stderr, "kvscope: saved the base distribution in %s\n", o.save_base.c_str());
    }
    ro.base = &base;
  }
  const std::vector<SliceMetrics> metrics = run_replay(*model, *tok, slices, policy, ro);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (block_hook)  // issue 18's cost check: the hooks' share of the command's wall time
    std::fprintf(stderr, "kvscope: policy script: %lld choose_bits calls (per block) took %.3f s of %.3f s wall (%.2f %%)\n",
                 block_hook->calls(), block_hook->seconds(), wall, 100.0 * block_hook->seconds() / wall);
  if (o.json) {
    nlohmann::json j;
    j["model"] = o.model;
    j["policy"] = policy.name;
    j["workload"] = workload_desc;
    j["wall_seconds"] = wall;
    if (block_hook) {
      j["hook_calls"] = block_hook->calls();
      j["hook_seconds"] = block_hook->seconds();
    }
    for (const auto& m : metrics) {
      nlohmann::json s;
      s["slice"] = m.slice;
      s["kind"] = m.kind;
      for (const auto& [k, v] : m.fields()) s[k] = v;
      j["slices"].push_back(s);
    }
    fmt::print("{}\n", json_text(j, 2));
  }
  for (const auto& m : metrics) {
    if (o.json) std::fprintf(stderr, "%s\n", test_metrics_line(m).c_str());
    else fmt::print("{}\n", test_metrics_line(m));
  }
  std::fflush(stdout);
  if (o.kl_stats)  // llama.cpp's layout, one block per slice, after the TEST_METRICS lines
    for (const auto& m : metrics) {
      std::string block = fmt::format("\n### {} ({} steps)\n\n", m.slice, m.steps) + kl_stats_block(m.kl);
      std::fputs(block.c_str(), o.json ? stderr : stdout);
    }
  std::fflush(stdout);

  if (o.store.no_store) return;
  ReplayRecord rec = replay_record(policy, o.preset.empty() ? o.policy_file : o.preset, o.model, cfg, workload_desc,
                                   metrics, wall);
  rec.ctx.tags = o.store.tags;
  rec.ctx.note = o.store.note;
  RunStore store(resolve_db(o.store.db));
  const int64_t id = store.add_replay_run(rec.identity, rec.ctx);
  std::fprintf(stderr, "kvscope: stored run %lld in %s\n", static_cast<long long>(id), store.path().c_str());
}

}  // namespace

void register_replay(CLI::App& app) {
  auto o = std::make_shared<ReplayCliOptions>();
  auto* cmd = app.add_subcommand("replay", "Decode workloads with a quantized KV cache and compare with fp16");
  cmd->add_option("--model", o->model, "Model folder or Hugging Face id (org/name)")->required();
  cmd->add_option("--workload", o->workloads,
                  "text:PATH[;window=W][;n=N] | jsonl:PATH[;max_new=M] | passkey:len=L,depth=D,n=N | file:PATH "
                  "(repeatable)")
      ->required();
  cmd->add_option("--preset", o->preset, "Policy preset (kvscope presets)");
  cmd->add_option("--policy", o->policy_file, "Policy JSON file, or a policy script (.py, AdaptiveQuantPolicy)")->type_name("FILE");
  cmd->add_flag("--chat", o->chat,
                "Render jsonl prompts (or their \"messages\") through the model's chat template, as Transformers does");
  cmd->add_flag("--json", o->json, "Print the metrics as JSON on stdout (TEST_METRICS lines go to stderr)");
  cmd->add_option("--max-tokens", o->max_tokens, "Cap on scored/generated tokens per item (0 = no cap)");
  cmd->add_option("--bit-budget", o->bit_budget, "Refuse policies above this average of bits per KV entry (0 = none)");
  cmd->add_flag("--kl-stats", o->kl_stats,
                "After the TEST_METRICS lines, print each slice's KL / Δp / perplexity statistics in llama.cpp's layout");
  cmd->add_option("--save-base", o->save_base, "Decode the reference once and save its predictions in FILE (docs/REPLAY.md)")
      ->type_name("FILE");
  cmd->add_option("--base", o->base, "Use the reference predictions saved by --save-base (refused for another model or workload)")
      ->type_name("FILE");
  add_store_options(cmd, o->store);
  cmd->callback([o] { run_replay_command(*o); });
}

}  // namespace kvscope::cli
