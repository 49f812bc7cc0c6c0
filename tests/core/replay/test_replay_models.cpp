// Replay on the shared real models: the fp16 preset reproduces the reference exactly, the quantized
// presets order as the literature says, workloads reject bad input.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <map>

#include "core/model/model.h"
#include "core/replay/replay.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

namespace {

struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tok;
};

const Loaded& load(const std::string& name) {
  static std::map<std::string, Loaded> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    const std::string dir = kvscope::test::models_dir() + "/" + name;
    Loaded l{Model::load(dir), load_tokenizer(dir)};
    it = cache.emplace(name, std::move(l)).first;
  }
  return it->second;
}

std::string data_file(const std::string& name) {
  const char* env = std::getenv("KVSCOPE_TEST_DATA");
  const std::string dir = env && *env ? env : kvscope::test::models_dir() + "/../data";
  return dir + "/" + name;
}

std::vector<SliceMetrics> replay(const std::string& model, const std::vector<std::string>& specs, const Policy& p) {
  const Loaded& l = load(model);
  auto slices = load_workloads(specs, *l.tok, l.model->config().max_position_embeddings);
  return run_replay(*l.model, *l.tok, slices, p);
}

}  // namespace

TEST_CASE("fp16 preset replay equals the reference exactly") {
  const auto text = "text:" + data_file("tinystories_validation_head.txt") + ";window=128;n=2";
  for (const std::string model : {"stories260K", "tinystories-llama-8L"}) {
    INFO(model);
    const std::string qa = std::string("jsonl:") + KVSCOPE_SOURCE_DIR + "/tests/core/replay/data/stories_qa.jsonl";
    const auto m = replay(model, {text, "passkey:len=200,depth=0.5,n=1,max_new=6", qa}, load_preset("fp16"));
    REQUIRE(m.size() == 3);
    for (const auto& s : m) {
      CHECK(s.steps > 0);
      CHECK(s.greedy_match_ratio == 1.0);
      CHECK(s.next_token_kl == 0.0);
      CHECK(s.quality_delta_vs_ref == 0.0);
      CHECK(s.ppl_delta == 0.0);
      CHECK(s.cache_error == 0.0);
      CHECK(s.avg_bits_per_kv_token == 16.0);
      CHECK(s.peak_kv_memory_mb == Approx(s.ref_peak_kv_memory_mb));
    }
    CHECK(m[0].quality_main > 0.2);  // the model predicts its own training distribution
  }
  // The jsonl answers are tinystories-llama-8L's own greedy continuations (kvscope generate).
  const std::string qa = std::string("jsonl:") + KVSCOPE_SOURCE_DIR + "/tests/core/replay/data/stories_qa.jsonl";
  const auto m = replay("tinystories-llama-8L", {qa}, load_preset("kivi-2"));
  CHECK(m[0].quality_ref == 1.0);
  CHECK(m[0].items == 6);
  CHECK(m[0].steps == 11);
}

TEST_CASE("kivi-4 stays close to fp16; uniform-2 per-token keys are worse than kivi-2") {
  // 512-token windows: 256 prompt + 256 scored, so KIVI quantizes most of the context.
  const auto text = "text:" + data_file("tinystories_validation_head.txt") + ";window=512;n=1";
  const auto kivi4 = replay("tinystories-llama-8L", {text}, load_preset("kivi-4"))[0];
  const auto kivi2 = replay("tinystories-llama-8L", {text}, load_preset("kivi-2"))[0];
  const auto uni2 = replay("tinystories-llama-8L", {text}, load_preset("uniform-2"))[0];
  for (const auto* s : {&kivi4, &kivi2, &uni2})
    std::printf("replay %-20s KL %.5f match %.4f ppl_delta %.4f cache_error %.5f bits %.3f\n", s->slice.c_str(),
                s->next_token_kl, s->greedy_match_ratio, s->ppl_delta, s->cache_error, s->avg_bits_per_kv_token);
  CHECK(kivi4.next_token_kl < 0.01);
  CHECK(kivi4.greedy_match_ratio > 0.95);
  CHECK(std::abs(kivi4.ppl_delta) < 0.02 * kivi4.ppl_ref);
  CHECK(uni2.next_token_kl > kivi2.next_token_kl);
  CHECK(uni2.ppl_delta > kivi2.ppl_delta);
  CHECK(kivi2.next_token_kl > kivi4.next_token_kl);
}

