// Per-block hooks of policy scripts in replay (python/policy_blocks.h): the choices a script makes
// are the ones stored with the run and they reproduce it; overspending, a wrong type and an
// exception are one line each and store nothing.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/model/model.h"
#include "core/replay/block_hook.h"
#include "core/replay/replay.h"
#include "core/tokenizer/tokenizer.h"
#include "python/policy_blocks.h"
#include "python/policy_script.h"
#include "storage/run_store.h"
#include "test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;
using kvscope::test::run_cli;
using kvscope::test::slurp;

namespace {

std::string llama8() { return kvscope::test::models_dir() + "/tinystories-llama-8L"; }
std::string alice() { return std::string(std::getenv("KVSCOPE_TEST_DATA") ? std::getenv("KVSCOPE_TEST_DATA") : "") + "/pg11_alice_in_wonderland.txt"; }

// A per-block script that logs every choice it makes ("layer kind group first tokens bits" lines)
// to `log`: 4 bits for blocks whose channel spread is wide while the 3-bit budget allows it, else 2.
std::string logging_script(const TempDir& dir, const std::string& log) {
  const std::string path = dir.path("logging.py");
  std::ofstream(path) << "import numpy as np\n"
                         "BASE = 'kivi-2'\n"
                         "BUDGET = {'max_avg_bits': 3, 'bit_range': [2, 4]}\n"
                         "LOG = open(" << nlohmann::json(log).dump() << ", 'w')\n"
                         "class AdaptiveQuantPolicy:\n"
                         "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
                         "        a = token_stats['absmax']\n"
                         "        want = 4 if float(a.max() / np.median(a)) > 2.5 else 2\n"
                         "        if want * budget_state['block_entries'] > budget_state['bits_left']:\n"
                         "            want = 2\n"
                         "        LOG.write(f\"{layer_id} {kv_kind} {head_group} {token_stats['first_token']} {token_stats['tokens']} {want}\\n\")\n"
                         "        LOG.flush()\n"
                         "        return want\n"
                         "    def residual_length(self, layer_id, request_meta):\n"
                         "        return 32\n";
  return path;
}

std::string workload() { return "\"text:" + alice() + ";window=160;n=1\""; }

}  // namespace

TEST_CASE("replay --policy script.py: the per-block choices the script made are the ones stored", "[script][blocks][cli]") {
  TempDir dir;
  const std::string log = dir.path("choices.log"), db = dir.path("runs.sqlite");
  const std::string script = logging_script(dir, log);
  const auto r = run_cli(dir, "replay --model " + llama8() + " --policy " + script + " --max-tokens 40 --workload " + workload() +
                                  " --db " + db);
  REQUIRE(r.rc == 0);
  CHECK(r.err.find("choose_bits calls (per block)") != std::string::npos);

  RunStore store(db, {.read_only = true});
  const StoredRun run = store.load_run(store.list_runs()[0].id);
  REQUIRE(run.replay_items.size() == 1);
  const std::vector<BlockChoice> stored = parse_block_choices(run.replay_items[0].blocks, "stored");
  std::ostringstream want;
  for (const BlockChoice& c : stored) want << c.layer << ' ' << c.kind << ' ' << c.head_group << ' ' << c.first << ' ' << c.tokens << ' ' << c.bits << '\n';
  CHECK(want.str() == slurp(log));
  // 80 prompt tokens + 39 fed, residual 32, no sinks: K (KIVI) flushes 3 whole blocks of 32; V's tokens
  // older than the last 32 (0..86) span blocks [0,32) [32,64) [64,96); 8 layers x 4 KV heads each.
  CHECK(stored.size() == 8u * 4 * (3 + 3));
  int four = 0;
  for (const BlockChoice& c : stored) {
    CHECK(c.tokens == 32);
    CHECK(c.first % 32 == 0);
    four += c.bits == 4;
  }
  CHECK(four > 0);                  // the statistics decide: both answers occur
  CHECK(four < static_cast<int>(stored.size()));
  const std::string shown = run_cli(dir, "runs show " + std::to_string(run.id) + " --db " + db).out;
  CAPTURE(shown);
  CHECK(shown.find("per-block bits (policy script): 192 blocks") != std::string::npos);
}

