// Streaming WaterSIC in replay: the fixed coder against a hand-worked case and against the batch ZSIC
// pass (coding the calibration rows again must give the batch codes exactly), the cache's rule and
// bit count, and the online preset on a shared real model.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <random>

#include "core/model/model.h"
#include "core/quant/watersic.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/replay/replay.h"
#include "core/tensor/dtype.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

namespace {

Policy policy_from(const std::string& text) { return parse_policy(nlohmann::json::parse(text), "test-policy"); }

std::string data_dir() {
  const char* env = std::getenv("KVSCOPE_TEST_DATA");
  return env && *env ? env : kvscope::test::models_dir() + "/../data";
}

// Anisotropic, correlated rows (fp16 values, as the cache stores): x = (g + 0.6 g_prev) * scale_j.
std::vector<float> correlated_rows(int rows, int n, unsigned seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows) * n);
  for (int r = 0; r < rows; ++r) {
    float prev = 0;
    for (int j = 0; j < n; ++j) {
      const float g = nd(rng);
      x[static_cast<size_t>(r) * n + j] = round_to_f16((g + 0.6f * prev) * (1.0f + spread * j / n));
      prev = g;
    }
  }
  return x;
}

}  // namespace

TEST_CASE("streaming ZSIC coder: hand-worked n = 2", "[watersic]") {
  // Σ = [[1, 1], [1, 5]] = L Lᵀ with L = [[1, 0], [1, 2]]; diag ascending, so perm = identity.
  // target_rate 32 only sets the damping: δ = 1e-4·4^-27·3 ≈ 2e-20 vanishes next to 1 in double.
  // c = 1, no LMMSE (γ = 1): α = c / L_ii = (1, 0.5), rounding steps α_i L_ii = (1, 1), stored
  // scales α_iγ_i = (1, 0.5). Whitening y = w Σ L^{-T} = (w0 + w1, 2 w1).
  // Code column 1 first: z1 = rint(2 w1); then y0 -= 0.5 · L[1,0] · z1; z0 = rint(y0).
  //   calibration row (0.9, 0.7):   y = (1.6, 1.4)   z1 = 1,  y0 = 1.1  -> z = (1, 1)
  //   calibration row (-1.2, -0.6): y = (-1.8, -1.2) z1 = -1, y0 = -1.3 -> z = (-1, -1)
  // Code range [-1, 1] -> width 2 (4 values); the spare value goes above: [-1, 2].
  const double sigma[] = {1, 1, 1, 5};
  const double calib[] = {0.9, 0.7, -1.2, -0.6};
  WaterSicOptions o;
  o.target_rate = 32;
  o.use_lmmse = false;
  WaterSicCoder coder;
  const WaterSicState s = zsic_fixed_step(calib, 2, 2, sigma, 1.0, o, &coder);
  REQUIRE(s.codes == std::vector<int32_t>{1, 1, -1, -1});
  CHECK(s.column_scale == std::vector<double>{1.0, 0.5});
  CHECK(coder.code_width == 2);
  CHECK(coder.code_lo == -1);
  CHECK(coder.code_hi == 2);
  // Side info: 2 fp16 column scales + perm 2·ceil(log2 2) + code range 2·16 = 32 + 2 + 32.
  CHECK(coder.side_bits() == 66);

  int32_t z[2];
  double k[2];
  // (0.45, 0.7): y = (1.15, 1.4); z1 = 1; y0 = 1.15 - 0.5 = 0.65 -> z0 = 1. K̂ = (1, 0.5).
  // (Rounding each column alone gives z0 = rint(0.45) = 0: the interference update matters, and
  // eᵀΣe is 0.2825 for (1, 0.5) against 0.5825 for (0, 0.5).)
  const double r1[] = {0.45, 0.7};
  CHECK(coder.code_row(r1, z) == 0);
  CHECK((z[0] == 1 && z[1] == 1));
  coder.decode_row(z, k);
  CHECK((k[0] == 1.0 && k[1] == 0.5));
  // (3.0, 0.1): y = (3.1, 0.2); z1 = 0; z0 = rint(3.1) = 3 -> clamped to 2. K̂ = (2, 0).
  const double r2[] = {3.0, 0.1};
  CHECK(coder.code_row(r2, z) == 1);
  CHECK((z[0] == 2 && z[1] == 0));
  // (0, 2): y = (2, 4); z1 = 4 -> clamped to 2, and the update uses the stored 2:
  // y0 = 2 - 0.5 · 1 · 2 = 1 -> z0 = 1 (with the unclamped 4 it would be 0). K̂ = (1, 1).
  const double r3[] = {0.0, 2.0};
  CHECK(coder.code_row(r3, z) == 1);
  CHECK((z[0] == 1 && z[1] == 2));
  coder.decode_row(z, k);
  CHECK((k[0] == 1.0 && k[1] == 1.0));
}

