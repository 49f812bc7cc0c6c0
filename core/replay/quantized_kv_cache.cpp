#include "core/replay/quantized_kv_cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope {

// ---- Fp16KvCache ----------------------------------------------------------------------------

Fp16KvCache::Fp16KvCache(int layers, int kv_heads, int head_dim, int reserve_tokens)
    : dense_(layers, kv_heads, head_dim, reserve_tokens), kv_heads_(kv_heads), head_dim_(head_dim), layers_(layers) {}

void Fp16KvCache::append(int layer, const float* k, const float* v, int n) {
  const size_t count = static_cast<size_t>(kv_heads_) * n * head_dim_;
  scratch_k_.resize(count);
  scratch_v_.resize(count);
  for (size_t i = 0; i < count; ++i) {
    scratch_k_[i] = round_to_f16(k[i]);
    scratch_v_[i] = round_to_f16(v[i]);
  }
  dense_.append(layer, scratch_k_.data(), scratch_v_.data(), n);
}

uint64_t Fp16KvCache::stored_bits() const {
  uint64_t tokens = 0;
  for (int l = 0; l < layers_; ++l) tokens += static_cast<uint64_t>(dense_.length(l));
  return tokens * 2ull * kv_heads_ * head_dim_ * 16ull;
}

// ---- Plan -----------------------------------------------------------------------------------

std::vector<HeadQuantPlan> plan_replay_heads(const ModelConfig& cfg, const Policy& policy) {
  const std::string where = "policy " + (policy.name.empty() ? std::string("(unnamed)") : policy.name);
  if (policy.method == Method::Watersic) fail(where, "method watersic cannot be replayed yet (it needs the queries of the whole sequence)");
  if (policy.smooth) fail(where, "$.smooth: KVSmooth cannot be replayed yet (its scales are folded into the weights)");
  const auto rule = policy.outliers.rule;
  if (rule != OutlierSelect::Rule::None && rule != OutlierSelect::Rule::List)
    fail(where, "$.outlier_heads.rule: replay supports only \"none\" and \"list\" (the other rules rank heads on a dump)");
  if (policy.residual < 0 || policy.sink_tokens < 0) fail(where, "residual and sink_tokens must be >= 0");
  const int L = cfg.num_layers, H = cfg.num_kv_heads;
  std::vector<HeadQuantPlan> plans(static_cast<size_t>(L) * H * 2);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      for (int kind = 0; kind < 2; ++kind) {
        HeadQuantPlan p;
        p.quant = kind == 0 ? policy.k : policy.v;
        if (policy.method == Method::FP16) p.quant.full_precision = true;
        for (const auto& o : policy.overrides) {
          const bool layer_ok = o.layers.empty() || std::find(o.layers.begin(), o.layers.end(), l) != o.layers.end();
          const bool head_ok = o.heads.empty() || std::find(o.heads.begin(), o.heads.end(), h) != o.heads.end();
          const bool kind_ok = kind == 0 ? o.k : o.v;
          if (layer_ok && head_ok && kind_ok) p.quant = apply_override(p.quant, o);
        }
        if (kind == 0 && rule == OutlierSelect::Rule::List) {
          for (const auto& [ol, oh] : policy.outliers.heads) {
            if (ol < 0 || ol >= L || oh < 0 || oh >= H)
              fail(where, "$.outlier_heads.heads: head [{}, {}] is outside the model ({} layers, {} KV heads)", ol, oh, L, H);
            if (ol == l && oh == h) p.quant.full_precision = true;
          }
        }
        if (!p.quant.full_precision) {
          const std::string problem = check_tensor_quant(p.quant);
          if (!problem.empty()) fail(where, "$.{}: {}", kind == 0 ? "k" : "v", problem);
        }
        p.window = policy.residual;
        if (p.quant.axis == Axis::Channel) {
          p.channel_blocks = true;
          const int g = p.quant.group_size > 0 ? p.quant.group_size : 32;
          if (policy.method == Method::Kivi && policy.residual > 0) {
            if (policy.residual % g != 0)
              fail(where, "$.residual: KIVI needs residual ({}) to be a multiple of the key group size ({})", policy.residual, g);
            p.block_len = policy.residual;  // KIVI: the whole fp16 key buffer is flushed at once
            p.window = 0;
          } else {
            p.block_len = g;
          }
        }
        plans[(static_cast<size_t>(l) * H + h) * 2 + kind] = p;
      }
    }
  }
  return plans;
}

// ---- QuantizedKvCache -----------------------------------------------------------------------

