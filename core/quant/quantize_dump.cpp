#include "core/quant/quantize_dump.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "core/metrics/dump_metrics.h"
#include "core/quant/formats/hadamard.h"
#include "core/quant/head_plan.h"
#include "core/quant/kvsmooth.h"
#include "core/quant/report_totals.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

QuantizedDump quantize_slices(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts) {
  const DumpShape& s = dump.shape;
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads;
  auto cancelled = [&] { return opts.cancel && opts.cancel->load(); };
  const QuantMethod& method = *policy.method;
  if (method.check_dump) method.check_dump(dump, policy);

  QuantizedDump q;
  DequantizedKV& dq = q.dequantized;
  dq.k.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  dq.v.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  // One slice per (layer, head, kind), layer-major, K before V.
  q.slices.resize(static_cast<size_t>(s.layers) * H * 2);
  std::atomic<int64_t> done{0};
  auto finished = [&](size_t i, const SliceResult& res) {
    q.slices[i] = res;
    if (opts.progress) opts.progress(double(++done) / double(q.slices.size()));
  };

  if (method.quantize_layer) {  // groups span the layer's heads (SKVQ)
    parallel_for(static_cast<int64_t>(s.layers) * 2, [&](int64_t li) {
      if (cancelled()) throw Cancelled();
      const int l = static_cast<int>(li / 2);
      const char kind = li % 2 == 0 ? 'k' : 'v';
      std::vector<SliceResult> per = method.quantize_layer(dump, policy, l, kind, (kind == 'k' ? dq.k : dq.v)[l].data());
      for (int h = 0; h < H; ++h) finished(static_cast<size_t>(l) * H * 2 + h * 2 + (kind == 'v'), per[h]);
    });
    return q;
  }

  const std::vector<HeadPlan> plans = plan_heads(dump, policy);  // same order as the slices
  // KVSmooth, a stage before any per-head method: keys are divided by per-channel scales before
  // quantization and multiplied back after (equivalent to folding 1/s into k_proj and s into
  // q_proj; Q K^T is unchanged). Its time counts as the first slice's calibration.
  std::vector<std::vector<float>> smooth(s.layers);
  double smooth_seconds = 0;
  if (policy.smooth) {
    auto tc = std::chrono::steady_clock::now();
    std::vector<bool> on = kvsmooth_layers(*policy.smooth, s.layers, "policy");
    for (int l = 0; l < s.layers; ++l)
      if (on[l])
        smooth[l] = kvsmooth_scales(dump.layers[l].k.data(), H, T, D, policy.smooth->factor, dump.meta.rope_style == "interleaved");
    smooth_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
  }
  // $.rotation, a stage around any per-head method: the slice is rotated by R before the method
  // quantizes it and the reconstruction by R^T (metrics in the original basis; Policy's RotationSpec).
  std::optional<formats::HadamardRotation> rotation[2];
  if (policy.rotation)
    for (int kind = 0; kind < 2; ++kind)
      if (policy.rotation->applies("kv"[kind])) {
        try {
          rotation[kind].emplace(D, policy.rotation->seed_of("kv"[kind]));
        } catch (const Error& e) {
          throw Error("policy: $.rotation: " + std::string(e.what()));
        }
      }
  parallel_for(static_cast<int64_t>(plans.size()), [&](int64_t i) {
    if (cancelled()) throw Cancelled();
    const HeadPlan& p = plans[i];
    const float* x = p.kind == 'k' ? dump.k(p.layer, p.head) : dump.v(p.layer, p.head);
    float* y = (p.kind == 'k' ? dq.k : dq.v)[p.layer].data() + static_cast<size_t>(p.head) * T * D;
    const float* sc = p.kind == 'k' && !smooth[p.layer].empty() ? smooth[p.layer].data() + p.head * D : nullptr;
    thread_local std::vector<float> xs;
    if (sc) {
      xs.resize(static_cast<size_t>(T) * D);
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < D; ++c) xs[static_cast<size_t>(t) * D + c] = x[static_cast<size_t>(t) * D + c] / sc[c];
      x = xs.data();
    }
    const auto& rot = rotation[p.kind == 'v'];
    thread_local std::vector<float> xr;
    if (rot && !p.quant.full_precision) {
      xr.assign(x, x + static_cast<size_t>(T) * D);
      rot->rotate(xr.data(), static_cast<size_t>(T));
      x = xr.data();
    }
    SliceInput in;
    in.dump = &dump;
    in.policy = &policy;
    in.plan = &p;
    in.x = x;
    in.out = y;  // the reconstruction
    in.tokens = T;
    in.head_dim = D;
    SliceResult res = method.quantize_slice(in);
    if (rot && !p.quant.full_precision) rot->unrotate(y, static_cast<size_t>(T));
    if (sc)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < D; ++c) y[static_cast<size_t>(t) * D + c] *= sc[c];
    if (i == 0) res.calibration_seconds += smooth_seconds;
    finished(static_cast<size_t>(i), res);
  });
  return q;
}

