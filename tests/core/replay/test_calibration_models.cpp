// Calibration on the shared real models: what the collector captures is what the cache stores, online
// calibration that keeps everything fp16 reproduces the reference exactly, and calibrated policies run
// within their budget.
#include <catch2/catch.hpp>

#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/model/model.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/replay/replay.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "test_util.h"

using namespace kvscope;

namespace {

std::string shared_data(const std::string& name) {
  const char* env = std::getenv("KVSCOPE_TEST_DATA");
  const std::string dir = env && *env ? env : kvscope::test::models_dir() + "/../data";
  return dir + "/" + name;
}

Policy parse(const std::string& text) { return parse_policy(nlohmann::json::parse(text), "p.json"); }

}  // namespace

TEST_CASE("text calibration captures the first N tokens' K and V as the fp16 cache stores them") {
  const std::string dir = kvscope::test::models_dir() + "/tinystories-qwen2-4L";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  CalibrationSpec spec;
  spec.mode = CalibrationSpec::Mode::Text;
  spec.text = shared_data("tinystories_validation_head.txt");
  spec.tokens = 40;
  const Calibration c = calibrate_on_text(*model, *tok, spec, "test");
  REQUIRE(c.tokens == 40);
  // Independent path: the same tokens through the reference cache.
  std::vector<int32_t> ids = tok->encode(read_file(spec.text), true);
  ids.resize(40);
  const ModelConfig& cfg = model->config();
  Fp16KvCache ref(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, 40);
  model->forward(ids, ref);
  for (int l = 0; l < cfg.num_layers; ++l) {
    const KvLayerView v = ref.view(l);
    for (int h = 0; h < cfg.num_kv_heads; ++h)
      for (int t = 0; t < 40; ++t)
        for (int d = 0; d < cfg.head_dim; ++d) {
          const size_t i = (static_cast<size_t>(h) * 40 + t) * cfg.head_dim + d;
          REQUIRE(c.k[l][i] == v.k[h * v.head_stride + t * cfg.head_dim + d]);
          REQUIRE(c.v[l][i] == v.v[h * v.head_stride + t * cfg.head_dim + d]);
        }
  }
  CHECK(c.seconds > 0);
  spec.tokens = 5000;  // more than the model's 1024 positions, the file has more tokens than that
  CHECK_THROWS_WITH(calibrate_on_text(*model, *tok, spec, "test"), Catch::Contains("$.calibration.tokens"));
}

TEST_CASE("online calibration keeping every head fp16 reproduces the reference exactly") {
  const std::string dir = kvscope::test::models_dir() + "/stories260K";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const ModelConfig& cfg = model->config();
  // count = every K head; V fp16: the calibrated policy must leave the cache exactly fp16.
  const Policy p = parse(fmt::format(R"({{"method":"uniform","k":{{"bits":2}},"v":{{"fp16":true}},"calibration":{{"mode":"online"}},
                                        "outlier_heads":{{"rule":"count","count":{}}}}})",
                                     cfg.num_layers * cfg.num_kv_heads));
  const auto slices = load_workloads({"text:" + shared_data("tinystories_validation_head.txt") + ";window=128;n=2",
                                      "passkey:len=200,depth=0.5,n=1,max_new=6"},
                                     *tok, cfg.max_position_embeddings);
  for (const auto& s : run_replay(*model, *tok, slices, p)) {
    INFO(s.slice);
    CHECK(s.greedy_match_ratio == 1.0);
    CHECK(s.next_token_kl == 0.0);
    CHECK(s.cache_error == 0.0);
    CHECK(s.avg_bits_per_kv_token == 16.0);
    CHECK(s.calibration_cost_s > 0.0);
  }
}

TEST_CASE("calibrated policies on a real model: budgets hold, calibration is timed, errors are clear") {
  const std::string dir = kvscope::test::models_dir() + "/tinystories-llama-8L";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const ModelConfig& cfg = model->config();
  const auto slices = load_workloads({"text:" + shared_data("tinystories_validation_head.txt") + ";window=256;n=1"}, *tok,
                                     cfg.max_position_embeddings);
  // Attention-guided bits within bit_range [2, 4] and an average of 3: the plan's nominal bits obey both.
  const Policy adaptive = load_preset("kivi-qaq-3");
  CalibrationSpec spec;
  spec.mode = CalibrationSpec::Mode::Text;
  spec.text = shared_data("pg11_alice_in_wonderland.txt");
  spec.tokens = 256;
  const Calibration c = calibrate_on_text(*model, *tok, spec, "test");
  const auto plans = plan_replay_heads(cfg, adaptive, &c);
  CHECK(nominal_bits_of_plans(plans) <= 3.0 + 1e-12);
  int low = 0, high = 0;
  for (const auto& p : plans) {
    CHECK(p.attention_chosen);
    CHECK(p.quant.bits >= 2);
    CHECK(p.quant.bits <= 4);
    low += p.quant.bits == 2;
    high += p.quant.bits == 4;
  }
  CHECK(low + high > 0);  // not one uniform width

  const auto m = run_replay(*model, *tok, slices, adaptive)[0];
  CHECK(m.calibration_cost_s > 0.0);
  CHECK(m.greedy_match_ratio > 0.5);

  // Text mode: the calibration text is read once; a missing file names the JSON path.
  Policy text = parse(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},"outlier_heads":{"rule":"count","count":2},
                          "calibration":{"mode":"text","text":"x","tokens":128}})");
  text.calibration.text = shared_data("pg11_alice_in_wonderland.txt");
  const auto t = run_replay(*model, *tok, slices, text)[0];
  CHECK(t.calibration_cost_s > 0.0);
  CHECK(t.avg_bits_per_kv_token > 8.0);
  text.calibration.text = shared_data("no_such_calibration.txt");
  CHECK_THROWS_WITH(run_replay(*model, *tok, slices, text), Catch::Contains("no_such_calibration.txt"));

  // --bit-budget applies to the calibrated plan: kvmix with 2 fp16 K heads is above 8 bits.
  ReplayOptions o;
  o.bit_budget = 8.0;
  text.calibration.text = shared_data("pg11_alice_in_wonderland.txt");
  CHECK_THROWS_WITH(run_replay(*model, *tok, slices, text, o), Catch::Contains("(--bit-budget)"));
}
