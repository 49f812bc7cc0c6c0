// Code paths no shared checkpoint exercises (Mistral, Qwen3, rope scaling, untied heads, BF16,
// sharding), on tiny random checkpoints, against the double-precision reference in synthetic.h.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/model/capture.h"
#include "core/model/model.h"
#include "synthetic.h"
#include "test_util.h"

using namespace kvscope;

namespace {

const std::vector<int32_t> kIds = {1, 7, 42, 3, 3, 19, 0, 49, 25, 11, 8, 30};

double max_rel_diff(const std::vector<float>& got, const std::vector<double>& want) {
  double scale = 1.0, worst = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]) / scale);
  return worst;
}

double max_abs_diff(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double worst = 0;
  for (size_t p = 0; p < a.size(); ++p)
    for (size_t i = 0; i < a[p].size(); ++i) worst = std::max(worst, std::abs(a[p][i] - b[p][i]));
  return worst;
}

// Loads the written model, runs a full prefill with all logits, compares logits and keys.
void check_against_reference(const synth::Spec& spec, int shards = 1) {
  TempDir tmp;
  const auto weights = synth::write_model(tmp.dir.string(), spec, shards);
  const auto ref = synth::reference_forward(spec, weights, kIds);
  auto model = Model::load(tmp.dir.string());
  auto cache = model->new_cache();
  ForwardOptions fo;
  fo.all_logits = true;
  const std::vector<float> logits = model->forward(kIds, *cache, fo);
  REQUIRE(logits.size() == kIds.size() * spec.vocab);
  for (size_t p = 0; p < kIds.size(); ++p) {
    INFO("position " << p);
    const std::vector<float> row(logits.begin() + p * spec.vocab, logits.begin() + (p + 1) * spec.vocab);
    CHECK(max_rel_diff(row, ref.logits[p]) < 1e-4);
  }
  const KvDump dump = capture_dump(*model, kIds, {});
  for (int l = 0; l < spec.layers; ++l)
    for (int h = 0; h < spec.kv_heads; ++h)
      for (size_t p = 0; p < kIds.size(); ++p)
        for (int i = 0; i < spec.head_dim; ++i)
          CHECK(std::abs(dump.k(l, h)[p * spec.head_dim + i] - ref.keys[l][h][p][i]) < 1e-4);
}

}  // namespace

TEST_CASE("Llama, GQA, untied lm_head: full prefill equals the reference", "[model][synthetic]") {
  synth::Spec s;
  check_against_reference(s);
  // The test can tell the HF mapping (query head j -> kv head j / G) from j % kv_heads.
  TempDir tmp;
  const auto w = synth::write_model(tmp.dir.string(), s);
  CHECK(max_abs_diff(synth::reference_forward(s, w, kIds).logits,
                     synth::reference_forward(s, w, kIds, {.wrong_gqa = true}).logits) > 1e-2);
}

TEST_CASE("Qwen2: q/k/v biases are applied (F16 weights)", "[model][synthetic]") {
  synth::Spec s;
  s.arch = "Qwen2ForCausalLM";
  s.bias = true;
  s.dtype = DType::F16;
  check_against_reference(s);
  TempDir tmp;
  const auto w = synth::write_model(tmp.dir.string(), s);
  CHECK(max_abs_diff(synth::reference_forward(s, w, kIds).logits,
                     synth::reference_forward(s, w, kIds, {.ignore_bias = true}).logits) > 1e-2);
}

TEST_CASE("Qwen3: per-head q/k RMSNorm before RoPE, explicit head_dim, tied without lm_head (BF16)",
          "[model][synthetic]") {
  synth::Spec s;
  s.arch = "Qwen3ForCausalLM";
  s.qk_norm = true;
  s.hidden = 24;
  s.heads = 4;
  s.kv_heads = 1;     // G = 4
  s.head_dim = 16;    // != hidden / heads
  s.tied = true;
  s.write_lm_head = false;
  s.dtype = DType::BF16;
  s.theta = 1000000.0;
  check_against_reference(s);
  TempDir tmp;
  const auto w = synth::write_model(tmp.dir.string(), s);
  CHECK(max_abs_diff(synth::reference_forward(s, w, kIds).logits,
                     synth::reference_forward(s, w, kIds, {.ignore_qk_norm = true}).logits) > 1e-2);
}

TEST_CASE("Mistral: sliding window masks positions before the window", "[model][synthetic]") {
  synth::Spec s;
  s.arch = "MistralForCausalLM";
  s.sliding_window = 5;
  s.kv_heads = 4;  // plain multi-head attention
  check_against_reference(s);
  // The window matters for these 12 tokens.
  TempDir tmp;
  const auto w = synth::write_model(tmp.dir.string(), s);
  synth::Spec full = s;
  full.sliding_window = 0;
  CHECK(max_abs_diff(synth::reference_forward(s, w, kIds).logits, synth::reference_forward(full, w, kIds).logits) > 1e-2);
}

