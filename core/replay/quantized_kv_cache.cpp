#include "core/replay/quantized_kv_cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/quant/head_plan.h"
#include "core/quant/method_registry.h"
#include "core/replay/calibration.h"
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

namespace {

// Fails naming the JSON path when a rule selects layers, heads or head groups the model lacks.
void check_rule_targets(const ModelConfig& cfg, const Policy& policy, const std::string& where) {
  const int L = cfg.num_layers, H = cfg.num_kv_heads, groups = (H + policy.head_group_size - 1) / policy.head_group_size;
  for (size_t i = 0; i < policy.rules.size(); ++i) {
    const auto& o = policy.rules[i];
    for (int l : o.layers)
      if (l >= L) fail(where, "$.rules[{}].layers: layer {} is outside the model ({} layers)", i, l, L);
    if (o.layer_lo >= L) fail(where, "$.rules[{}].layer_range: starts at layer {}, the model has {} layers", i, o.layer_lo, L);
    for (int h : o.heads)
      if (h >= H) fail(where, "$.rules[{}].heads: head {} is outside the model ({} KV heads)", i, h, H);
    for (int g : o.head_groups)
      if (g >= groups)
        fail(where, "$.rules[{}].head_groups: group {} is outside the model ({} KV heads in groups of {})", i, g, H,
             policy.head_group_size);
  }
}

// Attention-guided bits (docs/REPLAY.md): QAQ's bound per (layer, kind, head group), then the
// budget's max_avg_bits by lowering the groups that stay closest to their tolerance.
void choose_attention_bits(const ModelConfig& cfg, const Policy& policy, const Calibration& c,
                           std::vector<HeadQuantPlan>& plans, const std::string& where) {
  const int L = cfg.num_layers, H = cfg.num_kv_heads, gs = policy.head_group_size, G = cfg.group();
  const int T = c.tokens, D = c.head_dim;
  const auto& a = policy.attention;
  struct Unit {
    std::vector<size_t> entries;  // plan indices of the group's quantized heads
    int bits = 0, floor = 1;
    double demand = 0;            // r / (2 e)
  };
  std::vector<Unit> units;
  std::vector<float> smoothed(static_cast<size_t>(T) * D);
  for (int l = 0; l < L; ++l)
    for (int kind = 0; kind < 2; ++kind)
      for (int h0 = 0; h0 < H; h0 += gs) {
        const int h1 = std::min(H, h0 + gs);
        Unit u;
        double r = 0;
        for (int h = h0; h < h1; ++h) {
          const size_t idx = (static_cast<size_t>(l) * H + h) * 2 + kind;
          const HeadQuantPlan& p = plans[idx];
          if (p.quant.full_precision) continue;  // fp16 heads (method, rules, outliers) stay fp16
          u.entries.push_back(idx);
          u.floor = std::max(u.floor, p.quant.symmetric ? 2 : 1);
          const float* x = &(kind == 0 ? c.k : c.v)[l][static_cast<size_t>(h) * T * D];
          if (!p.smooth.empty()) {
            for (size_t i = 0; i < smoothed.size(); ++i) smoothed[i] = x[i] / p.smooth[i % D];
            x = smoothed.data();
          }
          r = std::max(r, quant_group_range(x, T, D, p.quant));
        }
        if (u.entries.empty()) continue;
        double e;
        if (kind == 0) {
          const double qn = a.q_norm > 0 ? a.q_norm : measured_q_norm(c, l, h0 * G, h1 * G, a.last_n_attentions);
          e = qaq_key_tolerance(qn, T, a.target_k);
        } else {
          e = qaq_value_tolerance(max_recent_attention(c, l, h0 * G, h1 * G, a.last_n_attentions), T, a.target_v);
        }
        u.floor = std::max(u.floor, policy.budget.min_bits);
        u.bits = qaq_bits(r, e, u.floor, std::max(u.floor, policy.budget.max_bits));
        u.demand = r / (2.0 * e);
        for (size_t idx : u.entries) {
          plans[idx].attention_chosen = true;
          plans[idx].range = r;
          plans[idx].tolerance = e;
        }
        units.push_back(std::move(u));
      }
  auto apply = [&](const Unit& u) {
    for (size_t idx : u.entries) {
      plans[idx].quant.full_precision = u.bits > 8;  // above the quantizer's 8 bits the group stays fp16
      plans[idx].quant.bits = std::min(u.bits, 8);
    }
  };
  for (const Unit& u : units) apply(u);
  const double cap = policy.budget.max_avg_bits;
  if (cap <= 0) return;
  // Lower one group by one bit (fp16 -> 8) at a time: the one whose error after lowering, relative to its
  // tolerance (half-step / e = demand / (2^b - 1)), is smallest; ties to the first.
  auto excess_after = [&](const Unit& u) { return u.demand / (std::pow(2.0, std::min(u.bits - 1, 8)) - 1.0); };
  while (nominal_bits_of_plans(plans) > cap + 1e-12) {
    Unit* pick = nullptr;
    for (Unit& u : units)
      if (u.bits > u.floor && (!pick || excess_after(u) < excess_after(*pick))) pick = &u;
    if (!pick)
      fail(where, "$.budget.max_avg_bits: {:.4g} bits per KV entry cannot be met: at the bit_range floor the policy averages {:.4g}",
           cap, nominal_bits_of_plans(plans));
    pick->bits = pick->bits > 8 ? 8 : pick->bits - 1;
    apply(*pick);
  }
}

}  // namespace

