// Method skvq (ALGORITHMS.md §3): per layer, a token's channels of all KV heads together are
// quantized in groups (k-means channel reordering calibrated on the dump), clipped asymmetric with
// fp16 scale and zero point, sinks and a window kept fp16, keys optionally pre-RoPE. Groups span
// heads, so the dump path quantizes whole layers (quantize_layer). Replay runs seed 002's overlap
// baseline: per-head token groups with clipping, sinks and window (the cache's TensorQuant encoder).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/dump/kv_dump.h"
#include "core/quant/method_registry.h"
#include "core/quant/skvq.h"
#include "core/tensor/dtype.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"
#include "core/util/json_reader.h"

namespace kvscope {

namespace {

// Plain reference of skvq_quantize: scalar loops over the original channel indices, std::nearbyint.
SkvqResult skvq_quantize_reference(const float* x, int T, int C, const SkvqReorder& groups, const SkvqSpec& spec,
                                   float* out, bool count_reorder_metadata) {
  const int S = std::min(spec.sinks, T), W = std::min(spec.window, T - S);
  const float qmax = static_cast<float>((1 << spec.bits) - 1), a = static_cast<float>(spec.clip_ratio);
  const int n_groups = static_cast<int>(groups.bounds.size()) - 1;
  uint64_t codes = 0;
  for (int t = 0; t < T; ++t) {
    for (int c = 0; c < C; ++c) out[static_cast<size_t>(t) * C + c] = round_to_f16(x[static_cast<size_t>(t) * C + c]);
    if (t < S || t >= T - W) continue;
    for (int g = 0; g < n_groups; ++g) {
      float mn = INFINITY, mx = -INFINITY;
      for (int i = groups.bounds[g]; i < groups.bounds[g + 1]; ++i) {
        const float v = x[static_cast<size_t>(t) * C + groups.perm[i]];
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
      const float s = round_to_f16(std::max((a * mx - a * mn) / qmax, 1e-5f)), zp = round_to_f16(a * mn);
      for (int i = groups.bounds[g]; i < groups.bounds[g + 1]; ++i) {
        const size_t e = static_cast<size_t>(t) * C + groups.perm[i];
        out[e] = std::nearbyint(std::clamp((x[e] - zp) / s, 0.0f, qmax)) * s + zp;
        ++codes;
      }
    }
  }
  SkvqResult r;
  const uint64_t nq = static_cast<uint64_t>(std::max(0, T - S - W));
  r.static_bits = count_reorder_metadata ? 16ull * (C + n_groups + 1) : 0;
  r.bits = codes * spec.bits + nq * n_groups * 32 + static_cast<uint64_t>(S + W) * C * 16 + r.static_bits;
  return r;
}

// All KV heads of (layer, kind) concatenated per token (C = kv_heads * head_dim). Keys are quantized
// pre-RoPE when asked; their reconstruction is K + RoPE(K^_pre - K_pre), so the kept fp16 tokens stay
// exact whatever RoPE variant produced the dump. `out` [kv_heads, tokens, head_dim].
template <typename Kernel>
std::vector<SliceResult> quantize_skvq_layer(const KvDump& dump, const Policy& policy, int l, char kind, float* out,
                                             Kernel kernel) {
  const DumpShape& s = dump.shape;
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads, C = H * D;
  const bool is_k = kind == 'k', pre = is_k && policy.skvq.pre_rope;
  const std::vector<float>& src = is_k ? (pre ? dump.layers[l].k_pre_rope : dump.layers[l].k) : dump.layers[l].v;
  std::vector<float> cat(static_cast<size_t>(T) * C), rec(cat.size());
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < T; ++t)
      std::copy_n(&src[(static_cast<size_t>(h) * T + t) * D], D, &cat[static_cast<size_t>(t) * C + h * D]);
  const TensorQuant& q = is_k ? policy.k : policy.v;
  const int g = q.group_size > 0 ? q.group_size : C;
  auto tc = std::chrono::steady_clock::now();
  SkvqReorder groups = policy.skvq.reorder ? skvq_calibrate_reorder(cat.data(), T, C, g) : skvq_identity_groups(C, g);
  const double calib = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
  SkvqSpec spec;
  spec.bits = q.bits;
  spec.clip_ratio = q.clip_ratio;
  spec.sinks = policy.sink_tokens;
  spec.window = policy.residual;
  SkvqResult res = kernel(cat.data(), T, C, groups, spec, rec.data(), policy.skvq.reorder);
  const int n_groups = static_cast<int>(groups.bounds.size()) - 1;
  const uint64_t S = std::min(spec.sinks, T), W = std::min(spec.window, T - static_cast<int>(S));
  const uint64_t nq = static_cast<uint64_t>(T) - S - W;
  // Bytes a packed layer holds: codes, fp16 scale + zero per (token, group), fp16 rows, reorder table.
  const uint64_t layer_bytes = (nq * C * spec.bits + 7) / 8 + nq * n_groups * 4 + (S + W) * C * 2 + res.static_bits / 8;
  std::vector<SliceResult> per(H);
  for (int h = 0; h < H; ++h) {
    float* o = out + static_cast<size_t>(h) * T * D;
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < D; ++c) {
        size_t ci = static_cast<size_t>(t) * C + h * D + c;
        o[static_cast<size_t>(t) * D + c] = pre ? rec[ci] - cat[ci] : rec[ci];  // pre-RoPE: the error, rotated below
      }
    if (pre) {
      apply_rope(o, T, D, dump.meta.rope_theta, 0, false, dump.meta.rope_style == "interleaved");
      const float* k = dump.k(l, h);
      for (size_t e = 0; e < static_cast<size_t>(T) * D; ++e) o[e] += k[e];
    }
    // Groups span heads: the layer's bits are split evenly over its heads (totals stay exact).
    SliceResult& r = per[h];
    r.static_bits = res.static_bits / H + (h == 0 ? res.static_bits % H : 0);
    r.bits = (res.bits - res.static_bits) / H + (h == 0 ? (res.bits - res.static_bits) % H : 0) + r.static_bits;
    r.stored_bytes = h == 0 ? layer_bytes : 0;
    r.calibration_seconds = h == 0 ? calib : 0.0;
  }
  return per;
}

}  // namespace