namespace {

int qmax_of(const TensorQuant& q) { return q.symmetric ? (1 << (q.bits - 1)) - 1 : (1 << q.bits) - 1; }

// Encodes rows with the scale / zero point calibrated in `calib` (Axis::Head), the same arithmetic
// as quantize_tensor (clamp, then round half to even); returns a block holding only codes.
QuantizedTensor encode_with_scale(const float* x, int rows, int cols, const QuantizedTensor& calib) {
  QuantizedTensor t;
  t.rows = rows;
  t.cols = cols;
  t.spec = calib.spec;
  t.group_len = rows * cols;
  t.scales = calib.scales;
  t.zeros = calib.zeros;
  const float s = calib.scales[0], z = calib.zeros.empty() ? 0.0f : calib.zeros[0];
  const float qmax = static_cast<float>(qmax_of(t.spec));
  const TensorQuant& q = t.spec;
  std::vector<uint8_t> codes(static_cast<size_t>(rows) * cols);
  for (size_t i = 0; i < codes.size(); ++i) {
    float v, lo, hi, off;
    if (q.symmetric) {
      v = q.inverse_scale ? x[i] * s : x[i] / s;
      lo = -qmax, hi = qmax, off = qmax;
    } else if (q.integer_zero_point) {
      v = x[i] / s, lo = -z, hi = qmax - z, off = z;
    } else {
      v = (x[i] - z) / s, lo = 0, hi = qmax, off = 0;
    }
    v = std::min(std::max(v, lo), hi);  // NaN -> lo, as quantize_tensor
    codes[i] = static_cast<uint8_t>(static_cast<int>(std::nearbyint(v) + off));
  }
  t.codes.resize(packed_bytes(codes.size(), q.bits));
  pack_codes(codes.data(), codes.size(), q.bits, t.codes.data());
  return t;
}

struct HeadState {
  int settled = 0;        // tokens that are sinks or quantized (a prefix of the sequence)
  int quantized = 0;      // of which quantized
  uint64_t block_bits = 0;
  std::vector<QuantizedTensor> blocks;
  bool calibrated = false;
  QuantizedTensor calib;  // Axis::Head: the block that fixed the scale
};

}  // namespace

struct QuantizedKvCache::Impl {
  struct Layer {
    std::vector<float> k, v;  // dequantized mirror [heads, capacity, head_dim]
    int tokens = 0, capacity = 0;
    std::vector<HeadState> state;  // [head * 2 + kind]
  };
  int kv_heads = 0, head_dim = 0, reserve = 256, sinks = 0;
  std::vector<HeadQuantPlan> plans;
  std::vector<Layer> layers;
  uint64_t peak_bits = 0;
  double sq_err = 0, sq_norm = 0, calib_seconds = 0;
  std::vector<float> scratch;

  const HeadQuantPlan& plan(int l, int h, int kind) const { return plans[(static_cast<size_t>(l) * kv_heads + h) * 2 + kind]; }

  void grow(Layer& L, int need) {
    if (need <= L.capacity) return;
    int cap = std::max(reserve, L.capacity);
    while (cap < need) cap *= 2;
    const size_t hd = static_cast<size_t>(head_dim);
    std::vector<float> k(static_cast<size_t>(kv_heads) * cap * hd), v(k.size());
    for (int h = 0; h < kv_heads && L.tokens > 0; ++h) {
      std::memcpy(&k[h * cap * hd], &L.k[h * L.capacity * hd], L.tokens * hd * sizeof(float));
      std::memcpy(&v[h * cap * hd], &L.v[h * L.capacity * hd], L.tokens * hd * sizeof(float));
    }
    L.k.swap(k);
    L.v.swap(v);
    L.capacity = cap;
  }

  uint64_t bits() const {
    uint64_t b = 0;
    for (const auto& L : layers)
      for (const auto& s : L.state) b += s.block_bits + static_cast<uint64_t>(L.tokens - s.quantized) * head_dim * 16ull;
    return b;
  }