double nominal_bits_of_plans(const std::vector<HeadQuantPlan>& plans) {
  double sum = 0;
  for (const auto& p : plans) sum += p.quant.full_precision ? 16.0 : p.quant.bits;
  return plans.empty() ? 0 : sum / static_cast<double>(plans.size());
}

namespace {

// The method's plans (its own plan_replay, else TensorQuant blocks per head); plan_replay_heads adds
// the policy stages that wrap any per-head method (rotation).
std::vector<HeadQuantPlan> plan_method_heads(const ModelConfig& cfg, const Policy& policy, const Calibration* calib) {
  const std::string where = "policy " + (policy.name.empty() ? std::string("(unnamed)") : policy.name);
  if (policy.residual < 0 || policy.sink_tokens < 0) fail(where, "residual and sink_tokens must be >= 0");
  check_residual_layers(policy, cfg.num_layers);
  const QuantMethod& method = *policy.method;
  if (!method.replay_refusal.empty()) fail(where, "method {} cannot be replayed: {}", method.name, method.replay_refusal);
  if (method.plan_replay) return method.plan_replay(cfg, policy, calib, where);  // the method's own streaming coder
  const auto rule = policy.outliers.rule;
  const bool ranked = rule != OutlierSelect::Rule::None && rule != OutlierSelect::Rule::List;
  if (!calib) {
    const char* what = ranked ? "$.outlier_heads.rule: ranking heads" : policy.smooth ? "$.smooth: KVSmooth" : "$.attention: use_attentions";
    if (needs_calibration(policy)) {
      if (policy.calibration.mode == CalibrationSpec::Mode::None)
        fail(where, "{} needs $.calibration.mode \"text\" or \"online\" in replay (the statistics come from calibration)", what);
      fail(where, "{} needs its calibration before the cache is planned", what);
    }
  }
  check_rule_targets(cfg, policy, where);
  const int L = cfg.num_layers, H = cfg.num_kv_heads;
  if (calib && (calib->layers != L || calib->kv_heads != H || calib->head_dim != cfg.head_dim || calib->q_heads != cfg.num_heads))
    fail(where, "the calibration was taken on a model of another shape");
  std::vector<std::pair<int, int>> outliers;
  if (rule == OutlierSelect::Rule::List) {
    for (const auto& [ol, oh] : policy.outliers.heads)
      if (ol < 0 || ol >= L || oh < 0 || oh >= H)
        fail(where, "$.outlier_heads.heads: head [{}, {}] is outside the model ({} layers, {} KV heads)", ol, oh, L, H);
    outliers = policy.outliers.heads;
  } else if (ranked) {
    outliers = rank_outlier_heads(calibration_strat1_k_mse(*calib), H, policy.outliers);
  }
  std::vector<std::vector<float>> smooth;
  if (policy.smooth) smooth = calibration_smooth_scales(*calib, *policy.smooth, where + ": $.smooth");
  std::vector<HeadQuantPlan> plans(static_cast<size_t>(L) * H * 2);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      for (int kind = 0; kind < 2; ++kind) {
        HeadQuantPlan p;
        p.quant = kind == 0 ? policy.k : policy.v;
        if (method.keeps_fp16) p.quant.full_precision = true;
        for (const auto* list : {&policy.rules, &policy.overrides})  // rules first, overrides win
          for (const auto& o : *list)
            if (override_matches(o, l, h, kind == 0 ? 'k' : 'v', policy.head_group_size)) p.quant = apply_override(p.quant, o);
        if (kind == 0 && std::find(outliers.begin(), outliers.end(), std::make_pair(l, h)) != outliers.end())
          p.quant.full_precision = true;
        p.outliers_ratio = kind == 0 ? policy.outliers_ratio_k : policy.outliers_ratio_v;
        if (kind == 0 && !smooth.empty() && !smooth[l].empty())
          p.smooth.assign(smooth[l].begin() + static_cast<ptrdiff_t>(h) * cfg.head_dim,
                          smooth[l].begin() + static_cast<ptrdiff_t>(h + 1) * cfg.head_dim);
        plans[(static_cast<size_t>(l) * H + h) * 2 + kind] = p;
      }
    }
  }
  if (policy.attention.use_attentions) choose_attention_bits(cfg, policy, *calib, plans, where);
  for (int l = 0; l < L; ++l) {
    for (int h = 0; h < H; ++h) {
      for (int kind = 0; kind < 2; ++kind) {
        HeadQuantPlan& p = plans[(static_cast<size_t>(l) * H + h) * 2 + kind];
        if (!p.quant.full_precision) {
          const std::string problem = check_tensor_quant(p.quant);
          if (!problem.empty()) fail(where, "$.{}: {}", kind == 0 ? "k" : "v", problem);
        }
        const int residual = residual_of(policy, l);
        p.window = residual;
        if (p.quant.axis == Axis::Channel) {
          p.channel_blocks = true;
          const int g = p.quant.group_size > 0 ? p.quant.group_size : 32;
          if (method.key_residual_blocks && residual > 0) {
            if (residual % g != 0)
              fail(where, "$.residual: KIVI needs residual ({}) to be a multiple of the key group size ({})", residual, g);
            p.block_len = residual;  // KIVI: the whole fp16 key buffer is flushed at once
            p.window = 0;
          } else {
            p.block_len = g;
          }
        }
      }
    }
  }
  return plans;
}

}  // namespace

