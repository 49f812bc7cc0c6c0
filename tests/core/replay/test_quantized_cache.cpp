// QuantizedKvCache against independent references: quantize_tensor over the whole history (what a
// one-shot quantizer of the same method produces), the KIVI residual counts of ALGORITHMS.md §2.2 and
// the bits-per-element closed form of §2.4.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>

#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "tests/core/replay/cache_fixtures.h"

using namespace kvscope;
using kvscope::test::append_range;
using kvscope::test::policy_from;
using kvscope::test::tiny_config;

namespace {

std::vector<float> random_history(int H, int T, int D, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(H) * T * D);
  for (auto& e : x) e = round_to_f16(nd(rng) * 2.0f);  // fp16 values: the cache stores fp16
  return x;
}

// Row t of head h in a view.
std::vector<float> row(const KvLayerView& view, bool key, int h, int t, int D) {
  const float* base = (key ? view.k : view.v) + h * view.head_stride + static_cast<int64_t>(t) * D;
  return std::vector<float>(base, base + D);
}

}  // namespace

TEST_CASE("KIVI streaming: residual counts follow ALGORITHMS.md 2.2 after prefill and every decode step") {
  const ModelConfig c = tiny_config();
  const Policy p = policy_from(R"({"method":"kivi","k":{"bits":2,"axis":"channel","group_size":2},
                                   "v":{"bits":2,"axis":"token","group_size":4},"residual":4})");
  const int R = 4, T_end = 23, prefill = 10;
  auto k = random_history(c.num_kv_heads, T_end, c.head_dim, 1), v = random_history(c.num_kv_heads, T_end, c.head_dim, 2);
  QuantizedKvCache cache(c, p);
  append_range(cache, c, k, v, T_end, 0, prefill);
  // Before the flush (the prefill's own attention) everything is exact.
  CHECK(cache.residual_fp16_tokens(0, 0, 'k') == prefill);
  cache.flush();
  for (int T = prefill;; ++T) {
    INFO("T = " << T);
    for (int l = 0; l < c.num_layers; ++l)
      for (int h = 0; h < c.num_kv_heads; ++h) {
        CHECK(cache.residual_fp16_tokens(l, h, 'k') == T % R);
        CHECK(cache.residual_fp16_tokens(l, h, 'v') == std::min(T, R));
      }
    if (T == T_end) break;
    append_range(cache, c, k, v, T_end, T, 1);
    cache.flush();
  }
}

TEST_CASE("Streaming equals quantizing the whole history at once, except in the residual window") {
  const ModelConfig c = tiny_config(1, 2, 8);
  const Policy p = policy_from(R"({"method":"kivi","k":{"bits":2,"axis":"channel","group_size":4},
                                   "v":{"bits":2,"axis":"token","group_size":4},"residual":4})");
  const int T = 19, R = 4, D = c.head_dim;
  auto k = random_history(c.num_kv_heads, T, D, 3), v = random_history(c.num_kv_heads, T, D, 4);
  QuantizedKvCache cache(c, p);
  append_range(cache, c, k, v, T, 0, 7);  // prefill 7, then one token at a time
  for (int t = 7; t < T; ++t) append_range(cache, c, k, v, T, t, 1);
  cache.flush();
  const KvLayerView view = cache.view(0);
  REQUIRE(view.tokens == T);
  for (int h = 0; h < c.num_kv_heads; ++h) {
    const float* kh = &k[static_cast<size_t>(h) * T * D];
    const float* vh = &v[static_cast<size_t>(h) * T * D];
    // V per token: one shot over all T tokens with the last R kept fp16.
    std::vector<float> v_ref(static_cast<size_t>(T) * D), k_ref(v_ref.size());
    quantize_tensor(vh, T, D, p.v, 0, R).dequantize(v_ref.data());
    // K per channel, groups of 4 tokens aligned at token 0; the last T mod R tokens fp16.
    quantize_tensor(kh, T, D, p.k, 0, T % R).dequantize(k_ref.data());
    int k_exact = 0, v_exact = 0;
    for (int t = 0; t < T; ++t) {
      const auto kr = row(view, true, h, t, D), vr = row(view, false, h, t, D);
      for (int d = 0; d < D; ++d) {
        CHECK(vr[d] == v_ref[t * D + d]);
        CHECK(kr[d] == k_ref[t * D + d]);
      }
      k_exact += std::equal(kr.begin(), kr.end(), kh + t * D);
      v_exact += std::equal(vr.begin(), vr.end(), vh + t * D);
    }
    // Exactly the residual rows are untouched (2-bit codes reproduce a random row by chance with ~0 probability).
    CHECK(k_exact == T % R);
    CHECK(v_exact == R);
  }
}

