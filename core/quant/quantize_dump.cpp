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
#include "core/quant/method_registry.h"
#include "core/tensor/compute_threads.h"
#include "core/quant/quantized_tensor.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

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
  const QuantMethod& method = *policy.method;
  if (method.check_dump) method.check_dump(dump, policy);
  auto record_slice = [&](size_t i, const SliceResult& res) {
    fixed_bits[i] = res.fixed_width_bits;
    calib_seconds[i] += res.calibration_seconds;
    record(i, res.bits, res.static_bits, res.full_precision);
  };
  if (method.quantize_layer) {  // groups span the layer's heads (SKVQ)
    parallel_for(static_cast<int64_t>(s.layers) * 2, [&](int64_t li) {
      if (cancelled()) throw Cancelled();
      const int l = static_cast<int>(li / 2);
      const char kind = li % 2 == 0 ? 'k' : 'v';
      std::vector<SliceResult> per = method.quantize_layer(dump, policy, l, kind, (kind == 'k' ? dq.k : dq.v)[l].data());
      for (int h = 0; h < H; ++h) record_slice(static_cast<size_t>(l) * H * 2 + h * 2 + (kind == 'v'), per[h]);
    });
  } else {
    const std::vector<HeadPlan> plans = plan_heads(dump, policy);  // same order as items
    // KVSmooth, a stage before any per-head method: keys are divided by per-channel scales before
    // quantization and multiplied back after (equivalent to folding 1/s into k_proj and s into
    // q_proj; Q K^T is unchanged).
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
      SliceInput in;
      in.dump = &dump;
      in.policy = &policy;
      in.plan = &p;
      in.x = x;
      in.out = y;  // the reconstruction
      in.tokens = T;
      in.head_dim = D;
      const SliceResult res = method.quantize_slice(in);
      if (sc)
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < D; ++c) y[static_cast<size_t>(t) * D + c] *= sc[c];
      record_slice(i, res);
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
  if (method.entropy_coded) {
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
    // A dump with queries at some positions only (dump --q-positions) is measured there.
    const std::vector<int> positions =
        dump.meta.q_positions.empty() ? sample_positions(T, opts.attn_queries) : dump.meta.q_positions;
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
