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
#include "core/quant/report_totals.h"
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

namespace {

// quantize_dump_streamed's state and steps: the plans (after a ranking pass for ranked outlier
// rules), then per layer KVSmooth scales, the group kernels, and attention on that layer.
class StreamedQuantize {
 public:
  StreamedQuantize(const DumpReader& dump, const Policy& policy, const QuantizeOptions& opts)
      : dump_(dump), policy_(policy), opts_(opts), s_(dump.shape()), T_(s_.tokens), D_(s_.head_dim), H_(s_.kv_heads),
        he_(static_cast<size_t>(T_) * D_) {}

  QuantizeReport run() {
    plan();
    allocate();
    ScopedBlasThreads blas(1);  // one (layer, KV head) per worker thread, single-threaded GEMMs
    for (int l = 0; l < s_.layers; ++l) {
      check_cancel();
      dump_.check_intact(l);
      const std::vector<float> sc = smooth_scales(l);  // empty: layer not smoothed
      const auto t0 = std::chrono::steady_clock::now();
      quantize_layer(l, sc);
      const auto t1 = std::chrono::steady_clock::now();
      if (opts_.attention) measure_layer(l);
      dump_.release_layer(l);
      seconds_[0] += std::chrono::duration<double>(t1 - t0).count();
      seconds_[1] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    }
    if (std::getenv("KVSCOPE_PROFILE"))
      std::fprintf(stderr, "quantize_dump_streamed: %.3f s quantizing, %.3f s query rows, %.3f s attention products\n",
                   seconds_[0], seconds_[1] - seconds_[2], seconds_[2]);
    return report();
  }

 private:
  void check_cancel() const {
    if (opts_.cancel && opts_.cancel->load()) throw Cancelled();
  }
  void advance(double units) {
    done_ += units;
    if (opts_.progress) opts_.progress(done_ / total_work_);
  }

  // The plans; ranked outlier rules rank every (layer, KV head) by its strat1 K error: a first
  // pass over the keys, layer by layer (the statistic quantize_dump computes on the loaded dump, same bits).
  void plan() {
    KvDump header;  // shape and metadata only: what plan_heads needs for per-head rules
    header.shape = s_;
    header.meta = dump_.meta();
    std::vector<double> k_mse;
    using Rule = OutlierSelect::Rule;
    if (policy_.outliers.rule != Rule::None && policy_.outliers.rule != Rule::List) {
      k_mse.resize(static_cast<size_t>(s_.layers) * H_);
      const TensorQuant strat1 = strat1_spec();
      for (int l = 0; l < s_.layers; ++l) {
        check_cancel();
        dump_.check_intact(l);
        parallel_for(H_, [&](int64_t h) {
          ErrorSums e;
          quantize_stored(dump_.k(l, static_cast<int>(h)), strat1, 0, 0, &e);
          k_mse[static_cast<size_t>(l) * H_ + h] = e.mse();
        });
        dump_.release_layer(l);
      }
    }
    plans_ = plan_heads(header, policy_, k_mse.empty() ? nullptr : &k_mse);  // layer-major, head, K before V
    heads_.resize(plans_.size());
    static_bits_.resize(plans_.size());
    sums_.resize(plans_.size());
    // A dump with queries at some positions only (dump --q-positions) is measured there, as
    // measure_dump does; when it stores those rows only, stored row j is position q_positions[j].
    if (opts_.attention)
      positions_ = dump_.meta().q_positions.empty() ? sample_positions(T_, opts_.attn_queries) : dump_.meta().q_positions;
    per_.resize(opts_.attention ? static_cast<size_t>(s_.layers) * H_ : 0);
    total_work_ = double(plans_.size()) + (opts_.attention ? double(s_.layers * H_) * 4 : 0.0);
  }