std::vector<HeadQuantPlan> plan_replay_heads(const ModelConfig& cfg, const Policy& policy, const Calibration* calib) {
  std::vector<HeadQuantPlan> plans = plan_method_heads(cfg, policy, calib);
  if (policy.rotation) {  // one rotation per kind, shared by the quantized heads' plans
    std::shared_ptr<const formats::HadamardRotation> rot[2];
    for (int kind = 0; kind < 2; ++kind)
      if (policy.rotation->applies("kv"[kind])) {
        try {
          rot[kind] = std::make_shared<formats::HadamardRotation>(cfg.head_dim, policy.rotation->seed_of("kv"[kind]));
        } catch (const Error& e) {
          fail("policy " + policy.name, "$.rotation: {}", e.what());
        }
      }
    for (size_t i = 0; i < plans.size(); ++i)
      if (!plans[i].quant.full_precision) plans[i].rotation = rot[i % 2];
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
  std::vector<uint8_t> bytes;        // row codecs: the packed rows, in order
  std::vector<uint64_t> zsic_codes;  // WaterSIC: code - code_lo at code_width bits each, packed in order
  uint64_t zsic_bits = 0;            // bits of zsic_codes in use
};

// Appends / reads `width`-bit fields (width <= 32) of a little-endian bit stream in 64-bit words.
void put_bits(std::vector<uint64_t>& words, uint64_t& pos, uint64_t value, int width) {
  if (width == 0) return;
  const uint64_t w = pos / 64, off = pos % 64;
  if (words.size() < (pos + width + 63) / 64) words.resize((pos + width + 63) / 64, 0);
  words[w] |= value << off;
  if (off + width > 64) words[w + 1] |= value >> (64 - off);
  pos += width;
}
uint64_t get_bits(const std::vector<uint64_t>& words, uint64_t pos, int width) {
  if (width == 0) return 0;
  const uint64_t w = pos / 64, off = pos % 64;
  uint64_t v = words[w] >> off;
  if (off + width > 64) v |= words[w + 1] << (64 - off);
  return v & ((uint64_t(1) << width) - 1);
}

}  // namespace

