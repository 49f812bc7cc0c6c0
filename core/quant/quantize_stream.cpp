#include "core/quant/quantize_stream.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"
#include "core/quant/group_kernels.h"
#include "core/quant/head_plan.h"
#include "core/quant/kvsmooth.h"
#include "core/quant/method_registry.h"
#include "core/tensor/compute_threads.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

bool quantizes_streamed(const Policy& p) {
  // Registry records whose slice quantizer is the shared TensorQuant path (fp16, uniform, kivi,
  // kvmix today): the group kernels give the same bits. No layer-wide or dump-wide checks.
  const QuantMethod& m = *p.method;
  using SliceFn = SliceResult (*)(const SliceInput&);
  const SliceFn* f = m.quantize_slice.target<SliceFn>();
  const bool per_group = f && *f == &quantize_tensor_slice && !m.quantize_layer && !m.check_dump;
  return per_group && !p.rotation;  // rotation stages: quantize_dump
}

QuantizeReport quantize_dump_streamed(const DumpReader& dump, const Policy& policy, const QuantizeOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  if (!quantizes_streamed(policy))
    throw Error("policy '" + policy.name + "' needs statistics over the whole dump; it cannot be quantized layer by layer");
  if (opts.attention && !dump.has_q())
    throw Error("dump has no queries (layers.{L}.q); attention metrics need Q — capture them or disable attention metrics");
  const DumpShape& s = dump.shape();
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads, G = s.group();
  const size_t he = static_cast<size_t>(T) * D;
  auto cancelled = [&] { return opts.cancel && opts.cancel->load(); };

  KvDump header;  // shape and metadata only: what plan_heads needs for per-head rules
  header.shape = s;
  header.meta = dump.meta();
  // Ranked outlier rules rank every (layer, KV head) by its strat1 K error: a first pass over
  // the keys, layer by layer (the statistic quantize_dump computes on the loaded dump, same bits).
  std::vector<double> k_mse;
  using Rule = OutlierSelect::Rule;
  if (policy.outliers.rule != Rule::None && policy.outliers.rule != Rule::List) {
    k_mse.resize(static_cast<size_t>(s.layers) * H);
    const TensorQuant strat1 = strat1_spec();
    for (int l = 0; l < s.layers; ++l) {
      if (cancelled()) throw Cancelled();
      dump.check_intact(l);
      parallel_for(H, [&](int64_t h) {
        ErrorSums e;
        quantize_stored(dump.k(l, static_cast<int>(h)), strat1, 0, 0, &e);
        k_mse[static_cast<size_t>(l) * H + h] = e.mse();
      });
      dump.release_layer(l);
    }
  }
  const std::vector<HeadPlan> plans = plan_heads(header, policy, k_mse.empty() ? nullptr : &k_mse);  // layer-major, head, K before V

  std::vector<HeadMetrics> heads(plans.size());
  std::vector<uint64_t> static_bits(plans.size());
  std::vector<ErrorSums> sums(plans.size());
  // A dump with queries at some positions only (dump --q-positions) is measured there, as
  // measure_dump does; when it stores those rows only, stored row j is position q_positions[j].
  const bool q_subset = !dump.meta().q_positions.empty();
  const std::vector<int> positions =
      !opts.attention ? std::vector<int>{} : q_subset ? dump.meta().q_positions : sample_positions(T, opts.attn_queries);
  std::vector<AttentionSums> per(opts.attention ? static_cast<size_t>(s.layers) * H : 0);
  const double total_work = double(plans.size()) + (opts.attention ? double(s.layers * H) * 4 : 0.0);
  double done = 0;

  // One layer of working data: reconstructions, and for attention the original K, V in f32 and
  // the sampled rows of Q (the other rows are never touched, so never resident).
  std::vector<float> kq, vq, kx, vx;
  std::unique_ptr<float[]> qx;
  if (opts.attention) {
    kq.resize(static_cast<size_t>(H) * he), vq.resize(kq.size()), kx.resize(kq.size()), vx.resize(kq.size());
    qx.reset(new float[static_cast<size_t>(s.q_heads) * he]);
  }
  // KVSmooth (as quantize_dump): a smoothed layer's keys are divided by per-channel scales from
  // the layer's max |K|, quantized, and the reconstruction multiplied back; the error is measured
  // against the original keys. Needs the layer's keys in f32 (kx) and their reconstruction (kq).
  const std::vector<bool> smoothed = policy.smooth ? kvsmooth_layers(*policy.smooth, s.layers, "policy") : std::vector<bool>{};
  std::vector<float> kdiv;  // the smoothed keys of a layer
  if (policy.smooth) kq.resize(static_cast<size_t>(H) * he), kx.resize(kq.size()), kdiv.resize(kq.size());
  double smooth_seconds = 0;
  ScopedBlasThreads blas(1);  // one (layer, KV head) per worker thread, single-threaded GEMMs
  for (int l = 0; l < s.layers; ++l) {
    if (cancelled()) throw Cancelled();
    dump.check_intact(l);
    const size_t base = static_cast<size_t>(l) * H * 2;
    const bool smooth = policy.smooth && smoothed[l];
    std::vector<float> sc;  // [H * D] smoothing scales of this layer
    if (smooth) {
      const auto tc = std::chrono::steady_clock::now();
      parallel_for(H, [&](int64_t h) {
        const StoredMatrix m = dump.k(l, static_cast<int>(h));
        stored_to_f32(m.dtype, m.data, he, kx.data() + h * he);
      });
      sc = kvsmooth_scales(kx.data(), H, T, D, policy.smooth->factor, dump.meta().rope_style == "interleaved");
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < D; ++c) {
            const size_t o = h * he + static_cast<size_t>(t) * D + c;
            kdiv[o] = kx[o] / sc[h * D + c];
          }
      smooth_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    }
    std::vector<StoredJob> jobs;
    for (int h = 0; h < H; ++h)
      for (int kind = 0; kind < 2; ++kind) {
        const HeadPlan& p = plans[base + h * 2 + kind];
        float* recon = opts.attention || (smooth && !kind) ? (kind ? vq : kq).data() + h * he : nullptr;
        const StoredMatrix x = smooth && !kind ? StoredMatrix{kdiv.data() + h * he, DType::F32, T, D} : kind ? dump.v(l, h) : dump.k(l, h);
        jobs.push_back({x, p.quant, p.fp_head, p.fp_tail, recon});
      }
    std::vector<StoredResult> res = quantize_stored_all(jobs);
    if (smooth)
      parallel_for(H, [&](int64_t h) {  // keys: reconstruction * scales, error against the original keys
        float* y = kq.data() + h * he;
        for (int t = 0; t < T; ++t)
          for (int c = 0; c < D; ++c) y[static_cast<size_t>(t) * D + c] *= sc[h * D + c];
        res[h * 2].err = ErrorSums{};
        res[h * 2].err.add(kx.data() + h * he, y, he);
      });
    for (size_t j = 0; j < res.size(); ++j) {
      const size_t i = base + j;
      sums[i] = res[j].err;
      HeadMetrics& m = heads[i];
      m.layer = plans[i].layer;
      m.head = plans[i].head;
      m.kind = plans[i].kind;
      m.nmse = sums[i].nmse();
      m.cos = sums[i].cos();
      m.mse = sums[i].mse();
      m.max_abs = sums[i].max_abs;
      m.bits = res[j].q.total_bits();
      m.elements = he;
      m.full_precision = plans[i].quant.full_precision;
      static_bits[i] = res[j].q.static_bits();
    }
    done += double(res.size());
    if (opts.progress) opts.progress(done / total_work);
    if (!opts.attention) {
      dump.release_layer(l);
      continue;
    }
    parallel_for(static_cast<int64_t>(H) * (2 + G), [&](int64_t i) {  // this layer's originals in f32
      const int h = static_cast<int>(i);
      if (h < 2 * H && smooth && h % 2 == 0) return;  // the keys are in kx already
      if (h < 2 * H) {
        const StoredMatrix m = h % 2 ? dump.v(l, h / 2) : dump.k(l, h / 2);
        stored_to_f32(m.dtype, m.data, he, (h % 2 ? vx : kx).data() + (h / 2) * he);
        return;
      }
      const int qh = h - 2 * H;
      const StoredMatrix m = dump.q_stored(l, qh);
      for (size_t j = 0; j < positions.size(); ++j)
        stored_to_f32(m.dtype, m.row_ptr(m.rows == T ? positions[j] : static_cast<int>(j)), D,
                      qx.get() + qh * he + static_cast<size_t>(positions[j]) * D);
    });
    parallel_for(H, [&](int64_t hh) {
      if (cancelled()) throw Cancelled();
      const int h = static_cast<int>(hh);
      std::vector<const float*> q;
      for (int g = 0; g < G; ++g) q.push_back(qx.get() + static_cast<size_t>(h * G + g) * he);  // HF repeat_kv
      per[static_cast<size_t>(l) * H + h] =
          attention_error(q, kx.data() + h * he, vx.data() + h * he, kq.data() + h * he, vq.data() + h * he, T, D, positions);
    });
    done += 4.0 * H;
    if (opts.progress) opts.progress(done / total_work);
    dump.release_layer(l);
  }

  // Aggregates exactly as quantize_dump forms them.
  QuantizeReport r;
  r.method = method_name(policy.method);
  r.policy_name = policy.name;
  r.policy_json = canonical_policy_json(policy);
  r.shape = s;
  r.model_id = dump.meta().model_id;
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
  r.calibration_seconds = smooth_seconds;
  r.per_head = std::move(heads);
  if (opts.attention) {
    r.attn_queries = static_cast<int>(positions.size());
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
  if (std::getenv("KVSCOPE_PROFILE")) std::fprintf(stderr, "quantize_dump_streamed: %.3f s\n", r.wall_seconds);
  return r;
}

}  // namespace kvscope