  // One layer of working data: reconstructions, and for attention the original K, V in f32 and
  // the sampled rows of Q (the other rows are never touched, so never resident); for KVSmooth the
  // layer's keys in f32 (kx), divided by the scales (kdiv), and their reconstruction (kq).
  void allocate() {
    const size_t n = static_cast<size_t>(H_) * he_;
    if (opts_.attention) {
      kq_.resize(n), vq_.resize(n), kx_.resize(n), vx_.resize(n);
      qx_.reset(new float[static_cast<size_t>(s_.q_heads) * he_]);
    }
    if (policy_.smooth) {
      smoothed_ = kvsmooth_layers(*policy_.smooth, s_.layers, "policy");
      kq_.resize(n), kx_.resize(n), kdiv_.resize(n);
    }
  }

  // KVSmooth (as quantize_dump): a smoothed layer's keys are divided by per-channel scales from
  // the layer's max |K| ([H * D], returned; empty when the layer is not smoothed).
  std::vector<float> smooth_scales(int l) {
    if (!policy_.smooth || !smoothed_[l]) return {};
    const auto tc = std::chrono::steady_clock::now();
    parallel_for(H_, [&](int64_t h) {
      thread_local std::vector<unsigned char> staged;
      const StoredMatrix m = stage(dump_.k(l, static_cast<int>(h)), staged);
      stored_to_f32(m.dtype, m.data, he_, kx_.data() + h * he_);
    });
    std::vector<float> sc = kvsmooth_scales(kx_.data(), H_, T_, D_, policy_.smooth->factor, dump_.meta().rope_style == "interleaved");
    for (int h = 0; h < H_; ++h)
      for (int t = 0; t < T_; ++t)
        for (int c = 0; c < D_; ++c) {
          const size_t o = h * he_ + static_cast<size_t>(t) * D_ + c;
          kdiv_[o] = kx_[o] / sc[h * D_ + c];
        }
    smooth_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count();
    return sc;
  }

  // The layer's slices through the group kernels; smoothed keys are multiplied back and their
  // error measured against the original keys.
  void quantize_layer(int l, const std::vector<float>& sc) {
    const bool smooth = !sc.empty();
    const size_t base = static_cast<size_t>(l) * H_ * 2;
    std::vector<StoredJob> jobs;
    for (int h = 0; h < H_; ++h)
      for (int kind = 0; kind < 2; ++kind) {
        const HeadPlan& p = plans_[base + h * 2 + kind];
        float* recon = opts_.attention || (smooth && !kind) ? (kind ? vq_ : kq_).data() + h * he_ : nullptr;
        const StoredMatrix x =
            smooth && !kind ? StoredMatrix{kdiv_.data() + h * he_, DType::F32, T_, D_} : kind ? dump_.v(l, h) : dump_.k(l, h);
        // Attention needs the originals in f32: the kernel's own conversion (smoothed keys are in kx already).
        float* orig = opts_.attention && !(smooth && !kind) ? (kind ? vx_ : kx_).data() + h * he_ : nullptr;
        jobs.push_back({x, p.quant, p.fp_head, p.fp_tail, recon, orig});
      }
    std::vector<StoredResult> res = quantize_stored_all(jobs);
    if (smooth)
      parallel_for(H_, [&](int64_t h) {
        float* y = kq_.data() + h * he_;
        for (int t = 0; t < T_; ++t)
          for (int c = 0; c < D_; ++c) y[static_cast<size_t>(t) * D_ + c] *= sc[h * D_ + c];
        res[h * 2].err = ErrorSums{};
        res[h * 2].err.add(kx_.data() + h * he_, y, he_);
      });
    for (size_t j = 0; j < res.size(); ++j) {
      const size_t i = base + j;
      sums_[i] = res[j].err;
      HeadMetrics& m = heads_[i];
      m.layer = plans_[i].layer;
      m.head = plans_[i].head;
      m.kind = plans_[i].kind;
      m.nmse = sums_[i].nmse();
      m.cos = sums_[i].cos();
      m.mse = sums_[i].mse();
      m.max_abs = sums_[i].max_abs;
      m.bits = res[j].q.total_bits();
      m.elements = he_;
      m.full_precision = plans_[i].quant.full_precision;
      static_bits_[i] = res[j].q.static_bits();
    }
    advance(double(res.size()));
  }