TEST_CASE("streaming ZSIC coder reproduces the batch codes on the calibration rows", "[watersic]") {
  const int a = 300, n = 16;
  const std::vector<float> kf = correlated_rows(a, n, 7, 3.0f);
  const std::vector<double> k(kf.begin(), kf.end());
  const std::vector<float> q0 = correlated_rows(a, n, 8, 6.0f), q1 = correlated_rows(a, n, 9, 1.0f);
  for (double rate : {1.5, 2.0, 3.0})
    for (bool sort : {true, false})
      for (bool lmmse : {true, false}) {
        INFO("rate " << rate << " sort " << sort << " lmmse " << lmmse);
        WaterSicOptions o;
        o.target_rate = rate;
        o.sort_columns = sort;
        o.use_lmmse = lmmse;
        WaterSicCoder coder;
        const WaterSicState s = watersic_quantize_keys(k.data(), a, n, {q0.data(), q1.data()}, a, o, &coder);
        const std::vector<double> rec = reconstruct(s);
        CHECK(coder.code_width == s.code_width);
        std::vector<int32_t> z(n);
        std::vector<double> kh(n);
        int clamped = 0, mismatched = 0, off = 0;
        for (int r = 0; r < a; ++r) {
          clamped += coder.code_row(&k[static_cast<size_t>(r) * n], z.data());
          coder.decode_row(z.data(), kh.data());
          for (int j = 0; j < n; ++j) {
            mismatched += z[j] != s.codes[static_cast<size_t>(r) * n + j];
            off += kh[j] != rec[static_cast<size_t>(r) * n + j];
          }
        }
        CHECK(clamped == 0);
        CHECK(mismatched == 0);
        CHECK(off == 0);
      }
  // Values: A = I (no whitening, no permutation), the same exactness.
  WaterSicOptions o;
  WaterSicCoder vc;
  const WaterSicState v = watersic_quantize_values(k.data(), a, n, o, &vc);
  CHECK_FALSE(vc.sorted);
  int mismatched = 0;
  std::vector<int32_t> z(n);
  for (int r = 0; r < a; ++r) {
    vc.code_row(&k[static_cast<size_t>(r) * n], z.data());
    for (int j = 0; j < n; ++j) mismatched += z[j] != v.codes[static_cast<size_t>(r) * n + j];
  }
  CHECK(mismatched == 0);
  // Per-row factors cannot stream.
  o.kl_aware = true;
  CHECK_THROWS_WITH(watersic_quantize_keys(k.data(), a, n, {q0.data()}, a, o, &vc), Catch::Contains("no per-row factors"));
}