TEST_CASE("replay: the stored per-block choices reproduce the run exactly", "[script][blocks]") {
  TempDir dir;
  const std::string script = logging_script(dir, dir.path("choices.log"));
  auto model = Model::load(llama8());
  auto tok = load_tokenizer(llama8());
  const ModelConfig& cfg = model->config();
  std::vector<WorkloadSlice> slices = load_workloads({"text:" + alice() + ";window=160;n=1"}, *tok, cfg.max_position_embeddings);
  slices[0].items[0].target.resize(40);
  ScriptTarget t;
  t.model_id = "llama8";
  t.layers = cfg.num_layers;
  t.kv_heads = cfg.num_kv_heads;
  t.head_dim = cfg.head_dim;
  t.source = "replay";
  const Policy policy = plan_policy_script(script, t);
  auto hook = ScriptBlockHook::create(script, policy, t);
  REQUIRE(hook);
  ReplayOptions o;
  o.block_hook = hook.get();
  const std::vector<SliceMetrics> a = run_replay(*model, *tok, slices, policy, o);
  RecordedBlockBits recorded(a[0].item_results[0].blocks);
  o.block_hook = &recorded;
  const std::vector<SliceMetrics> b = run_replay(*model, *tok, slices, policy, o);
  CHECK(b[0].item_results[0].blocks == a[0].item_results[0].blocks);
  const auto fa = a[0].fields(), fb = b[0].fields();
  for (size_t i = 0; i < fa.size(); ++i) {
    if (fa[i].first.find("tokens_per_s") != std::string::npos || fa[i].first.find("latency") != std::string::npos) continue;
    CAPTURE(fa[i].first);
    CHECK(fa[i].second == fb[i].second);
  }
  // And they differ from the base's plain 2 bits (the script did decide something).
  o.block_hook = nullptr;
  const std::vector<SliceMetrics> c = run_replay(*model, *tok, slices, policy, o);
  CHECK(c[0].cache_error != a[0].cache_error);
  CHECK(hook->calls() == static_cast<long long>(a[0].item_results[0].blocks.size()));
}

TEST_CASE("replay: an overspending, mistyped or raising choose_bits is one line and stores nothing", "[script][blocks][cli]") {
  TempDir dir;
  const std::string db = dir.path("runs.sqlite");
  auto run = [&](const std::string& name, const std::string& body) {
    const std::string path = dir.path(name);
    std::ofstream(path) << "BUDGET = {'max_avg_bits': 3, 'bit_range': [2, 8]}\n"
                           "class AdaptiveQuantPolicy:\n"
                           "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
                           "        " << body << "\n"
                           "    def residual_length(self, layer_id, request_meta):\n"
                           "        return 32\n";
    const auto r = run_cli(dir, "replay --model " + llama8() + " --policy " + path + " --max-tokens 8 --workload " + workload() +
                                    " --db " + db);
    CHECK(r.rc == 1);
    CHECK_FALSE(fs::exists(db));
    // One error line, after the progress lines.
    const size_t at = r.err.find("kvscope: error: ");
    return at == std::string::npos ? r.err : r.err.substr(at);
  };
  const std::string call = "choose_bits(layer_id=0, kv_kind='k', head_group=0, token_stats[block 0: tokens 0..31], "
                           "budget_state={bits_spent: 0, entries_done: 0})";
  CHECK(run("greedy.py", "return 8") ==
        "kvscope: error: " + dir.path("greedy.py") + ": " + call +
            " returned 8: overspends the budget of 3 bits per KV entry (256 bits for 32 entries after this block, at most 96)\n");
  CHECK(run("typed.py", "return '4'") == "kvscope: error: " + dir.path("typed.py") + ": " + call + " returned '4': must be an int\n");
  CHECK(run("raises.py", "return 1 // 0") ==
        "kvscope: error: " + dir.path("raises.py") + ":4: ZeroDivisionError: integer division or modulo by zero (in " + call + ")\n");
}

TEST_CASE("replay --chat stores each item's rendered prompt and its ids; runs show lists them", "[chat][cli]") {
  TempDir dir;
  const fs::path src = llama8(), m = dir.dir / "chat-model";
  fs::create_directories(m);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) fs::create_symlink(src / f, m / f);
  std::ofstream(m / "tokenizer_config.json") << nlohmann::json{
      {"bos_token", "<s>"}, {"chat_template", "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}"}}
                                                    .dump();
  std::ofstream(dir.path("q.jsonl")) << R"({"prompt": "Tom had a dog named", "answer": "Max"})" << "\n";
  const std::string db = dir.path("runs.sqlite");
  const auto r = run_cli(dir, "replay --model " + m.string() + " --chat --preset kivi-2 --max-tokens 2 --db " + db +
                                  " --workload jsonl:" + dir.path("q.jsonl"));
  REQUIRE(r.rc == 0);
  RunStore store(db, {.read_only = true});
  const StoredRun run = store.load_run(store.list_runs()[0].id);
  REQUIRE(run.replay_items.size() == 1);
  const std::string text = "<s>[INST] Tom had a dog named [/INST]";
  CHECK(run.replay_items[0].chat_text == text);
  auto tok = load_tokenizer(m.string());
  CHECK(run.replay_items[0].token_ids == nlohmann::json(tok->encode_special(text)).dump());
  CHECK(run.replay_items[0].blocks.empty());  // no policy script
  const std::string shown = run_cli(dir, "runs show " + std::to_string(run.id) + " --db " + db).out;
  CHECK(shown.find("chat prompt") != std::string::npos);
  CHECK(shown.find("    | " + text) != std::string::npos);
}
