// KVSmooth folded into real checkpoints: logits unchanged (exactly up to float rounding for f32,
// measured for f16), smoothed keys bounded by 1 on the calibration text, include/exclude, Qwen3 norms.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>

#include "core/model/kvsmooth_fold.h"
#include "core/model/model.h"
#include "core/tensor/safetensors.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "synthetic.h"
#include "test_util.h"

using namespace kvscope;

namespace {

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  auto cache = m.new_cache(static_cast<int>(ids.size()));
  ForwardOptions fo;
  fo.all_logits = true;
  return m.forward(ids, *cache, fo);
}

// Max |K| of each (layer, channel) over ids with the given model.
std::vector<float> max_k(const Model& m, const std::vector<int32_t>& ids) {
  const auto& c = m.config();
  std::vector<float> mk(static_cast<size_t>(c.num_layers) * c.num_kv_heads * c.head_dim, 0.0f);
  CaptureHook hook = [&](const LayerActivations& a) {
    for (int i = 0; i < c.num_kv_heads * a.n * c.head_dim; ++i) {
      int h = i / (a.n * c.head_dim), d = i % c.head_dim;
      float& slot = mk[(static_cast<size_t>(a.layer) * c.num_kv_heads + h) * c.head_dim + d];
      slot = std::max(slot, std::fabs(a.k[i]));
    }
  };
  ForwardOptions fo;
  fo.capture = &hook;
  auto cache = m.new_cache(static_cast<int>(ids.size()));
  m.forward(ids, *cache, fo);
  return mk;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, double(std::fabs(a[i]))), d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d / scale;
}

}  // namespace

TEST_CASE("KVSmooth fold on tinystories-llama-8L (f32): logits unchanged, calibrated keys <= 1") {
  const std::string src = test::models_dir() + "/tinystories-llama-8L";
  TempDir dir;
  auto tok = load_tokenizer(src);
  auto model = Model::load(src);
  auto calib = tok->encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", true);
  auto eval = tok->encode("Tom had a big red ball. He threw it to his dog and the dog ran fast.", true);
  SmoothOptions o;
  KvSmoothFold f = kvsmooth_calibrate(*model, calib, o);
  CHECK_FALSE(f.norm_fusion);
  kvsmooth_write_checkpoint(src, model->config(), f, dir.path("smoothed"));
  auto smoothed = Model::load(dir.path("smoothed"));
  CHECK(max_rel_diff(logits_of(*model, eval), logits_of(*smoothed, eval)) < 1e-4);
  CHECK(model->generate_greedy(eval, 12) == smoothed->generate_greedy(eval, 12));
  auto mk = max_k(*smoothed, calib);
  CHECK(*std::max_element(mk.begin(), mk.end()) <= 1.0f + 1e-4f);  // factor 1: every pair's max is 1
  auto before = max_k(*model, calib);
  CHECK(*std::max_element(before.begin(), before.end()) > 2.0f);
  // The folded folder is refused as an output a second time.
  CHECK_THROWS_WITH(kvsmooth_write_checkpoint(src, model->config(), f, dir.path("smoothed")), Catch::Contains("already holds a model"));
}

TEST_CASE("KVSmooth fold on tinystories-qwen2-4L (f16, q/k biases): identity measured in f16") {
  const std::string src = test::models_dir() + "/tinystories-qwen2-4L";
  TempDir dir;
  auto tok = load_tokenizer(src);
  auto model = Model::load(src);
  auto calib = tok->encode("It is a truth universally acknowledged, that a single man in possession of a good fortune.", true);
  SmoothOptions o;
  o.exclude = {"model.layers.0.self_attn"};
  KvSmoothFold f = kvsmooth_calibrate(*model, calib, o);
  CHECK(f.scales[0].empty());
  CHECK_FALSE(f.scales[1].empty());
  kvsmooth_write_checkpoint(src, model->config(), f, dir.path("s"));
  // Layer 0 is bit-identical; layer 1's k_proj bias is divided by the scales (up to fp16 rounding).
  auto a = SafetensorsFile::open(src + "/model.safetensors");
  auto b = SafetensorsFile::open(dir.path("s") + "/model.safetensors");
  CHECK(a->read_f32("model.layers.0.self_attn.k_proj.weight") == b->read_f32("model.layers.0.self_attn.k_proj.weight"));
  auto kb0 = a->read_f32("model.layers.1.self_attn.k_proj.bias"), kb1 = b->read_f32("model.layers.1.self_attn.k_proj.bias");
  CHECK(kb1[5] == Approx(kb0[5] / f.scales[1][5]).epsilon(2e-3));
  CHECK(b->find("model.layers.1.self_attn.k_proj.weight")->dtype == DType::F16);
  auto smoothed = Model::load(dir.path("s"));
  auto eval = tok->encode("Mr. Bennet was among the earliest of those who waited on Mr. Bingley.", true);
  double rel = max_rel_diff(logits_of(*model, eval), logits_of(*smoothed, eval));
  INFO("f16 fold: max relative logit change " << rel);
  CHECK(rel < 2e-2);  // fp16 rounding of the rescaled weights, not an exact identity
  auto mk = max_k(*smoothed, calib);
  for (int l = 1; l < 4; ++l)
    for (int i = 0; i < 2 * 64; ++i) CHECK(mk[l * 128 + i] <= 1.02f);
}

TEST_CASE("KVSmooth fold on a Qwen3 checkpoint goes into q_norm / k_norm, shared over heads") {
  TempDir dir;
  std::filesystem::create_directories(dir.path("q3"));
  synth::Spec s;
  s.arch = "Qwen3ForCausalLM";
  s.qk_norm = true;
  synth::write_model(dir.path("q3"), s);
  auto model = Model::load(dir.path("q3"));
  std::vector<int32_t> ids = {1, 5, 9, 13, 2, 7, 30, 41, 11, 3};
  KvSmoothFold f = kvsmooth_calibrate(*model, ids, SmoothOptions{});
  REQUIRE(f.norm_fusion);
  REQUIRE(f.scales[0].size() == static_cast<size_t>(s.head_dim));
  kvsmooth_write_checkpoint(dir.path("q3"), model->config(), f, dir.path("q3s"));
  auto smoothed = Model::load(dir.path("q3s"));
  CHECK(max_rel_diff(logits_of(*model, ids), logits_of(*smoothed, ids)) < 1e-4);
  auto a = SafetensorsFile::open(dir.path("q3") + "/model.safetensors");
  auto b = SafetensorsFile::open(dir.path("q3s") + "/model.safetensors");
  CHECK(a->read_f32("model.layers.0.self_attn.k_proj.weight") == b->read_f32("model.layers.0.self_attn.k_proj.weight"));
  CHECK(b->read_f32("model.layers.0.self_attn.k_norm.weight")[2] ==
        Approx(a->read_f32("model.layers.0.self_attn.k_norm.weight")[2] / f.scales[0][2]));
  // One scale per channel for all heads: max over heads of the pair maxima.
  auto mk = max_k(*smoothed, ids);
  CHECK(*std::max_element(mk.begin(), mk.end()) <= 1.0f + 1e-4f);
  SmoothOptions bad;
  bad.include = {"model.layers.9.*"};
  CHECK_THROWS_WITH(kvsmooth_calibrate(*model, ids, bad), Catch::Contains("pattern 'model.layers.9.*' matched no attention module"));
}
