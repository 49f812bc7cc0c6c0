// The command line's --chat and policy scripts: dump renders through the model folder's template
// and stores the rendered text and ids; refusals are one line; a failing script stores nothing.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/tokenizer/tokenizer.h"
#include "test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

using kvscope::test::run_cli;
using kvscope::test::slurp;
using Result = kvscope::test::CliRun;

const std::string kLlama2Template =
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}";

// tinystories-llama-8L with a Llama-2-style chat template beside it (the weights linked, not copied).
std::string chat_model(const TempDir& dir) {
  const fs::path src = fs::path(kvscope::test::models_dir()) / "tinystories-llama-8L", dst = dir.dir / "chat-model";
  fs::create_directories(dst);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"}) fs::create_symlink(src / f, dst / f);
  nlohmann::json cfg = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"chat_template", kLlama2Template}};
  std::ofstream(dst / "tokenizer_config.json") << cfg.dump(2);
  return dst.string();
}

int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST_CASE("dump --chat renders the conversation and stores its text and ids, special tokens one id each", "[chat][cli]") {
  TempDir dir;
  const std::string m = chat_model(dir);
  std::ofstream(dir.path("conv.json")) << R"([{"role": "user", "content": "Once upon a time"},
    {"role": "assistant", "content": "there was a cat."}, {"role": "user", "content": "What next?"}])";
  const Result r = run_cli(dir, "dump --model " + m + " --chat --messages " + dir.path("conv.json") + " --no-q --out " +
                                    dir.path("d.safetensors"));
  REQUIRE(r.rc == 0);
  const KvDump d = load_dump(dir.path("d.safetensors"), DumpLoadOptions{});
  const std::string text = "<s>[INST] Once upon a time [/INST] there was a cat.</s><s>[INST] What next? [/INST]";
  CHECK(d.meta.prompt == text);
  auto tok = load_tokenizer(m);
  CHECK(d.meta.token_ids == tok->encode_special(text));
  CHECK(d.meta.token_ids.front() == tok->bos_id());
  CHECK(std::count(d.meta.token_ids.begin(), d.meta.token_ids.end(), tok->bos_id()) == 2);
  CHECK(std::count(d.meta.token_ids.begin(), d.meta.token_ids.end(), tok->eos_id()) == 1);
}

TEST_CASE("--chat without a template, messages without --chat: one line each", "[chat][cli]") {
  TempDir dir;
  const std::string plain = kvscope::test::models_dir() + "/tinystories-llama-8L";
  Result r = run_cli(dir, "dump --model " + plain + " --chat --prompt hi --out " + dir.path("d.safetensors"));
  CHECK(r.rc == 1);
  CHECK(r.err == "kvscope: error: " + plain +
                     ": no chat template (no tokenizer_config.json or chat_template.jinja); --chat needs one\n");
  CHECK_FALSE(fs::exists(dir.path("d.safetensors")));

  std::ofstream(dir.path("q.jsonl")) << R"({"messages": [{"role": "user", "content": "Tom had a dog named"}], "answer": "Max"})"
                                     << "\n";
  r = run_cli(dir, "replay --model " + plain + " --preset kivi-2 --no-store --workload jsonl:" + dir.path("q.jsonl"));
  CHECK(r.rc == 1);
  CHECK(r.err == "kvscope: error: " + dir.path("q.jsonl") +
                     ":1: \"messages\" needs --chat (the model's chat template renders them)\n");

  // With a template the same workload replays.
  const std::string m = chat_model(dir);
  r = run_cli(dir, "replay --model " + m + " --chat --preset kivi-2 --no-store --max-tokens 2 --workload jsonl:" +
                       dir.path("q.jsonl"));
  CHECK(r.rc == 0);
  CHECK(r.out.find("TEST_METRICS") != std::string::npos);
}

TEST_CASE("quantize --policy script.py: a failing hook is one line and nothing is stored", "[script][cli]") {
  TempDir dir;
  REQUIRE(run_cli(dir, "synth --layers 2 --tokens 256 --out " + dir.path("d.safetensors")).rc == 0);
  std::ofstream(dir.path("bad.py")) << "class AdaptiveQuantPolicy:\n"
                                       "    def residual_length(self, layer_id, request_meta):\n"
                                       "        return 'long'\n";
  const std::string db = dir.path("runs.sqlite");
  Result r = run_cli(dir, "quantize --dump " + dir.path("d.safetensors") + " --policy " + dir.path("bad.py") + " --db " + db);
  CHECK(r.rc == 1);
  CHECK(r.err == "kvscope: error: " + dir.path("bad.py") +
                     ": residual_length(layer_id=0, request_meta) returned 'long': must be an int\n");
  CHECK(lines(r.err) == 1);
  CHECK_FALSE(fs::exists(db));

  std::ofstream(dir.path("good.py")) << "class AdaptiveQuantPolicy:\n"
                                        "    def choose_bits(self, layer_id, kv_kind, head_group, token_stats, budget_state):\n"
                                        "        return 4 if token_stats['absmax'].max() > 20 else 2\n";
  r = run_cli(dir, "quantize --dump " + dir.path("d.safetensors") + " --policy " + dir.path("good.py") + " --db " + db);
  CHECK(r.rc == 0);
  CHECK(fs::exists(db));
}