struct QuantizedKvCache::Impl {
  struct Layer {
    std::vector<float> k, v;  // dequantized mirror [heads, capacity, head_dim]
    int tokens = 0, capacity = 0;
    std::vector<HeadState> state;  // [head * 2 + kind]
  };
  int kv_heads = 0, head_dim = 0, reserve = 256, sinks = 0;
  ModelConfig cfg;
  Policy policy;
  bool pending = false;  // online calibration not done yet
  std::vector<HeadQuantPlan> plans;
  std::vector<float> smoothed;
  std::vector<size_t> outlier_idx;

  // QAQ outliers: per quantization group of the block x [n, head_dim], the m = ceil(ratio/2 * size)
  // smallest and m largest elements (ties by position) are recorded and clamped to the nearest kept
  // value, so the group's range excludes them. Returns their storage: 16 bits + ceil(log2 size) each.
  uint64_t clamp_outliers(float* x, int n, const HeadQuantPlan& p, std::vector<size_t>& out) {
    const int D = head_dim;
    std::vector<std::vector<size_t>> groups;
    if (p.quant.axis == Axis::Head) {
      groups.emplace_back(static_cast<size_t>(n) * D);
      for (size_t i = 0; i < groups[0].size(); ++i) groups[0][i] = i;
    } else {
      const int g = resolved_group_len(p.quant, n, D);
      if (p.quant.axis == Axis::Token) {
        for (int t = 0; t < n; ++t)
          for (int c0 = 0; c0 < D; c0 += g) {
            groups.emplace_back();
            for (int c = c0; c < std::min(D, c0 + g); ++c) groups.back().push_back(static_cast<size_t>(t) * D + c);
          }
      } else {
        for (int c = 0; c < D; ++c)
          for (int t0 = 0; t0 < n; t0 += g) {
            groups.emplace_back();
            for (int t = t0; t < std::min(n, t0 + g); ++t) groups.back().push_back(static_cast<size_t>(t) * D + c);
          }
      }
    }
    uint64_t bits = 0;
    for (auto& idx : groups) {
      const size_t size = idx.size();
      const size_t m = static_cast<size_t>(std::ceil(p.outliers_ratio / 2 * static_cast<double>(size) - 1e-9));
      if (m == 0 || 2 * m >= size) continue;
      std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
      const float lo = x[idx[m]], hi = x[idx[size - 1 - m]];
      for (size_t i = 0; i < m; ++i) {
        out.push_back(idx[i]);
        out.push_back(idx[size - 1 - i]);
        x[idx[i]] = lo;
        x[idx[size - 1 - i]] = hi;
      }
      bits += 2 * m * (16 + static_cast<uint64_t>(std::ceil(std::log2(static_cast<double>(size)))));
    }
    return bits;
  }
  std::vector<Layer> layers;
  uint64_t peak_bits = 0, clamped = 0, coded = 0;
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