TEST_CASE("Workload errors name the file and the problem") {
  const Loaded& l = load("stories260K");
  const int max_pos = l.model->config().max_position_embeddings;  // 512
  TempDir dir;
  SECTION("malformed workload file") {
    std::ofstream(dir.path("w.txt")) << "# comment\npasskey:len=200,depth=0.5,n=1\nbogus line\n";
    CHECK_THROWS_WITH(load_workloads({"file:" + dir.path("w.txt")}, *l.tok, max_pos),
                      Catch::Contains("w.txt:3") && Catch::Contains("must look like"));
  }
  SECTION("malformed jsonl") {
    std::ofstream(dir.path("q.jsonl")) << R"({"prompt": "Once upon", "answer": "a time"})" << "\n{\"prompt\": 3}\n";
    CHECK_THROWS_WITH(load_workloads({"jsonl:" + dir.path("q.jsonl")}, *l.tok, max_pos),
                      Catch::Contains("q.jsonl:2") && Catch::Contains("\"prompt\" must be a string"));
  }
  SECTION("context longer than the model supports") {
    CHECK_THROWS_WITH(load_workloads({"passkey:len=600,depth=0.5,n=1"}, *l.tok, max_pos),
                      Catch::Contains("max_position_embeddings (512)"));
    CHECK_THROWS_WITH(load_workloads({"text:" + data_file("pg11_alice_in_wonderland.txt") + ";window=1024"}, *l.tok, max_pos),
                      Catch::Contains("max_position_embeddings"));
  }
  SECTION("missing file and unknown kind") {
    CHECK_THROWS_WITH(load_workloads({"text:" + dir.path("nope.txt")}, *l.tok, max_pos), Catch::Contains("nope.txt"));
    CHECK_THROWS_WITH(load_workloads({"wiki:x"}, *l.tok, max_pos), Catch::Contains("unknown workload kind 'wiki'"));
    CHECK_THROWS_WITH(load_workloads({"passkey:len=100,depth=2"}, *l.tok, max_pos), Catch::Contains("depth"));
  }
  SECTION("unknown preset") { CHECK_THROWS_WITH(load_preset("kivi-3"), Catch::Contains("kivi-3")); }
}

TEST_CASE("Passkey prompts have the requested length and contain the key at the requested depth") {
  const Loaded& l = load("tinystories-llama-8L");
  const auto s = load_workloads({"passkey:len=300,depth=0.25,n=2"}, *l.tok, 1024);
  REQUIRE(s.size() == 1);
  REQUIRE(s[0].items.size() == 2);
  for (const auto& it : s[0].items) {
    CHECK(it.prompt.size() <= 300);
    CHECK(it.prompt.size() > 280);
    const std::string text = l.tok->decode(it.prompt);
    const auto at = text.find("The pass key is " + it.answer);
    REQUIRE(at != std::string::npos);
    const double depth = static_cast<double>(at) / static_cast<double>(text.size());
    CHECK(depth > 0.15);
    CHECK(depth < 0.35);
  }
  CHECK(s[0].items[0].answer != s[0].items[1].answer);
}

TEST_CASE("Answer scoring") {
  CHECK(answer_exact_match("  a time\nand more", "a time "));
  CHECK_FALSE(answer_exact_match("a time and more", "a time"));
  CHECK(answer_contains("the key is 12345.", "12345"));
  CHECK_FALSE(answer_contains("the key is 1234.", "12345"));
  CHECK_FALSE(answer_contains("anything", "  "));
}