QuantizeReport quantize_dump(const KvDump& dump, const Policy& policy, const QuantizeOptions& opts,
                             DequantizedKV* dequantized) {
  auto t0 = std::chrono::steady_clock::now();
  validate_dump(dump, dump.meta.model_id.empty() ? "dump" : dump.meta.model_id);
  if (opts.attention && !dump.has_q())
    throw Error("dump has no queries (layers.{L}.q); attention metrics need Q — capture them or disable attention metrics");
  const DumpShape& s = dump.shape;
  const int H = s.kv_heads;

  // Progress: one unit per slice quantized, one per slice measured, four per attention head.
  const double slices = double(s.layers) * H * 2;
  const double total_work = 2 * slices + (opts.attention ? double(s.layers * H) * 4 : 0.0);
  QuantizeOptions qo = opts;
  if (opts.progress) qo.progress = [&](double f) { opts.progress(f * slices / total_work); };
  QuantizedDump q = quantize_slices(dump, policy, qo);
  const double t_quant = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  MeasureOptions mo;
  mo.attention = opts.attention;
  mo.attn_queries = opts.attn_queries;
  mo.cancel = opts.cancel;
  std::atomic<int64_t> units{static_cast<int64_t>(slices)};
  if (opts.progress) mo.progress = [&](int64_t n) { opts.progress(double(units += n) / total_work); };
  DumpMetrics m = measure_dump(dump, q.dequantized, mo);

  QuantizeReport r = report_header(policy, s, dump.meta.model_id);
  uint64_t sbits = 0, fixed = 0, elements = 0;
  for (size_t i = 0; i < q.slices.size(); ++i) {
    const SliceResult& sr = q.slices[i];
    HeadMetrics& hm = m.per_head[i];
    hm.bits = sr.bits;
    hm.full_precision = sr.full_precision;
    elements += hm.elements;
    sbits += sr.static_bits;
    fixed += sr.fixed_width_bits;
    r.calibration_seconds += sr.calibration_seconds;  // summed over slices (CPU seconds)
  }
  if (policy.method->entropy_coded) r.fixed_width_bits_per_element = elements ? double(fixed) / double(elements) : 0;
  r.per_head = std::move(m.per_head);
  fill_report_totals(r, m.k, m.v, sbits);
  r.attn_queries = m.attn_queries;
  if (opts.attention) {
    r.attention = std::move(m.attention);
    r.attn_cos_mean = m.attention_all.out_cos_mean;
    r.attn_cos_min = m.attention_all.out_cos_min;
    r.attn_nmse = m.attention_all.out_nmse;
    r.attn_kl_mean = m.attention_all.kl_mean;
  }
  if (dequantized) *dequantized = std::move(q.dequantized);
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (std::getenv("KVSCOPE_PROFILE"))
    std::fprintf(stderr, "quantize_dump: %.3f s quantize, %.3f s tensor + attention metrics\n", t_quant, r.wall_seconds - t_quant);
  return r;
}

}  // namespace kvscope