TEST_CASE("Streaming K differs from a one-shot per-channel quantization when groups are not KIVI-aligned") {
  // Uniform per-channel groups of 4 with a window of 3: blocks are quantized as they leave the window,
  // so statistics of a group are fixed when it is complete; equal to one-shot on the same rows.
  const ModelConfig c = tiny_config(1, 1, 8);
  const Policy p = policy_from(R"({"method":"uniform","k":{"bits":3,"axis":"channel","group_size":4},
                                   "v":{"bits":3,"axis":"token","group_size":8},"residual":3})");
  const int T = 17, D = 8;
  auto k = random_history(1, T, D, 5), v = random_history(1, T, D, 6);
  QuantizedKvCache cache(c, p);
  for (int t = 0; t < T; ++t) append_range(cache, c, k, v, T, t, 1);
  cache.flush();
  // 17 tokens, window 3: 14 eligible -> 3 blocks of 4 quantized, 5 fp16.
  CHECK(cache.residual_fp16_tokens(0, 0, 'k') == 5);
  CHECK(cache.residual_fp16_tokens(0, 0, 'v') == 3);
  std::vector<float> k_ref(static_cast<size_t>(T) * D);
  quantize_tensor(k.data(), T, D, p.k, 0, 5).dequantize(k_ref.data());
  const KvLayerView view = cache.view(0);
  for (int t = 0; t < T; ++t) {
    const auto kr = row(view, true, 0, t, D);
    for (int d = 0; d < D; ++d) CHECK(kr[d] == k_ref[t * D + d]);
  }
}

TEST_CASE("Sinks stay fp16 and the stored size matches the KIVI bits-per-element closed form") {
  const ModelConfig c = tiny_config(2, 2, 32);
  const Policy p = policy_from(R"({"method":"kivi","k":{"bits":2,"axis":"channel","group_size":32},
                                   "v":{"bits":2,"axis":"token","group_size":32},"residual":128})");
  const int T = 300, D = 32, N = 2, G = 32, R = 128;
  auto k = random_history(2, T, D, 7), v = random_history(2, T, D, 8);
  QuantizedKvCache cache(c, p);
  append_range(cache, c, k, v, T, 0, 200);
  for (int t = 200; t < T; ++t) append_range(cache, c, k, v, T, t, 1);
  cache.flush();
  const int rK = T % R, rV = std::min(T, R);
  const double bits_k = (T - rK) * (N + 32.0 / G) + 16.0 * rK;  // per channel of one head, §2.4
  const double bits_v = (T - rV) * (N + 32.0 / G) + 16.0 * rV;
  const double expected = (bits_k + bits_v) * D * c.num_kv_heads * c.num_layers;
  CHECK(static_cast<double>(cache.stored_bits()) == expected);
  CHECK(cache.elements() == static_cast<uint64_t>(T) * D * 2 * 2 * 2);

  const Policy ps = policy_from(R"({"method":"uniform","k":{"bits":2,"axis":"token","group_size":8},
                                    "v":{"bits":2,"axis":"token","group_size":8},"residual":0,"sink_tokens":3})");
  QuantizedKvCache sinks(c, ps);
  append_range(sinks, c, k, v, T, 0, 50);
  sinks.flush();
  const KvLayerView view = sinks.view(1);
  for (int h = 0; h < 2; ++h) {
    for (int t = 0; t < 3; ++t) {
      const auto kr = row(view, true, h, t, D);
      CHECK(std::equal(kr.begin(), kr.end(), &k[(static_cast<size_t>(h) * T + t) * D]));
    }
    const auto k3 = row(view, true, h, 3, D);
    CHECK_FALSE(std::equal(k3.begin(), k3.end(), &k[(static_cast<size_t>(h) * T + 3) * D]));
  }
}