  // Attention of the layer's (layer, KV head) pairs; the originals K, V are in kx, vx already
  // (quantize_layer's kernels converted them).
  void measure_layer(int l) {
    const int G = s_.group();
    parallel_for(static_cast<int64_t>(s_.q_heads), [&](int64_t i) {  // the sampled query rows in f32
      const int qh = static_cast<int>(i);
      const StoredMatrix m = dump_.q_stored(l, qh);
      for (size_t j = 0; j < positions_.size(); ++j)
        row_to_f32(m, m.rows == T_ ? positions_[j] : static_cast<int>(j), qx_.get() + qh * he_ + static_cast<size_t>(positions_[j]) * D_);
    });
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(H_, [&](int64_t hh) {
      check_cancel();
      const int h = static_cast<int>(hh);
      std::vector<const float*> q;
      for (int g = 0; g < G; ++g) q.push_back(qx_.get() + static_cast<size_t>(h * G + g) * he_);  // HF repeat_kv
      per_[static_cast<size_t>(l) * H_ + h] = attention_error(q, kx_.data() + h * he_, vx_.data() + h * he_,
                                                               kq_.data() + h * he_, vq_.data() + h * he_, T_, D_, positions_);
    });
    seconds_[2] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    advance(4.0 * H_);
  }

  // Aggregates exactly as quantize_dump forms them.
  QuantizeReport report() {
    QuantizeReport r = report_header(policy_, s_, dump_.meta().model_id);
    r.per_head = std::move(heads_);
    ErrorSums ks, vs;
    merge_kv_sums(r.per_head, sums_, &ks, &vs);
    uint64_t sbits = 0;
    for (uint64_t b : static_bits_) sbits += b;
    fill_report_totals(r, ks, vs, sbits);
    r.calibration_seconds = smooth_seconds_;
    std::vector<std::pair<size_t, AttentionSums>> measured;
    for (size_t i = 0; i < per_.size(); ++i) measured.emplace_back(i, per_[i]);
    fill_attention_totals(r, measured, static_cast<int>(positions_.size()));
    return r;
  }

  const DumpReader& dump_;
  const Policy& policy_;
  const QuantizeOptions& opts_;
  const DumpShape s_;
  const int T_, D_, H_;
  const size_t he_;
  std::vector<HeadPlan> plans_;
  std::vector<HeadMetrics> heads_;
  std::vector<uint64_t> static_bits_;
  std::vector<ErrorSums> sums_;
  std::vector<int> positions_;
  std::vector<AttentionSums> per_;
  std::vector<float> kq_, vq_, kx_, vx_, kdiv_;
  std::unique_ptr<float[]> qx_;
  std::vector<bool> smoothed_;
  double smooth_seconds_ = 0, done_ = 0, total_work_ = 1;
  double seconds_[3] = {};  // quantizing, query rows + attention, attention products (KVSCOPE_PROFILE)
};

}  // namespace

QuantizeReport quantize_dump_streamed(const DumpReader& dump, const Policy& policy, const QuantizeOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  if (!quantizes_streamed(policy))
    throw Error("policy '" + policy.name + "' needs statistics over the whole dump; it cannot be quantized layer by layer");
  if (opts.attention && !dump.has_q())
    throw Error("dump has no queries (layers.{L}.q); attention metrics need Q — capture them or disable attention metrics");
  QuantizeReport r = StreamedQuantize(dump, policy, opts).run();
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (std::getenv("KVSCOPE_PROFILE")) std::fprintf(stderr, "quantize_dump_streamed: %.3f s\n", r.wall_seconds);
  return r;
}

}  // namespace kvscope
