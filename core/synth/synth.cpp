#include "core/synth/synth.h"

#include <algorithm>
#include <cmath>

#include "core/dump/dump_writer.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

namespace {

// xoshiro256** seeded by splitmix64: fast, and every (layer, head) gets its own stream so the
// dump does not depend on the number of threads.
struct Rng {
  uint64_t s[4];
  explicit Rng(uint64_t seed) {
    for (auto& v : s) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      v = z ^ (z >> 31);
    }
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
  }
  double uniform() { return (next() >> 11) * 0x1.0p-53; }  // [0, 1)
  float normal() {  // Box-Muller (one of the pair; simplicity over speed is fine here)
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    double u = 1.0 - uniform(), v = uniform();
    double r = std::sqrt(-2.0 * std::log(u));
    spare = static_cast<float>(r * std::sin(2 * M_PI * v));
    has_spare = true;
    return static_cast<float>(r * std::cos(2 * M_PI * v));
  }
  bool has_spare = false;
  float spare = 0;
};

uint64_t stream_seed(uint64_t seed, int layer, int head, int what) {
  return seed * 0x100000001b3ull ^ (uint64_t(layer) << 40) ^ (uint64_t(head) << 20) ^ uint64_t(what);
}

}  // namespace

namespace {

// Shape, metadata and per-head targets of a synthetic dump (no tensor data).
struct SynthPlan {
  KvDump header;
  std::vector<float> target;   // max |K| per (layer, head); < 0: drawn from the head's stream
  std::vector<char> planted;
};

SynthPlan plan_synth(const SynthOptions& o) {
  if (o.layers <= 0 || o.kv_heads <= 0 || o.head_dim <= 0 || o.tokens <= 0 || o.head_dim % 2)
    throw Error("synth: layers, kv_heads, tokens must be positive and head_dim a positive even number");
  if (o.queries && (o.q_heads <= 0 || o.q_heads % o.kv_heads))
    throw Error("synth: q_heads must be a positive multiple of kv_heads");
  const int L = o.layers, H = o.kv_heads, D = o.head_dim, T = o.tokens;
  const int QH = o.queries ? o.q_heads : 0;
  SynthPlan plan;
  KvDump& d = plan.header;
  d.shape = {L, H, QH, D, T};
  d.meta.model_id = "synthetic/qwen2.5-0.5b-shape";
  d.meta.workload = "synthetic";
  d.meta.prompt = "(synthetic dump: kvscope synth)";
  d.meta.rope_theta = o.rope_theta;
  d.meta.extra["synth_seed"] = std::to_string(o.seed);
  // Target max |K| per head: planted outliers, else uniform in [other_max_lo, other_max_hi].
  plan.target.assign(static_cast<size_t>(L) * H, -1.0f);
  plan.planted.assign(plan.target.size(), 0);
  for (const auto& p : o.planted) {
    if (p.layer < L && p.head < H) {
      plan.target[p.layer * H + p.head] = p.max_abs_k;
      plan.planted[p.layer * H + p.head] = 1;
    }
  }
  return plan;
}

// Layer l of the dump, every KV head (and its query heads) from its own random streams.
void synth_layer(const SynthOptions& o, const SynthPlan& plan, int l, DumpLayer& Ld) {
  const int H = o.kv_heads, D = o.head_dim, T = o.tokens, half = D / 2;
  const int QH = o.queries ? o.q_heads : 0, G = o.queries ? QH / H : 0;
  Ld.k.resize(static_cast<size_t>(H) * T * D);
  Ld.v.resize(static_cast<size_t>(H) * T * D);
  if (o.k_pre_rope) Ld.k_pre_rope.resize(Ld.k.size());
  if (QH) Ld.q.resize(static_cast<size_t>(QH) * T * D);
  if (QH && o.q_pre_rope) Ld.q_pre_rope.resize(Ld.q.size());
  parallel_for(H, [&](int64_t hh) {
    const int h = static_cast<int>(hh);
    const size_t idx = static_cast<size_t>(l) * H + h;
    Rng rng(stream_seed(o.seed, l, h, 1));
    float tgt = plan.target[idx];
    if (tgt < 0) tgt = static_cast<float>(o.other_max_lo + (o.other_max_hi - o.other_max_lo) * rng.uniform());

    // Pre-RoPE keys: channel means and spreads; outlier channels in the low-frequency pairs.
    std::vector<float> mean(D), sd(D);
    for (int c = 0; c < D; ++c) {
      mean[c] = 0.6f * rng.normal();
      sd[c] = 0.4f + 0.8f * static_cast<float>(rng.uniform());
    }
    const int n_outlier_pairs = plan.planted[idx] ? 2 : 1;
    const float outlier_gain = plan.planted[idx] ? 40.0f : 2.5f;  // massive vs mild channel outliers
    for (int k = 0; k < n_outlier_pairs; ++k) {
      int j = half - 1 - static_cast<int>(rng.uniform() * std::min(6, half));  // slow-rotating pairs near D/2
      mean[j] = outlier_gain * (rng.uniform() < 0.5 ? -1.0f : 1.0f);
      mean[j + half] = 0.5f * outlier_gain * (rng.uniform() < 0.5 ? -1.0f : 1.0f);
      sd[j] *= 2.0f;
    }
    std::vector<float> kpre(static_cast<size_t>(T) * D), centred(static_cast<size_t>(T) * D);
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < D; ++c) {
        float e = sd[c] * rng.normal();
        centred[static_cast<size_t>(t) * D + c] = e;
        kpre[static_cast<size_t>(t) * D + c] = mean[c] + e;
      }
    // Sink token: a large-norm key in its own direction.
    for (int c = 0; c < D; ++c) {
      float e = 3.0f * sd[c] * rng.normal();
      centred[c] = e;
      kpre[c] = mean[c] + e;
    }
    std::vector<float> kpost = kpre;
    apply_rope(kpost.data(), T, D, o.rope_theta);
    apply_rope(centred.data(), T, D, o.rope_theta);
    float mx = 0;
    for (float x : kpost) mx = std::max(mx, std::fabs(x));
    const float scale = mx > 0 ? tgt / mx : 1.0f;
    float* kout = Ld.k.data() + static_cast<size_t>(h) * T * D;
    for (size_t i = 0; i < kpost.size(); ++i) kout[i] = kpost[i] * scale;
    if (o.k_pre_rope) {
      float* kp = Ld.k_pre_rope.data() + static_cast<size_t>(h) * T * D;
      for (size_t i = 0; i < kpre.size(); ++i) kp[i] = kpre[i] * scale;
    }
    for (auto& c : centred) c *= scale;

    // Values: near-Gaussian, per-channel spread, small sink value.
    Rng vr(stream_seed(o.seed, l, h, 2));
    std::vector<float> vsd(D);
    for (int c = 0; c < D; ++c) vsd[c] = 0.3f + 1.2f * static_cast<float>(vr.uniform());
    float* vout = Ld.v.data() + static_cast<size_t>(h) * T * D;
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < D; ++c) vout[static_cast<size_t>(t) * D + c] = (t == 0 ? 0.1f : 1.0f) * vsd[c] * vr.normal();

    // Queries: each position attends mostly to one earlier token: the sink (30 %) or a recent
    // one; q = a * centred_key / |centred_key|^2 gives that key a logit of about `a` above the
    // others, plus noise.
    for (int g = 0; g < G; ++g) {
      const int qh = h * G + g;
      Rng qr(stream_seed(o.seed, l, qh, 3));
      float* qout = Ld.q.data() + static_cast<size_t>(qh) * T * D;
      const float sharp = 6.0f + 4.0f * static_cast<float>(qr.uniform());
      for (int t = 0; t < T; ++t) {
        int s = qr.uniform() < 0.3 ? 0 : std::max(0, t - static_cast<int>(qr.uniform() * 32));
        const float* ck = centred.data() + static_cast<size_t>(s) * D;
        double n2 = 0;
        for (int c = 0; c < D; ++c) n2 += double(ck[c]) * ck[c];
        float a = static_cast<float>(sharp * std::sqrt(double(D)) / std::max(n2, 1e-12));
        float noise = static_cast<float>(0.5 * std::sqrt(n2 / D) * a);
        for (int c = 0; c < D; ++c) qout[static_cast<size_t>(t) * D + c] = a * ck[c] + noise * 0.3f * qr.normal();
      }
      if (o.q_pre_rope) {
        float* qp = Ld.q_pre_rope.data() + static_cast<size_t>(qh) * T * D;
        std::copy(qout, qout + static_cast<size_t>(T) * D, qp);
        apply_rope(qp, T, D, o.rope_theta, 0, /*inverse=*/true);
      }
    }
  });
}

}  // namespace

KvDump make_synthetic_dump(const SynthOptions& o) {
  SynthPlan plan = plan_synth(o);
  KvDump d = std::move(plan.header);
  d.layers.resize(d.shape.layers);
  for (int l = 0; l < d.shape.layers; ++l) synth_layer(o, plan, l, d.layers[l]);
  return d;
}

void write_synthetic_dump(const std::string& path, const SynthOptions& o, DType dtype) {
  const SynthPlan plan = plan_synth(o);
  const KvDump& h = plan.header;
  const DumpLayerTensors layout{h.shape.q_heads > 0, o.k_pre_rope, h.shape.q_heads > 0 && o.q_pre_rope};
  DumpWriter w(path, h.shape, h.meta, dtype, std::vector<DumpLayerTensors>(h.shape.layers, layout));
  DumpLayer layer;  // one layer in memory at a time
  for (int l = 0; l < h.shape.layers; ++l) {
    synth_layer(o, plan, l, layer);
    w.write_layer(l, layer);
  }
  w.finish();
}

}  // namespace kvscope
