// Base-distribution files: a replay against a saved reference gives the same numbers, bit for bit,
// as one that decodes the reference itself; a file from another model or workload, or a damaged
// one, is refused with one line naming it.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "core/model/model.h"
#include "core/replay/base_distribution.h"
#include "core/replay/replay.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

namespace {

std::string models() { return kvscope::test::models_dir(); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Wall-clock fields differ between any two runs; everything else must be identical.
bool is_timing(const std::string& name) {
  return name == "decode_tokens_per_s" || name == "ref_decode_tokens_per_s" || name == "prefill_latency_ms" ||
         name == "calibration_cost_s";
}

}  // namespace

TEST_CASE("replay against a saved base distribution is bit-identical to the in-run reference", "[base]") {
  const std::string dir = models() + "/stories260K";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const std::string qa = std::string("jsonl:") + KVSCOPE_SOURCE_DIR + "/tests/core/replay/data/stories_qa.jsonl;max_new=6";
  const std::string text = "text:" + models() + "/../data/tinystories_validation_head.txt;window=96;n=2";
  auto slices = load_workloads({text, "passkey:len=200,depth=0.5,n=1,max_new=4", qa}, *tok, model->config().max_position_embeddings);
  slices[2].items.resize(2);  // two QA prompts are enough
  const Policy policy = load_preset("uniform-2");  // no fp16 window: every slice has KL > 0
  const auto in_run = run_replay(*model, *tok, slices, policy);

  TempDir tmp;
  BaseDistribution base = compute_base(*model, slices);
  base.model_id = "stories260K";
  base.model_hash = "fnv1a64:0123456789abcdef";
  base.workload = "test";
  save_base(tmp.path("base.kvb"), base);
  const BaseDistribution loaded = load_base(tmp.path("base.kvb"));
  check_base_matches(loaded, tmp.path("base.kvb"), "fnv1a64:0123456789abcdef", model->config().vocab_size, slices);
  ReplayOptions ro;
  ro.base = &loaded;
  const auto from_file = run_replay(*model, *tok, slices, policy, ro);

  REQUIRE(in_run.size() == from_file.size());
  for (size_t i = 0; i < in_run.size(); ++i) {
    const auto a = in_run[i].fields(), b = from_file[i].fields();
    REQUIRE(a.size() == b.size());
    for (size_t j = 0; j < a.size(); ++j) {
      INFO(in_run[i].slice << " " << a[j].first);
      REQUIRE(a[j].first == b[j].first);
      if (!is_timing(a[j].first)) CHECK(a[j].second == b[j].second);  // bit for bit
    }
    CHECK(in_run[i].next_token_kl > 0);  // uniform-2 is not the reference
  }
}

TEST_CASE("a base distribution from another model or workload, or a damaged file, is refused", "[base]") {
  const std::string dir = models() + "/stories260K";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const std::string text = "text:" + models() + "/../data/tinystories_validation_head.txt;window=64;n=1";
  auto slices = load_workloads({text}, *tok, model->config().max_position_embeddings);
  TempDir tmp;
  const std::string path = tmp.path("base.kvb");
  BaseDistribution base = compute_base(*model, slices);
  base.model_hash = "fnv1a64:aaaaaaaaaaaaaaaa";
  save_base(path, base);
  const BaseDistribution b = load_base(path);
  const int V = model->config().vocab_size;

  std::string e = error_of([&] { check_base_matches(b, path, "fnv1a64:bbbbbbbbbbbbbbbb", V, slices); });
  CHECK(e.find(path) == 0);
  CHECK(e.find("made with model") != std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  e = error_of([&] { check_base_matches(b, path, "fnv1a64:aaaaaaaaaaaaaaaa", 32000, slices); });
  CHECK(e.find("vocabulary of 512") != std::string::npos);
  auto two = load_workloads({"text:" + models() + "/../data/tinystories_validation_head.txt;window=64;n=2"}, *tok, 512);
  e = error_of([&] { check_base_matches(b, path, "", V, two); });
  CHECK(e.find("with 1 items, this workload's is") != std::string::npos);
  auto shorter = slices;
  shorter[0].items[0].target.resize(10);  // --max-tokens 10
  e = error_of([&] { check_base_matches(b, path, "", V, shorter); });
  CHECK(e.find("other token ids") != std::string::npos);
  CHECK(error_of([&] { check_base_matches(b, path, "", V, slices); }).empty());

  // Damaged files: each one line naming the file.
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(tmp.path(name), std::ios::binary) << content;
    return tmp.path(name);
  };
  const std::vector<std::pair<std::string, std::string>> bad = {
      {write("empty.kvb", ""), "too short"},
      {write("magic.kvb", "NOTABASE" + bytes.substr(8)), "bad magic"},
      {write("cut.kvb", bytes.substr(0, bytes.size() - 4)), "truncated"},
      {write("tail.kvb", bytes + "x"), "after its last item"},
      {write("header.kvb", bytes.substr(0, 12) + std::string(bytes.size() - 12, '{')), "not valid JSON"},
  };
  for (const auto& [p, what] : bad) {
    INFO(p);
    const std::string msg = error_of([&] { load_base(p); });
    CHECK(msg.find(p) == 0);
    CHECK(msg.find(what) != std::string::npos);
  }
  CHECK(error_of([&] { load_base(tmp.path("missing.kvb")); }).find("cannot open") != std::string::npos);
}