TEST_CASE("fp16 policy stores every value rounded to fp16, like the reference cache") {
  const ModelConfig c = tiny_config(2, 2, 8);
  const Policy p = load_preset("fp16");
  const int T = 12, D = 8;
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  std::vector<float> k(2 * T * D), v(k.size());
  for (auto& x : k) x = nd(rng);  // not fp16-representable
  for (auto& x : v) x = nd(rng);
  QuantizedKvCache q(c, p);
  Fp16KvCache ref(2, 2, D);
  append_range(q, c, k, v, T, 0, T);
  append_range(ref, c, k, v, T, 0, T);
  q.flush();
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < T; ++t) {
        const auto a = row(q.view(l), true, h, t, D), b = row(ref.view(l), true, h, t, D);
        const auto av = row(q.view(l), false, h, t, D), bv = row(ref.view(l), false, h, t, D);
        CHECK(a == b);
        CHECK(av == bv);
        CHECK(a[0] == round_to_f16(k[(h * T + t) * D]));
      }
  CHECK(q.stored_bits() == ref.stored_bits());
  CHECK(q.squared_error() == 0.0);
}

TEST_CASE("kvmix-1 calibrates one scale per head on the prefill and reuses it for decode tokens") {
  const ModelConfig c = tiny_config(1, 1, 8);
  const Policy p = load_preset("kvmix-1");
  const int T = 40, D = 8;
  auto k = random_history(1, T, D, 10), v = random_history(1, T, D, 11);
  QuantizedKvCache cache(c, p);
  append_range(cache, c, k, v, T, 0, 32);
  cache.flush();
  const uint64_t after_prefill = cache.stored_bits();
  // The decode tokens use the calibrated scale: same result as quantizing the prefill and decoding a
  // new token's values with that scale; one-shot over all 33 rows would use a different absmax only if
  // the new token exceeded it, so compare against one-shot over the prefill with the new row clamped.
  const QuantizedTensor calib = quantize_tensor(k.data(), 32, D, p.k);
  append_range(cache, c, k, v, T, 32, 1);
  cache.flush();
  const float s = calib.scales[0];  // inverse scale (kvmix): x^ = rint(x * s) / s, clamped to +-127
  const auto got = row(cache.view(0), true, 0, 32, D);
  for (int d = 0; d < D; ++d) {
    const float x = k[32 * D + d];
    const float q = std::min(127.0f, std::max(-127.0f, std::nearbyint(x * s)));
    CHECK(got[d] == q / s);
  }
  // One more token costs only its codes: 8 bits per element, no new scale.
  CHECK(cache.stored_bits() - after_prefill == 2ull * D * 8);  // K and V, one token, head_dim 8
}

TEST_CASE("Policies replay cannot run give clear errors") {
  const ModelConfig c = tiny_config();
  CHECK_THROWS_WITH(QuantizedKvCache(c, load_preset("watersic-2")),  // no calibration mode
                    Catch::Contains("$.calibration.mode: method watersic needs \"text\" or \"online\" in replay"));
  CHECK_THROWS_WITH(QuantizedKvCache(c, load_preset("kvmix-3")), Catch::Contains("outlier_heads.rule"));
  CHECK_THROWS_WITH(QuantizedKvCache(c, policy_from(R"({"method":"kivi","k":{"bits":2,"axis":"channel","group_size":32},
                                                        "v":{"bits":2,"group_size":32},"residual":48})")),
                    Catch::Contains("multiple of k.group_size"));
  const Policy list = policy_from(R"({"method":"kvmix","k":{"axis":"head"},"v":{"axis":"token"},
                                      "outlier_heads":{"rule":"list","heads":[[5,0]]}})");
  CHECK_THROWS_WITH(QuantizedKvCache(c, list), Catch::Contains("outside the model"));
}

TEST_CASE("Peak memory counts the decode token's fp16 moment, not an unquantized prompt") {
  const ModelConfig c = tiny_config(1, 1, 8);
  const Policy p = policy_from(R"({"method":"uniform","k":{"bits":4,"axis":"token","group_size":8},
                                   "v":{"bits":4,"axis":"token","group_size":8}})");
  const int T = 65, D = 8;
  auto k = random_history(1, T, D, 12), v = random_history(1, T, D, 13);
  QuantizedKvCache cache(c, p);
  append_range(cache, c, k, v, T, 0, 64);
  cache.flush();
  // 4-bit codes + fp16 scale + fp16 min per token-group of 8: 4 + 32/8 = 8 bits per element.
  const uint64_t per_token = 2ull * D * 8;  // K and V
  CHECK(cache.stored_bits() == 64 * per_token);
  CHECK(cache.peak_stored_bits() == 64 * per_token);
  append_range(cache, c, k, v, T, 64, 1);  // the new token is fp16 during its step
  CHECK(cache.peak_stored_bits() == 64 * per_token + 2ull * D * 16);
  cache.flush();
  CHECK(cache.stored_bits() == 65 * per_token);
}
