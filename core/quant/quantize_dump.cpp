#include "core/quant/quantize_dump.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <numeric>

#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"
#include "core/quant/head_plan.h"
#include "core/quant/kvsmooth.h"
#include "core/quant/skvq.h"
#include "core/quant/watersic.h"
#include "core/tensor/compute_threads.h"
#include "core/tensor/rope.h"
#include "core/quant/quantized_tensor.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

namespace {

// SKVQ works on a layer's tokens with all KV heads concatenated (C = kv_heads * head_dim).
// Keys are quantized pre-RoPE when asked; their reconstruction is K + RoPE(K^_pre - K_pre), so
// the kept fp16 tokens stay exact whatever RoPE variant produced the dump.
template <typename Cancel, typename Record>
void quantize_skvq_layers(const KvDump& dump, const Policy& policy, DequantizedKV& dq, Cancel cancelled, Record record) {
  const DumpShape& s = dump.shape;
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads, C = H * D;
  if (policy.skvq.pre_rope && !dump.has_k_pre_rope())
    throw Error("dump has no pre-RoPE keys (layers.{L}.k_pre_rope); skvq with pre_rope needs them (or set $.skvq.pre_rope to false)");
  parallel_for(static_cast<int64_t>(s.layers) * 2, [&](int64_t i) {
    if (cancelled()) throw Cancelled();
    const int l = static_cast<int>(i / 2);
    const bool is_k = i % 2 == 0;
    const bool pre = is_k && policy.skvq.pre_rope;
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
    spec.window = residual_of(policy, l);
    SkvqResult res = skvq_quantize(cat.data(), T, C, groups, spec, rec.data(), policy.skvq.reorder);
    std::vector<float>& out = is_k ? dq.k[l] : dq.v[l];
    for (int h = 0; h < H; ++h) {
      float* o = out.data() + static_cast<size_t>(h) * T * D;
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
      uint64_t share = (res.bits - res.static_bits) / H + (h == 0 ? (res.bits - res.static_bits) % H : 0);
      uint64_t stat = res.static_bits / H + (h == 0 ? res.static_bits % H : 0);
      record(l, h, is_k ? 'k' : 'v', share + stat, stat, h == 0 ? calib : 0.0);
    }
  });
}

}  // namespace

