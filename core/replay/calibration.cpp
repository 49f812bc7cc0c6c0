#include "core/replay/calibration.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/quant/kvsmooth.h"
#include "core/quant/quantized_tensor.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

// ---- Collection -----------------------------------------------------------------------------

CalibrationCollector::CalibrationCollector(const ModelConfig& cfg, int max_tokens) : max_tokens_(max_tokens) {
  c_.layers = cfg.num_layers;
  c_.kv_heads = cfg.num_kv_heads;
  c_.q_heads = cfg.num_heads;
  c_.head_dim = cfg.head_dim;
  // Token-major while collecting ([t][heads][D]); finish() transposes to [heads][T][D].
  c_.k.resize(c_.layers);
  c_.v.resize(c_.layers);
  c_.q.resize(c_.layers);
  hook_ = [this](const LayerActivations& a) {
    const auto t0 = Clock::now();
    const int D = c_.head_dim, H = c_.kv_heads, Hq = c_.q_heads;
    for (int i = 0; i < a.n && a.start + i < max_tokens_; ++i) {
      auto& k = c_.k[a.layer];
      auto& v = c_.v[a.layer];
      auto& q = c_.q[a.layer];
      for (int h = 0; h < H; ++h)
        for (int d = 0; d < D; ++d) {
          k.push_back(round_to_f16(a.k[(static_cast<size_t>(h) * a.n + i) * D + d]));  // what the cache stores
          v.push_back(round_to_f16(a.v[(static_cast<size_t>(h) * a.n + i) * D + d]));
        }
      for (int h = 0; h < Hq; ++h) q.insert(q.end(), a.q + (static_cast<size_t>(h) * a.n + i) * D, a.q + (static_cast<size_t>(h) * a.n + i + 1) * D);
    }
    seconds_ += seconds_since(t0);
  };
}

Calibration CalibrationCollector::finish() {
  const auto t0 = Clock::now();
  Calibration c = std::move(c_);
  const int D = c.head_dim;
  const size_t row_kv = static_cast<size_t>(c.kv_heads) * D, row_q = static_cast<size_t>(c.q_heads) * D;
  c.tokens = c.layers > 0 ? static_cast<int>(c.k[0].size() / row_kv) : 0;
  if (c.tokens < 2) fail("calibration", "needs at least 2 tokens, got {}", c.tokens);
  const int T = c.tokens;
  auto transpose = [&](std::vector<float>& x, int heads) {
    std::vector<float> out(x.size());
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < heads; ++h)
        std::memcpy(&out[(static_cast<size_t>(h) * T + t) * D], &x[(static_cast<size_t>(t) * heads + h) * D], D * sizeof(float));
    x.swap(out);
  };
  for (int l = 0; l < c.layers; ++l) {
    if (c.k[l].size() != T * row_kv || c.q[l].size() != T * row_q) fail("calibration", "layer {} saw a different number of tokens", l);
    transpose(c.k[l], c.kv_heads);
    transpose(c.v[l], c.kv_heads);
    transpose(c.q[l], c.q_heads);
  }
  c.seconds = seconds_ + seconds_since(t0);
  return c;
}

Calibration calibrate_on_text(const Model& model, const Tokenizer& tok, const CalibrationSpec& spec, const std::string& where) {
  const auto t0 = Clock::now();
  const std::string text = read_text_file(spec.text, "calibration text");
  std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/true);
  if (static_cast<int>(ids.size()) > spec.tokens) ids.resize(spec.tokens);
  if (ids.size() < 2) fail(where, "$.calibration.text: {} encodes to {} tokens, at least 2 are needed", spec.text, ids.size());
  const ModelConfig& cfg = model.config();
  if (static_cast<int>(ids.size()) > cfg.max_position_embeddings)
    fail(where, "$.calibration.tokens: {} calibration tokens, the model supports {} positions", ids.size(),
         cfg.max_position_embeddings);
  CalibrationCollector col(cfg, static_cast<int>(ids.size()));
  Fp16KvCache cache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, static_cast<int>(ids.size()));  // as replay's caches
  ForwardOptions fo;
  fo.capture = &col.hook();
  model.forward(ids, cache, fo);
  Calibration c = col.finish();
  c.seconds = seconds_since(t0);  // the forward pass is part of the cost
  return c;
}

// ---- Statistics -----------------------------------------------------------------------------

std::vector<double> calibration_strat1_k_mse(const Calibration& c) {
  TensorQuant q;  // kvmix strat1: symmetric int8, one fp32 inverse scale per head (as strat1_k_mse for dumps)
  q.bits = 8;
  q.symmetric = true;
  q.inverse_scale = true;
  q.scale_dtype = DType::F32;
  q.axis = Axis::Head;
  const int T = c.tokens, D = c.head_dim;
  std::vector<double> mse(static_cast<size_t>(c.layers) * c.kv_heads);
  std::vector<float> y(static_cast<size_t>(T) * D);
  for (int l = 0; l < c.layers; ++l)
    for (int h = 0; h < c.kv_heads; ++h) {
      const float* x = &c.k[l][static_cast<size_t>(h) * T * D];
      quantize_tensor(x, T, D, q).dequantize(y.data());
      double e = 0;
      for (size_t i = 0; i < y.size(); ++i) e += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
      mse[static_cast<size_t>(l) * c.kv_heads + h] = e / static_cast<double>(y.size());
    }
  return mse;
}