TEST_CASE("watersic cache: sinks and window stay fp16, the rest is the batch pass on the same rows", "[watersic]") {
  ModelConfig cfg;
  cfg.num_layers = 1;
  cfg.num_heads = 4;
  cfg.num_kv_heads = 2;  // G = 2
  cfg.head_dim = 8;
  cfg.hidden_size = 32;
  cfg.max_position_embeddings = 4096;
  const int T = 40, D = 8, H = 2, S = 2, R = 4;
  Calibration c;
  c.tokens = T;
  c.layers = 1;
  c.kv_heads = H;
  c.q_heads = 4;
  c.head_dim = D;
  c.k = {correlated_rows(H * T, D, 1, 2.0f)};
  c.v = {correlated_rows(H * T, D, 2, 0.5f)};
  c.q = {correlated_rows(4 * T, D, 3, 4.0f)};
  const Policy p = policy_from(R"({"method":"watersic","residual":4,"sink_tokens":2,"calibration":{"mode":"online"},
                                   "watersic":{"target_rate":3.0,"values":"watersic"}})");
  const std::vector<HeadQuantPlan> plans = plan_replay_heads(cfg, p, &c);
  QuantizedKvCache cache(cfg, p, plans, T);
  // Prefill 20 tokens, then decode one at a time: each row is coded when it leaves the window.
  auto append = [&](int first, int n) {
    std::vector<float> k(static_cast<size_t>(H) * n * D), v(k.size());
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < n; ++t)
        for (int d = 0; d < D; ++d) {
          k[(static_cast<size_t>(h) * n + t) * D + d] = c.k[0][(static_cast<size_t>(h) * T + first + t) * D + d];
          v[(static_cast<size_t>(h) * n + t) * D + d] = c.v[0][(static_cast<size_t>(h) * T + first + t) * D + d];
        }
    cache.append(0, k.data(), v.data(), n);
  };
  append(0, 20);
  cache.flush();
  for (int t = 20; t < T; ++t) append(t, 1);
  cache.flush();
  CHECK(cache.residual_fp16_tokens(0, 0, 'k') == R);

  // Independent: the batch pass over the whole calibration matrix of each head.
  const WaterSicOptions o = watersic_options_of(p.watersic);
  const KvLayerView view = cache.view(0);
  uint64_t want_bits = 0;
  for (int h = 0; h < H; ++h) {
    const float* kf = &c.k[0][static_cast<size_t>(h) * T * D];
    const float* vf = &c.v[0][static_cast<size_t>(h) * T * D];
    const std::vector<double> kd(kf, kf + T * D), vd(vf, vf + T * D);
    const WaterSicState ks = watersic_quantize_keys(kd.data(), T, D, {&c.q[0][(2 * h) * T * D], &c.q[0][(2 * h + 1) * T * D]}, T, o);
    const WaterSicState vs = watersic_quantize_values(vd.data(), T, D, o);
    const std::vector<double> kr = reconstruct(ks), vr = reconstruct(vs);
    int wrong = 0;
    for (int t = 0; t < T; ++t)
      for (int d = 0; d < D; ++d) {
        const size_t i = static_cast<size_t>(t) * D + d;
        const bool coded = t >= S && t < T - R;
        const float gk = view.k[h * view.head_stride + i], gv = view.v[h * view.head_stride + i];
        wrong += gk != (coded ? static_cast<float>(kr[i]) : kf[i]);
        wrong += gv != (coded ? static_cast<float>(vr[i]) : vf[i]);
      }
    CHECK(wrong == 0);
    // K: 16 bits per fp16 column scale + perm 8·ceil(log2 8) + code range 32, codes at the width;
    // V (A = I, no perm): 16·8 + 32. fp16 rows: sinks + window.
    want_bits += (16 * 8 + 8 * 3 + 32) + uint64_t(T - S - R) * D * ks.code_width;
    want_bits += (16 * 8 + 32) + uint64_t(T - S - R) * D * vs.code_width;
    want_bits += 2ull * (S + R) * D * 16;
  }
  CHECK(cache.stored_bits() == want_bits);
  CHECK(cache.clamped_codes() == 0);
  CHECK(cache.coded_elements() == uint64_t(2 * H) * (T - S - R) * D);

  // A row far outside the calibration range is clamped to the fixed width.
  const Policy p0 = policy_from(R"({"method":"watersic","calibration":{"mode":"online"},"watersic":{"target_rate":3.0}})");
  QuantizedKvCache c0(cfg, p0, plan_replay_heads(cfg, p0, &c), T + 1);
  std::vector<float> big(static_cast<size_t>(H) * D, 1000.0f), zero(big.size(), 0.0f);
  c0.append(0, big.data(), zero.data(), 1);
  c0.flush();
  CHECK(c0.clamped_codes() > 0);
  CHECK(c0.coded_elements() == uint64_t(H) * D);
  const WaterSicCoder& kc = *plan_replay_heads(cfg, p0, &c)[0].watersic;
  const double zmax = std::max(std::abs(double(kc.code_lo)), std::abs(double(kc.code_hi)));
  for (int d = 0; d < D; ++d) CHECK(std::abs(c0.view(0).k[d]) <= zmax * std::abs(kc.column_scale[d]) * (1 + 1e-6));
}

TEST_CASE("watersic replay errors name the JSON path", "[watersic]") {
  ModelConfig cfg;
  cfg.num_layers = 1;
  cfg.num_heads = cfg.num_kv_heads = 1;
  cfg.head_dim = 8;
  cfg.hidden_size = 8;
  CHECK_THROWS_WITH(QuantizedKvCache(cfg, load_preset("watersic-2")),
                    "policy watersic-2: $.calibration.mode: method watersic needs \"text\" or \"online\" in replay "
                    "(the key Hessian comes from calibration queries)");
  CHECK_THROWS_WITH(plan_replay_heads(cfg, policy_from(R"({"method":"watersic","watersic":{"kl_aware":true},"calibration":{"mode":"online"}})")),
                    Catch::Contains("$.watersic.kl_aware: not in replay"));
  CHECK_THROWS_WITH(plan_replay_heads(cfg, policy_from(R"({"method":"watersic","watersic":{"n_rescaler_iters":2},"calibration":{"mode":"online"}})")),
                    Catch::Contains("$.watersic.n_rescaler_iters: must be 0 in replay"));
  CHECK_THROWS_WITH(plan_replay_heads(cfg, policy_from(R"({"method":"watersic","watersic":{"queries":"same_index"},"calibration":{"mode":"online"}})")),
                    Catch::Contains("$.watersic.queries"));
}

