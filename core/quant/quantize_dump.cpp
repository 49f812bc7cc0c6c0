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

  const std::vector<HeadPlan> plans = plan_heads(dump, policy);  // layer-major, head, k then v

  // Quantize -> dequantize -> tensor error, one (layer, head, kind) per work item.
  DequantizedKV local;
  DequantizedKV& dq = dequantized ? *dequantized : local;
  dq.k.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  dq.v.assign(s.layers, std::vector<float>(static_cast<size_t>(H) * T * D));
  std::vector<HeadMetrics> heads(plans.size());
  std::vector<uint64_t> static_bits(plans.size());
  std::vector<ErrorSums> sums(plans.size());
  std::atomic<int64_t> done{0};
  const double total_work = double(plans.size()) + (opts.attention ? double(s.layers * H) * 4 : 0.0);
  parallel_for(static_cast<int64_t>(plans.size()), [&](int64_t i) {
    if (cancelled()) throw Cancelled();
    const HeadPlan& p = plans[i];
    const float* x = p.kind == 'k' ? dump.k(p.layer, p.head) : dump.v(p.layer, p.head);
    float* y = (p.kind == 'k' ? dq.k : dq.v)[p.layer].data() + static_cast<size_t>(p.head) * T * D;
    QuantizedTensor qt = quantize_tensor(x, T, D, p.quant, p.fp_head, p.fp_tail);
    qt.dequantize(y);
    sums[i].add(x, y, static_cast<size_t>(T) * D);
    HeadMetrics& m = heads[i];
    m.layer = p.layer;
    m.head = p.head;
    m.kind = p.kind;
    m.nmse = sums[i].nmse();
    m.cos = sums[i].cos();
    m.mse = sums[i].mse();
    m.max_abs = sums[i].max_abs;
    m.bits = qt.total_bits();
    m.elements = static_cast<uint64_t>(T) * D;
    m.full_precision = p.quant.full_precision;
    static_bits[i] = qt.static_bits();
    if (opts.progress) opts.progress(double(++done) / total_work);
  });

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
    AttentionSums all;
    const int G = s.group();
    for (int l = 0; l < s.layers; ++l)
      for (int h = 0; h < H; ++h) {
        if (cancelled()) throw Cancelled();
        std::vector<const float*> q;
        for (int g = 0; g < G; ++g) q.push_back(dump.q(l, h * G + g));  // HF repeat_kv: query j -> KV head j / G
        const size_t off = static_cast<size_t>(h) * T * D;
        AttentionSums a = attention_error(q, dump.k(l, h), dump.v(l, h), dq.k[l].data() + off, dq.v[l].data() + off, T,
                                          D, positions);
        r.attention.push_back(a.metrics(l, h));
        all.merge(a);
        if (opts.progress) opts.progress(double(done += 4) / total_work);
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