const QuantMethod& skvq_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "skvq";
    m.description = "SKVQ: per-token groups over all heads with k-means channel reordering, clipping, sinks and window";
    m.presets = {"skvq-2"};
    m.set_defaults = [](Policy& p) {  // SKVQ-2 lab default (§3.6): K2 V2, g = 128, W = 128, S = 5, alpha = 0.92
      p.k.bits = p.v.bits = 2;
      p.k.group_size = p.v.group_size = 128;
      p.k.clip_ratio = p.v.clip_ratio = 0.92;
      p.residual = 128;
      p.sink_tokens = 5;
    };
    m.options_key = "skvq";
    m.read_options = [](JsonReader& r, Policy& p) {
      p.skvq.reorder = r.boolean("reorder", p.skvq.reorder);
      p.skvq.pre_rope = r.boolean("pre_rope", p.skvq.pre_rope);
      r.reject_unknown();
    };
    m.options_json = [](const Policy& p) { return nlohmann::json{{"reorder", p.skvq.reorder}, {"pre_rope", p.skvq.pre_rope}}; };
    m.validate = [](const Policy& p, JsonReader& r) {
      for (const TensorQuant* q : {&p.k, &p.v})
        if (q->symmetric || q->axis != Axis::Token || q->integer_zero_point || q->clip_search || q->full_precision)
          r.err(q == &p.k ? "k" : "v", "skvq quantizes per token, asymmetric with a float zero point and a fixed clip ratio");
      if (!p.overrides.empty() || !p.rules.empty() || p.outliers.rule != OutlierSelect::Rule::None)
        r.err(p.rules.empty() ? "overrides" : "rules", "skvq policies take no per-head overrides or outlier heads (SKVQ groups span all heads)");
      if (p.smooth) r.err("smooth", "KVSmooth is not combined with skvq here");
    };
    m.needs_pre_rope_keys = [](const Policy& p) { return p.skvq.pre_rope; };
    m.check_dump = [](const KvDump& dump, const Policy& p) {
      if (p.skvq.pre_rope && !dump.has_k_pre_rope())
        throw Error("dump has no pre-RoPE keys (layers.{L}.k_pre_rope); skvq with pre_rope needs them (or set $.skvq.pre_rope to false)");
    };
    m.quantize_layer = [](const KvDump& d, const Policy& p, int l, char kind, float* out) {
      return quantize_skvq_layer(d, p, l, kind, out, skvq_quantize);
    };
    m.quantize_layer_reference = [](const KvDump& d, const Policy& p, int l, char kind, float* out) {
      return quantize_skvq_layer(d, p, l, kind, out, skvq_quantize_reference);
    };
    m.replay_note = "skvq is replayed as seed 002's overlap baseline: per-head token groups, clipping, sinks and window; "
                    "no channel reordering or pre-RoPE keys";
    m.test_policy = [](int bits) {  // no clipping: the registry's bound is the rounding error's
      if (bits > 8) return std::string();
      return fmt::format(R"({{"method": "skvq", "k": {{"bits": {0}, "group_size": 32, "clip_ratio": 1}}, "v": {{"bits": {0}, "group_size": 32, "clip_ratio": 1}}, "residual": 16, "skvq": {{"pre_rope": false}}}})",
                         bits);
    };
    return m;
  }();
  return m;
}

}  // namespace kvscope