QuantizeReport quantize_dump(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts,
                             DequantizedKV* dequantized) {
  auto t0 = std::chrono::steady_clock::now();
  validate_dump(dump, dump.meta.model_id.empty() ? "dump" : dump.meta.model_id);
  if (opts.attention && !dump.has_q())
    throw Error("dump has no queries (layers.{L}.q); attention metrics need Q — capture them or disable attention metrics");
  const DumpShape& s = dump.shape;
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads;
  auto cancelled = [&] { return opts.cancel && opts.cancel->load(); };

  // One work item per (layer, head, kind), layer-major, K before V.
  struct Item {
    int layer, head;
    char kind;
  };
  std::vector<Item> items;
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < H; ++h)
      for (char kind : {'k', 'v'}) items.push_back({l, h, kind});

  DequantizedKV local;
  DequantizedKV& dq = dequantized ? *dequantized : local;
  dq.k.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  dq.v.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  std::vector<HeadMetrics> heads(items.size());
  std::vector<uint64_t> static_bits(items.size());
  std::vector<ErrorSums> sums(items.size());
  std::atomic<int64_t> done{0};
  const double total_work = double(items.size()) + (opts.attention ? double(s.layers * H) * 4 : 0.0);
  auto out_of = [&](const Item& it) { return (it.kind == 'k' ? dq.k : dq.v)[it.layer].data() + static_cast<size_t>(it.head) * T * D; };
  auto in_of = [&](const Item& it) { return it.kind == 'k' ? dump.k(it.layer, it.head) : dump.v(it.layer, it.head); };
  // Error sums and metrics of item i once its reconstruction is in place.
  auto record = [&](size_t i, uint64_t bits, uint64_t stat, bool full_precision) {
    const Item& it = items[i];
    sums[i].add(in_of(it), out_of(it), static_cast<size_t>(T) * D);
    HeadMetrics& m = heads[i];
    m.layer = it.layer;
    m.head = it.head;
    m.kind = it.kind;
    m.nmse = sums[i].nmse();
    m.cos = sums[i].cos();
    m.mse = sums[i].mse();
    m.max_abs = sums[i].max_abs;
    m.bits = bits;
    m.elements = static_cast<uint64_t>(T) * D;
    m.full_precision = full_precision;
    static_bits[i] = stat;
    if (opts.progress) opts.progress(double(++done) / total_work);
  };

  std::vector<uint64_t> fixed_bits(items.size(), 0);
  std::vector<double> calib_seconds(items.size(), 0);
  if (policy.method == Method::Watersic) {
    // Keys: ZSIC with the query Hessian of the group; values: fp16 (ModelOpt) or the A = I fallback.
    if (!dump.has_q()) throw Error("dump has no queries (layers.{L}.q); watersic needs Q for the key Hessian");
    const auto& wp = policy.watersic;
    const WaterSicOptions wo = watersic_options_of(wp);
    if (policy.residual > 0 || policy.sink_tokens > 0)  // the batch pass codes every token; replay streams them
      throw Error(fmt::format("policy: $.{}: watersic on a dump codes every token (residual and sink_tokens apply to replay only)",
                              policy.residual > 0 ? "residual" : "sink_tokens"));
    if (std::string problem = check_watersic_options(wo); !problem.empty()) throw Error("policy: $.watersic: " + problem);
    parallel_for(static_cast<int64_t>(items.size()), [&](int64_t i) {
      if (cancelled()) throw Cancelled();
      const Item& it = items[i];
      float* y = out_of(it);
      const float* x = in_of(it);
      if (it.kind == 'v' && wp.values_fp16) {
        for (size_t e = 0; e < static_cast<size_t>(T) * D; ++e) y[e] = round_to_f16(x[e]);
        fixed_bits[i] = 16ull * T * D;
        record(i, 16ull * T * D, 0, true);
        return;
      }
      WaterSicState st;
      if (it.kind == 'k') {
        st = watersic_quantize_key_head(dump, it.layer, it.head, wo);
      } else {
        std::vector<double> v(x, x + static_cast<size_t>(T) * D);
        st = watersic_quantize_values(v.data(), T, D, wo);
      }
      std::vector<double> rec = reconstruct(st);
      for (size_t e = 0; e < rec.size(); ++e) y[e] = static_cast<float>(rec[e]);
      // Entropy-coded size (the rate WaterSIC reports) plus the column permutation, a per-cache constant.
      fixed_bits[i] = static_cast<uint64_t>(std::ceil(st.fixed_width_bits())) + st.perm_bits();
      calib_seconds[i] = st.seconds;
      record(i, static_cast<uint64_t>(std::ceil(st.entropy_bits())) + st.perm_bits(), st.perm_bits(), false);
    });
  } else if (policy.method == Method::Skvq) {
    quantize_skvq_layers(dump, policy, dq, cancelled, [&](int l, int h, char kind, uint64_t bits, uint64_t stat, double calib) {
      const size_t i = static_cast<size_t>(l) * H * 2 + h * 2 + (kind == 'v');
      calib_seconds[i] = calib;
      record(i, bits, stat, false);
    });
  } else {
    const std::vector<HeadPlan> plans = plan_heads(dump, policy);  // same order as items
    // KVSmooth: keys are divided by per-channel scales before quantization and multiplied back
    // after (equivalent to folding 1/s into k_proj and s into q_proj; Q K^T is unchanged).
    std::vector<std::vector<float>> smooth(s.layers);
    auto tc = std::chrono::steady_clock::now();
    if (policy.smooth) {
      std::vector<bool> on = kvsmooth_layers(*policy.smooth, s.layers, "policy");
      for (int l = 0; l < s.layers; ++l)
        if (on[l])
          smooth[l] = kvsmooth_scales(dump.layers[l].k.data(), H, T, D, policy.smooth->factor,
                                      dump.meta.rope_style == "interleaved");
      calib_seconds[0] = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    }
    parallel_for(static_cast<int64_t>(plans.size()), [&](int64_t i) {
      if (cancelled()) throw Cancelled();
      const HeadPlan& p = plans[i];
      const float* x = in_of(items[i]);
      float* y = out_of(items[i]);
      const float* sc = p.kind == 'k' && !smooth[p.layer].empty() ? smooth[p.layer].data() + p.head * D : nullptr;
      thread_local std::vector<float> xs;
      if (sc) {
        xs.resize(static_cast<size_t>(T) * D);
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < D; ++c) xs[static_cast<size_t>(t) * D + c] = x[static_cast<size_t>(t) * D + c] / sc[c];
        x = xs.data();
      }
      QuantizedTensor qt = quantize_tensor(x, T, D, p.quant, p.fp_head, p.fp_tail, y);  // y: reconstruction
      if (sc)
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < D; ++c) y[static_cast<size_t>(t) * D + c] *= sc[c];
      record(i, qt.total_bits(), qt.static_bits(), p.quant.full_precision);
    });
  }
  const std::vector<Item>& plans = items;

  QuantizeReport r;
  r.method = method_name(policy.method);
  r.policy_name = policy.name;
  r.policy_json = canonical_policy_json(policy);
  r.shape = s;
  r.model_id = dump.meta.model_id;
  ErrorSums ks, vs;
  uint64_t kbits = 0, vbits = 0, kel = 0, vel = 0, sbits = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    (plans[i].kind == 'k' ? ks : vs).merge(sums[i]);
    (plans[i].kind == 'k' ? kbits : vbits) += heads[i].bits;
    (plans[i].kind == 'k' ? kel : vel) += heads[i].elements;
    sbits += static_bits[i];
  }
  for (double c : calib_seconds) r.calibration_seconds += c;  // summed over work items (CPU seconds)
  if (policy.method == Method::Watersic) {
    uint64_t fw = 0;
    for (uint64_t b : fixed_bits) fw += b;
    r.fixed_width_bits_per_element = (kel + vel) ? double(fw) / double(kel + vel) : 0;
  }
  r.k_nmse = ks.nmse();
  r.v_nmse = vs.nmse();
  r.k_cos = ks.cos();
  r.v_cos = vs.cos();
  r.k_bits_per_element = kel ? double(kbits) / kel : 0;
  r.v_bits_per_element = vel ? double(vbits) / vel : 0;
  r.bits_per_element = (kel + vel) ? double(kbits + vbits) / double(kel + vel) : 0;
  r.static_bytes = double(sbits) / 8.0;
  r.bytes_per_token = (double(kbits + vbits - sbits) / 8.0) / T;
  r.fp16_bytes_per_token = double(s.layers) * H * D * 2 /*K,V*/ * 2 /*bytes*/;
  r.per_head = std::move(heads);

  const double t_quant = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (opts.attention) {
    const std::vector<int> positions = sample_positions(T, opts.attn_queries);
    r.attn_queries = static_cast<int>(positions.size());
    const int G = s.group();
    // One (layer, KV head) per worker thread, each with single-threaded GEMMs.
    ScopedBlasThreads blas(1);
    std::vector<AttentionSums> per(static_cast<size_t>(s.layers) * H);
    parallel_for(static_cast<int64_t>(per.size()), [&](int64_t i) {
      if (cancelled()) throw Cancelled();
      const int l = static_cast<int>(i / H), h = static_cast<int>(i % H);
      std::vector<const float*> q;
      for (int g = 0; g < G; ++g) q.push_back(dump.q(l, h * G + g));  // HF repeat_kv: query j -> KV head j / G
      const size_t off = static_cast<size_t>(h) * T * D;
      per[i] = attention_error(q, dump.k(l, h), dump.v(l, h), dq.k[l].data() + off, dq.v[l].data() + off, T, D, positions);
      if (opts.progress) opts.progress(double(done += 4) / total_work);
    });
    AttentionSums all;
    for (size_t i = 0; i < per.size(); ++i) {
      r.attention.push_back(per[i].metrics(static_cast<int>(i / H), static_cast<int>(i % H)));
      all.merge(per[i]);
    }
    AttentionMetrics agg = all.metrics(-1, -1);
    r.attn_cos_mean = agg.out_cos_mean;
    r.attn_cos_min = agg.out_cos_min;
    r.attn_nmse = agg.out_nmse;
    r.attn_kl_mean = agg.kl_mean;
  }
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (std::getenv("KVSCOPE_PROFILE"))
    std::fprintf(stderr, "quantize_dump: %.3f s quantize + tensor metrics, %.3f s attention metrics\n", t_quant,
                 r.wall_seconds - t_quant);
  return r;
}

}  // namespace kvscope