  // WaterSIC: codes rows [first, first + n) one at a time with the head's coder, packs the codes and
  // writes the mirror from the packed codes; the side info is counted with the first row.
  void code_watersic_rows(Layer& L, int h, int kind, const WaterSicCoder& coder, int first, int n) {
    HeadState& s = L.state[h * 2 + kind];
    if (s.quantized == 0) s.block_bits += coder.side_bits();
    const int D = head_dim, w = coder.code_width;
    std::vector<double> row(D), rec(D);
    std::vector<int32_t> z(D);
    for (int t = first; t < first + n; ++t) {
      float* base = (kind == 0 ? L.k.data() : L.v.data()) + (static_cast<size_t>(h) * L.capacity + t) * D;
      std::copy(base, base + D, row.begin());
      clamped += coder.code_row(row.data(), z.data());
      coded += D;
      const uint64_t at = s.zsic_bits;
      for (int j = 0; j < D; ++j) put_bits(s.zsic_codes, s.zsic_bits, static_cast<uint64_t>(int64_t(z[j]) - coder.code_lo), w);
      for (int j = 0; j < D; ++j) z[j] = static_cast<int32_t>(int64_t(get_bits(s.zsic_codes, at + uint64_t(j) * w, w)) + coder.code_lo);
      coder.decode_row(z.data(), rec.data());
      for (int j = 0; j < D; ++j) {
        const float q = static_cast<float>(rec[j]);
        const double d = static_cast<double>(base[j]) - q;
        sq_err += d * d;
        base[j] = q;
      }
      s.block_bits += static_cast<uint64_t>(D) * w;
    }
    s.quantized += n;
    s.settled += n;
  }

  // Row codecs: rows [first, first + n) through the head's codec into its byte store; the mirror gets
  // the decoded rows; the codec's static bits are counted with the first row.
  void code_rows(Layer& L, int h, int kind, const RowCodec& codec, int first, int n) {
    HeadState& s = L.state[h * 2 + kind];
    if (s.quantized == 0) s.block_bits += codec.static_bits();
    float* base = (kind == 0 ? L.k.data() : L.v.data()) + (static_cast<size_t>(h) * L.capacity + first) * head_dim;
    const size_t count = static_cast<size_t>(n) * head_dim;
    scratch.resize(count);
    s.block_bits += codec.encode(base, n, first, s.bytes, scratch.data());
    for (size_t i = 0; i < count; ++i) {
      const double d = static_cast<double>(base[i]) - scratch[i];
      sq_err += d * d;
    }
    std::memcpy(base, scratch.data(), count * sizeof(float));
    s.quantized += n;
    s.settled += n;
  }

  // $.rotation: the rows are rotated in place, quantized as the plan says, and rotated back; the
  // error is measured against the original rows.
  bool rotated = false;
  std::vector<float> unrotated;
  void quantize_rotated(Layer& L, int h, int kind, const formats::HadamardRotation& r, int first, int n) {
    float* base = (kind == 0 ? L.k.data() : L.v.data()) + (static_cast<size_t>(h) * L.capacity + first) * head_dim;
    const size_t count = static_cast<size_t>(n) * head_dim;
    unrotated.assign(base, base + count);
    r.rotate(base, static_cast<size_t>(n));
    const double err0 = sq_err;
    rotated = true;
    quantize_rows(L, h, kind, first, n);
    rotated = false;
    r.unrotate(base, static_cast<size_t>(n));
    sq_err = err0;
    for (size_t i = 0; i < count; ++i) {
      const double d = static_cast<double>(unrotated[i]) - base[i];
      sq_err += d * d;
    }
  }