TEST_CASE("watersic-2-online replays tinystories-llama-8L at its fixed-width rate", "[watersic][models]") {
  const std::string dir = kvscope::test::models_dir() + "/tinystories-llama-8L";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const ModelConfig& cfg = model->config();
  const auto slices = load_workloads({"text:" + data_dir() + "/tinystories_validation_head.txt;window=128;n=1"},
                                     *tok, cfg.max_position_embeddings);
  const Policy p = load_preset("watersic-2-online");
  const SliceMetrics m = run_replay(*model, *tok, slices, p)[0];
  std::printf("replay watersic-2-online KL %.5f match %.4f ppl_delta %.4f cache_error %.5f bits %.4f\n", m.next_token_kl,
              m.greedy_match_ratio, m.ppl_delta, m.cache_error, m.avg_bits_per_kv_token);
  CHECK(m.next_token_kl > 0);
  CHECK(m.greedy_match_ratio >= 0);
  CHECK(m.greedy_match_ratio <= 1);
  CHECK(m.cache_error > 0);
  CHECK(m.calibration_cost_s > 0);

  // Expected size: the widths the online calibration of this prompt gives (its prefill attends to
  // fp16 K/V, so the fp16 cache's forward captures the same activations); every key coded (no
  // window), V fp16. Tokens cached at the end: prompt + targets - 1 (the last target is not fed).
  const WorkloadItem& it = slices[0].items[0];
  CalibrationCollector col(cfg, p.calibration.tokens);
  Fp16KvCache ref(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, static_cast<int>(it.prompt.size()));
  ForwardOptions fo;
  fo.capture = &col.hook();
  model->forward(it.prompt, ref, fo);
  const Calibration calib = col.finish();
  const std::vector<HeadQuantPlan> plans = plan_replay_heads(cfg, p, &calib);
  const double T = static_cast<double>(it.prompt.size() + it.target.size() - 1), D = cfg.head_dim;
  double bits = 0;
  for (int l = 0; l < cfg.num_layers; ++l)
    for (int h = 0; h < cfg.num_kv_heads; ++h) {
      const HeadQuantPlan& k = plans[(static_cast<size_t>(l) * cfg.num_kv_heads + h) * 2];
      REQUIRE(k.watersic);
      // head_dim 32: 32 fp16 scales + perm 32·5 + code range 32 = 704 bits once; codes at the width.
      bits += 704 + T * D * k.watersic->code_width + T * D * 16;
    }
  const double elements = 2.0 * cfg.num_layers * cfg.num_kv_heads * T * D;
  CHECK(m.avg_bits_per_kv_token == Approx(bits / elements).epsilon(1e-12));

  // Without a calibration mode the same method is refused before any compute.
  CHECK_THROWS_WITH(run_replay(*model, *tok, slices, load_preset("watersic-2")),
                    Catch::Contains("$.calibration.mode: method watersic needs \"text\" or \"online\" in replay"));
}

TEST_CASE("watersic with text calibration, sinks and a residual window replays", "[watersic][models]") {
  const std::string dir = kvscope::test::models_dir() + "/stories260K";
  auto model = Model::load(dir);
  auto tok = load_tokenizer(dir);
  const std::string text = data_dir() + "/tinystories_validation_head.txt";
  const auto slices = load_workloads({"text:" + text + ";window=96;n=1"}, *tok, model->config().max_position_embeddings);
  const Policy p = policy_from(R"({"method":"watersic","residual":16,"sink_tokens":4,"watersic":{"target_rate":3.0},
                                   "calibration":{"mode":"text","tokens":128,"text":")" + text + R"("}})");
  std::vector<std::string> lines;
  ReplayOptions ro;
  ro.progress = [&](const std::string& s) { lines.push_back(s); };
  const SliceMetrics m = run_replay(*model, *tok, slices, p, ro)[0];
  CHECK(m.next_token_kl > 0);
  CHECK(m.avg_bits_per_kv_token < 16);
  CHECK(m.avg_bits_per_kv_token > 8);  // V fp16
  bool clamp_line = false, warned = false;
  for (const auto& s : lines) {
    clamp_line |= s.find("watersic clamped") != std::string::npos;
    warned |= s.find("warning: watersic calibrated on") != std::string::npos;
  }
  CHECK(clamp_line);
  CHECK_FALSE(warned);  // 128 positions >= 4 x head_dim 8
  // 16 positions < 32: the replay runs, and says the coder's calibration is too short.
  const Policy shortp = policy_from(R"({"method":"watersic","watersic":{"target_rate":3.0},
                                        "calibration":{"mode":"text","tokens":16,"text":")" + text + R"("}})");
  lines.clear();
  run_replay(*model, *tok, slices, shortp, ro);
  bool short_warned = false;
  for (const auto& s : lines) short_warned |= s.find("warning: watersic calibrated on 16 positions (< 4 x head_dim = 32)") != std::string::npos;
  CHECK(short_warned);
}