TEST_CASE("RoPE scaling: linear and llama3", "[model][synthetic]") {
  synth::Spec s;
  s.theta = 500000.0;
  s.head_dim = 16;
  s.rope_scaling = {{"type", "linear"}, {"factor", 4.0}};
  check_against_reference(s);
  s.rope_scaling = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                    {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  // With original context 64 the 8 frequencies of head_dim 16 fall in all three llama3 bands.
  int low = 0, mid = 0, high = 0;
  for (int i = 0; i < s.head_dim / 2; ++i) {
    const double wl = 2 * M_PI * std::pow(s.theta, 2.0 * i / s.head_dim);
    (wl > 64.0 ? low : wl < 16.0 ? high : mid)++;
  }
  CHECK(low > 0);
  CHECK(mid > 0);
  CHECK(high > 0);
  check_against_reference(s);
}

TEST_CASE("Sharded checkpoint (model.safetensors.index.json) loads", "[model][synthetic]") {
  synth::Spec s;
  s.tied = true;
  s.write_lm_head = true;
  check_against_reference(s, /*shards=*/3);
}

TEST_CASE("Incremental decode equals a full prefill", "[model][synthetic]") {
  for (const char* arch : {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"}) {
    INFO(arch);
    synth::Spec s;
    s.arch = arch;
    s.bias = std::string(arch) == "Qwen2ForCausalLM";
    s.qk_norm = std::string(arch) == "Qwen3ForCausalLM";
    s.sliding_window = std::string(arch) == "MistralForCausalLM" ? 4 : 0;
    TempDir tmp;
    synth::write_model(tmp.dir.string(), s);
    auto model = Model::load(tmp.dir.string());
    auto full_cache = model->new_cache();
    ForwardOptions all;
    all.all_logits = true;
    const std::vector<float> full = model->forward(kIds, *full_cache, all);

    // Prefill 5, then one token at a time; then the same in uneven chunks on a tiny cache
    // reserve (forces the cache to grow).
    auto cache = model->new_cache(1);
    std::vector<float> step = model->forward(std::span(kIds).first(5), *cache, all);
    for (size_t p = 5; p < kIds.size(); ++p) {
      const auto l = model->forward(std::span(kIds).subspan(p, 1), *cache);
      step.insert(step.end(), l.begin(), l.end());
    }
    REQUIRE(step.size() == full.size());
    double worst = 0;
    for (size_t i = 0; i < full.size(); ++i) worst = std::max(worst, double(std::abs(step[i] - full[i])));
    CHECK(worst < 1e-4);
    CHECK(cache->length(0) == static_cast<int>(kIds.size()));

    auto cache2 = model->new_cache(2);
    std::vector<float> chunks;
    for (auto [b, n] : {std::pair{0, 3}, std::pair{3, 1}, std::pair{4, 7}, std::pair{11, 1}}) {
      const auto l = model->forward(std::span(kIds).subspan(b, n), *cache2, all);
      chunks.insert(chunks.end(), l.begin(), l.end());
    }
    worst = 0;
    for (size_t i = 0; i < full.size(); ++i) worst = std::max(worst, double(std::abs(chunks[i] - full[i])));
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("Capture hooks: pre-RoPE K rotates into post-RoPE K; V and Q shapes", "[model][synthetic]") {
  synth::Spec s;
  TempDir tmp;
  const auto w = synth::write_model(tmp.dir.string(), s);
  auto model = Model::load(tmp.dir.string());
  CaptureOptions co;
  co.chunk_tokens = 5;  // three chunks
  int calls = 0;
  co.progress = [&](int done, int total) {
    ++calls;
    CHECK(total == static_cast<int>(kIds.size()));
    CHECK(done <= total);
  };
  const KvDump d = capture_dump(*model, kIds, co);
  CHECK(calls == 3);
  CHECK(d.shape.q_heads == s.heads);
  CHECK(d.shape.kv_heads == s.kv_heads);
  CHECK(d.shape.tokens == static_cast<int>(kIds.size()));
  CHECK(d.meta.config_digest.rfind("sha256:", 0) == 0);
  CHECK(d.meta.token_ids == kIds);
  REQUIRE(d.has_k_pre_rope());
  // Position 0 has angle 0: pre- and post-RoPE equal; at p > 0 the rotation keeps pair norms.
  const int hd = s.head_dim;
  for (int l = 0; l < s.layers; ++l) {
    const auto& L = d.layers[l];
    for (int i = 0; i < hd; ++i) CHECK(L.k_pre_rope[i] == Approx(L.k[i]).margin(1e-6));
    for (int i = 0; i < hd; ++i) CHECK(L.q_pre_rope[i] == Approx(L.q[i]).margin(1e-6));
    for (size_t p = 1; p < kIds.size(); ++p)
      for (int i = 0; i < hd / 2; ++i) {
        const float* pre = &L.k_pre_rope[p * hd];
        const float* post = &L.k[p * hd];
        CHECK(std::hypot(pre[i], pre[i + hd / 2]) == Approx(std::hypot(post[i], post[i + hd / 2])).epsilon(1e-4));
      }
  }
}