  // Quantizes rows [first, first + n) of one head in place in the mirror and records the block.
  void quantize_rows(Layer& L, int h, int kind, int first, int n) {
    const HeadQuantPlan& p = plan(static_cast<int>(&L - layers.data()), h, kind);
    if (p.rotation && !rotated) return quantize_rotated(L, h, kind, *p.rotation, first, n);
    if (p.codec) return code_rows(L, h, kind, *p.codec, first, n);
    if (p.watersic) return code_watersic_rows(L, h, kind, *p.watersic, first, n);
    HeadState& s = L.state[h * 2 + kind];
    float* base = (kind == 0 ? L.k.data() : L.v.data()) + (static_cast<size_t>(h) * L.capacity + first) * head_dim;
    const size_t count = static_cast<size_t>(n) * head_dim;
    const float* x = base;
    if (!p.smooth.empty() || p.outliers_ratio > 0) {
      smoothed.resize(count);
      for (size_t i = 0; i < count; ++i) smoothed[i] = p.smooth.empty() ? base[i] : base[i] / p.smooth[i % head_dim];  // KVSmooth: codes of K / s
      x = smoothed.data();
    }
    outlier_idx.clear();
    if (p.outliers_ratio > 0) s.block_bits += clamp_outliers(smoothed.data(), n, p, outlier_idx);
    QuantizedTensor t;
    if (p.quant.axis == Axis::Head && s.calibrated) {
      t = encode_with_scale(x, n, head_dim, s.calib);
      s.block_bits += t.code_bits();  // the scale was counted with the calibration block
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      t = quantize_tensor(x, n, head_dim, p.quant);
      s.block_bits += t.total_bits();
      if (p.quant.axis == Axis::Head) {
        s.calibrated = true;
        s.calib = t;
        calib_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
    }
    scratch.resize(count);
    t.dequantize(scratch.data());
    if (!p.smooth.empty())  // attention reads s * (K/s)^, i.e. the queries carry s
      for (size_t i = 0; i < count; ++i) scratch[i] *= p.smooth[i % head_dim];
    for (size_t i : outlier_idx) scratch[i] = base[i];  // kept exactly
    for (size_t i = 0; i < count; ++i) {
      const double d = static_cast<double>(base[i]) - scratch[i];
      sq_err += d * d;
    }
    std::memcpy(base, scratch.data(), count * sizeof(float));
    s.quantized += n;
    s.settled += n;
    s.blocks.push_back(std::move(t));
  }

  void flush_layer(int l) {
    Layer& L = layers[l];
    const int T = L.tokens;
    if (pending) {
      if (T > 0) fail("replay", "policy {}: online calibration must run (calibrate) before the cache's first flush", policy.name);
      return;
    }
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
    : QuantizedKvCache(cfg, policy, {}, reserve_tokens) {}

QuantizedKvCache::QuantizedKvCache(const ModelConfig& cfg, const Policy& policy, std::vector<HeadQuantPlan> plans,
                                   int reserve_tokens)
    : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.kv_heads = cfg.num_kv_heads;
  I.head_dim = cfg.head_dim;
  I.reserve = std::max(1, reserve_tokens);
  I.sinks = policy.sink_tokens;
  I.cfg = cfg;
  I.policy = policy;
  const size_t n_plans = static_cast<size_t>(cfg.num_layers) * cfg.num_kv_heads * 2;
  if (!plans.empty()) {
    if (plans.size() != n_plans) fail("replay", "policy {}: {} head plans for a model with {}", policy.name, plans.size(), n_plans);
    I.plans = std::move(plans);
  } else if (needs_calibration(policy) && policy.calibration.mode == CalibrationSpec::Mode::Online) {
    I.pending = true;
  } else {
    I.plans = plan_replay_heads(cfg, policy);
  }
  I.layers.resize(cfg.num_layers);
  for (auto& L : I.layers) L.state.resize(static_cast<size_t>(I.kv_heads) * 2);
}

void QuantizedKvCache::calibrate(const Calibration& c) {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  I.plans = plan_replay_heads(I.cfg, I.policy, &c);
  I.pending = false;
  I.calib_seconds += c.seconds + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool QuantizedKvCache::awaiting_calibration() const { return impl_->pending; }
const std::vector<HeadQuantPlan>& QuantizedKvCache::plans() const { return impl_->plans; }

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
  I.peak_bits = I.clamped = I.coded = 0;
  I.sq_err = I.sq_norm = I.calib_seconds = 0;
  if (needs_calibration(I.policy) && I.policy.calibration.mode == CalibrationSpec::Mode::Online) I.pending = true;  // a new prompt
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
uint64_t QuantizedKvCache::clamped_codes() const { return impl_->clamped; }
uint64_t QuantizedKvCache::coded_elements() const { return impl_->coded; }

int QuantizedKvCache::residual_fp16_tokens(int layer, int head, char kind) const {
  const Impl::Layer& L = impl_->layers.at(layer);
  return L.tokens - L.state.at(head * 2 + (kind == 'v' ? 1 : 0)).settled;
}

}  // namespace kvscope