  // Quantizes rows [first, first + n) of one head in place in the mirror and records the block.
  void quantize_rows(Layer& L, int h, int kind, int first, int n) {
    const HeadQuantPlan& p = plan(static_cast<int>(&L - layers.data()), h, kind);
    HeadState& s = L.state[h * 2 + kind];
    float* base = (kind == 0 ? L.k.data() : L.v.data()) + (static_cast<size_t>(h) * L.capacity + first) * head_dim;
    QuantizedTensor t;
    if (p.quant.axis == Axis::Head && s.calibrated) {
      t = encode_with_scale(base, n, head_dim, s.calib);
      s.block_bits += t.code_bits();  // the scale was counted with the calibration block
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      t = quantize_tensor(base, n, head_dim, p.quant);
      s.block_bits += t.total_bits();
      if (p.quant.axis == Axis::Head) {
        s.calibrated = true;
        s.calib = t;
        calib_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    }
    scratch.resize(static_cast<size_t>(n) * head_dim);
    t.dequantize(scratch.data());
    for (size_t i = 0; i < scratch.size(); ++i) {
      const double d = static_cast<double>(base[i]) - scratch[i];
      sq_err += d * d;
    }
    std::memcpy(base, scratch.data(), scratch.size() * sizeof(float));
    s.quantized += n;
    s.settled += n;
    s.blocks.push_back(std::move(t));
  }

  void flush_layer(int l) {
    Layer& L = layers[l];
    const int T = L.tokens;
    for (int h = 0; h < kv_heads; ++h) {
      for (int kind = 0; kind < 2; ++kind) {
        const HeadQuantPlan& p = plan(l, h, kind);
        HeadState& s = L.state[h * 2 + kind];
        if (s.settled < sinks) s.settled = std::min(T, sinks);  // sinks stay fp16
        if (p.quant.full_precision) continue;
        const int avail = T - s.settled;
        if (p.channel_blocks) {
          const int n_blocks = avail - p.window >= p.block_len ? (avail - p.window) / p.block_len : 0;
          for (int b = 0; b < n_blocks; ++b) quantize_rows(L, h, kind, s.settled, p.block_len);
        } else if (avail > p.window) {
          quantize_rows(L, h, kind, s.settled, avail - p.window);
        }
      }
    }
  }
};

QuantizedKvCache::QuantizedKvCache(const ModelConfig& cfg, const Policy& policy, int reserve_tokens)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.kv_heads = cfg.num_kv_heads;
  I.head_dim = cfg.head_dim;
  I.reserve = std::max(1, reserve_tokens);
  I.sinks = policy.sink_tokens;
  I.plans = plan_replay_heads(cfg, policy);
  I.layers.resize(cfg.num_layers);
  for (auto& L : I.layers) L.state.resize(static_cast<size_t>(I.kv_heads) * 2);
}

QuantizedKvCache::~QuantizedKvCache() = default;

int QuantizedKvCache::length(int layer) const { return impl_->layers.at(layer).tokens; }

void QuantizedKvCache::append(int layer, const float* k, const float* v, int n) {
  Impl& I = *impl_;
  I.flush_layer(layer);  // what the previous forward left pending: its tokens are no longer the newest
  Impl::Layer& L = I.layers.at(layer);
  I.grow(L, L.tokens + n);
  const size_t hd = static_cast<size_t>(I.head_dim);
  for (int h = 0; h < I.kv_heads; ++h) {
    float* dk = &L.k[(h * static_cast<size_t>(L.capacity) + L.tokens) * hd];
    float* dv = &L.v[(h * static_cast<size_t>(L.capacity) + L.tokens) * hd];
    const float* sk = k + h * n * hd;
    const float* sv = v + h * n * hd;
    for (size_t i = 0; i < n * hd; ++i) {
      dk[i] = round_to_f16(sk[i]);
      dv[i] = round_to_f16(sv[i]);
      I.sq_norm += static_cast<double>(dk[i]) * dk[i] + static_cast<double>(dv[i]) * dv[i];
    }
  }
  L.tokens += n;
  // A decode step holds its new token in fp16 until the step's attention is done (KIVI keeps R + 1
  // values for that moment): that is the peak. A multi-token prefill is not counted before its
  // flush: a packed runtime quantizes the prompt's K/V as it writes them, never storing all of it in fp16.
  if (n == 1 && layer + 1 == static_cast<int>(I.layers.size())) I.peak_bits = std::max(I.peak_bits, I.bits());
}

KvLayerView QuantizedKvCache::view(int layer) const {
  const Impl::Layer& L = impl_->layers.at(layer);
  return {L.k.data(), L.v.data(), L.tokens, static_cast<int64_t>(L.capacity) * impl_->head_dim};
}

void QuantizedKvCache::clear() {
  Impl& I = *impl_;
  for (auto& L : I.layers) {
    L.tokens = 0;
    for (auto& s : L.state) s = HeadState{};
  }
  I.peak_bits = 0;
  I.sq_err = I.sq_norm = I.calib_seconds = 0;
}

void QuantizedKvCache::flush() {
  for (int l = 0; l < static_cast<int>(impl_->layers.size()); ++l) impl_->flush_layer(l);
  impl_->peak_bits = std::max(impl_->peak_bits, impl_->bits());
}

uint64_t QuantizedKvCache::stored_bits() const { return impl_->bits(); }
uint64_t QuantizedKvCache::peak_stored_bits() const { return std::max(impl_->peak_bits, impl_->bits()); }

uint64_t QuantizedKvCache::elements() const {
  uint64_t t = 0;
  for (const auto& L : impl_->layers) t += static_cast<uint64_t>(L.tokens);
  return t * 2ull * impl_->kv_heads * impl_->head_dim;
}

double QuantizedKvCache::squared_error() const { return impl_->sq_err; }
double QuantizedKvCache::squared_norm() const { return impl_->sq_norm; }
double QuantizedKvCache::calibration_seconds() const { return impl_->calib_seconds; }

int QuantizedKvCache::residual_fp16_tokens(int layer, int head, char kind) const {
  const Impl::Layer& L = impl_->layers.at(layer);
  return L.tokens - L.state.at(head * 2 + (kind == 'v' ? 1 : 0)).settled;
}

}  // namespace kvscope