std::vector<std::vector<float>> calibration_smooth_scales(const Calibration& c, const SmoothOptions& s, const std::string& where) {
  const std::vector<bool> on = kvsmooth_layers(s, c.layers, where);
  const int T = c.tokens, D = c.head_dim, H = c.kv_heads;
  std::vector<std::vector<float>> out(c.layers);
  for (int l = 0; l < c.layers; ++l) {
    if (!on[l]) continue;
    std::vector<float> mx(static_cast<size_t>(H) * D, 0.0f);
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d)
          mx[h * D + d] = std::max(mx[h * D + d], std::fabs(c.k[l][(static_cast<size_t>(h) * T + t) * D + d]));
    out[l] = kvsmooth_scales_from_max(mx.data(), H, D, s.factor, /*interleaved=*/false, /*shared_over_heads=*/false);
  }
  return out;
}

double quant_group_range(const float* x, int T, int D, const TensorQuant& q) {
  auto range_of = [&](auto&& for_each) {
    float lo = INFINITY, hi = -INFINITY, amax = 0;
    for_each([&](float v) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      amax = std::max(amax, std::fabs(v));
    });
    return q.symmetric ? 2.0 * amax : static_cast<double>(hi) - lo;
  };
  double r = 0;
  if (q.axis == Axis::Head) {
    r = range_of([&](auto&& f) { for (size_t i = 0; i < static_cast<size_t>(T) * D; ++i) f(x[i]); });
  } else if (q.axis == Axis::Token) {
    const int g = q.group_size > 0 ? std::min(q.group_size, D) : D;
    for (int t = 0; t < T; ++t)
      for (int c0 = 0; c0 < D; c0 += g)
        r = std::max(r, range_of([&](auto&& f) { for (int c = c0; c < std::min(D, c0 + g); ++c) f(x[static_cast<size_t>(t) * D + c]); }));
  } else {  // per channel, blocks of g tokens aligned at token 0
    const int g = q.group_size > 0 ? std::min(q.group_size, T) : T;
    for (int d = 0; d < D; ++d)
      for (int t0 = 0; t0 < T; t0 += g)
        r = std::max(r, range_of([&](auto&& f) { for (int t = t0; t < std::min(T, t0 + g); ++t) f(x[static_cast<size_t>(t) * D + d]); }));
  }
  return r;
}

double max_recent_attention(const Calibration& c, int layer, int q_lo, int q_hi, int last_n) {
  const int T = c.tokens, D = c.head_dim, G = c.q_heads / c.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  double best = 0;
  std::vector<double> logits(T);
  for (int j = q_lo; j < q_hi; ++j) {
    const int kh = j / G;  // HF repeat_kv: query head j reads KV head j / G
    for (int i = std::max(0, T - last_n); i < T; ++i) {
      const float* qi = &c.q[layer][(static_cast<size_t>(j) * T + i) * D];
      double mx = -INFINITY;
      for (int t = 0; t <= i; ++t) {  // causal: row i sees keys 0..i
        const float* kt = &c.k[layer][(static_cast<size_t>(kh) * T + t) * D];
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += static_cast<double>(qi[d]) * kt[d];
        logits[t] = dot * scale;
        mx = std::max(mx, logits[t]);
      }
      double sum = 0;
      for (int t = 0; t <= i; ++t) sum += std::exp(logits[t] - mx);
      best = std::max(best, 1.0 / sum);  // the largest probability is exp(mx - mx) / sum
    }
  }
  return best;
}

double measured_q_norm(const Calibration& c, int layer, int q_lo, int q_hi, int last_n) {
  const int T = c.tokens, D = c.head_dim;
  double best = 0;
  for (int j = q_lo; j < q_hi; ++j)
    for (int i = std::max(0, T - last_n); i < T; ++i) {
      const float* qi = &c.q[layer][(static_cast<size_t>(j) * T + i) * D];
      double s = 0;
      for (int d = 0; d < D; ++d) s += static_cast<double>(qi[d]) * qi[d];
      best = std::max(best, s / D);
    }
  return best;
}

double qaq_key_tolerance(double q_norm, int T, double sigma) {
  if (!(q_norm > 0)) return INFINITY;  // queries of zero norm: any key error leaves the logits unchanged
  const double t = static_cast<double>(T);
  return std::sqrt(12.0 / q_norm * std::log(t * t * t / (t - 1.0) * sigma * sigma + 1.0));
}

double qaq_value_tolerance(double attention, int T, double sigma) {
  if (!(attention > 0)) return INFINITY;
  return std::sqrt(12.0 / static_cast<double>(T)) * sigma / attention;
}

int qaq_bits(double range, double tolerance, int min_bits, int max_bits) {
  if (!(range > 0) || !std::isfinite(range) || !(tolerance > 0)) return range > 0 ? max_bits : min_bits;
  const double b = std::ceil(std::log2(range / (2.0 * tolerance) + 1.0));
  return static_cast<int>(std::clamp(b, static_cast<double>(min_bits), static_cast<double>(max_bits)));
}

}  // namespace kvscope
