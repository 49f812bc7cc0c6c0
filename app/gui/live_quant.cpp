#include "app/gui/live_quant.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "core/quant/group_kernels.h"
#include "core/quant/method_registry.h"
#include "core/quant/quantize_stream.h"
#include "core/quant/report_totals.h"
#include "core/tensor/compute_threads.h"
#include "core/util/cancelled.h"
#include "core/util/parallel.h"

namespace kvscope::gui {

namespace {

std::string plan_key(const std::string& method, const HeadPlan& p) {
  const TensorQuant& q = p.quant;
  // Every field quantize_stored reads, doubles in hex (exact).
  return fmt::format("{}|fp{}|b{}|ax{}|g{}|s{}|iz{}|c{:a}|cs{}|cm{:a}|st{:a}|sd{}|inv{}|h{}|t{}", method, q.full_precision,
                     q.bits, static_cast<int>(q.axis), q.group_size, q.symmetric, q.integer_zero_point, q.clip_ratio,
                     q.clip_search, q.clip_min, q.clip_step, static_cast<int>(q.scale_dtype), q.inverse_scale, p.fp_head,
                     p.fp_tail);
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One (layer, KV head) pair's working data for attention: originals and reconstructions in f32,
// and the query rows at the sampled positions (the other rows are never touched, so never resident).
struct PairBuffers {
  std::vector<float> k, v, kq, vq;
  std::unique_ptr<float[]> q;  // [G, tokens, head_dim], uninitialized
  size_t q_size = 0;
};

// The pair's originals and reconstructions: one kernel pass per slice gives both (quantizing again
// costs about what converting the stored values alone did, so no codes are kept between passes).
void load_pair(const DumpSource& src, const LivePass& pass, int l, int h, const std::vector<int>& positions, PairBuffers& b) {
  const DumpShape& s = src.shape();
  const size_t n = static_cast<size_t>(s.tokens) * s.head_dim;
  const int G = s.group();
  b.k.resize(n), b.v.resize(n), b.kq.resize(n), b.vq.resize(n);
  if (b.q_size != static_cast<size_t>(G) * n) {
    b.q_size = static_cast<size_t>(G) * n;
    b.q.reset(new float[b.q_size]);
  }
  const size_t base = (static_cast<size_t>(l) * s.kv_heads + h) * 2;
  for (int kind = 0; kind < 2; ++kind) {
    const HeadPlan& p = pass.plans[base + kind];
    (void)quantize_stored(src.slice(l, h, kind ? 'v' : 'k'), p.quant, p.fp_head, p.fp_tail, nullptr,
                          (kind ? b.vq : b.kq).data(), (kind ? b.v : b.k).data());
  }
  for (int g = 0; g < G; ++g) src.read_q_rows(l, h * G + g, positions, b.q.get() + g * n);  // HF repeat_kv
}

AttentionSums measure_pair(const DumpSource& src, const std::vector<int>& positions, PairBuffers& b) {
  const DumpShape& s = src.shape();
  const size_t n = static_cast<size_t>(s.tokens) * s.head_dim;
  std::vector<const float*> q;
  for (int g = 0; g < s.group(); ++g) q.push_back(b.q.get() + g * n);
  return attention_error(q, b.k.data(), b.v.data(), b.kq.data(), b.vq.data(), s.tokens, s.head_dim, positions);
}

}  // namespace

std::vector<std::string> slice_keys(const KvDump& header, const Policy& p, std::vector<HeadPlan>* plans_out) {
  // Per-head slices only: ranked outlier rules and KVSmooth need the whole dump's (or layer's) keys,
  // which quantize_dump_streamed computes but this slice-by-slice path does not.
  const bool ranked = p.outliers.rule != OutlierSelect::Rule::None && p.outliers.rule != OutlierSelect::Rule::List;
  if (!quantizes_streamed(p) || ranked || p.smooth) return {};
  std::vector<HeadPlan> plans = plan_heads(header, p);  // per-head rules only: the header suffices
  const std::string method = method_name(p.method);
  std::vector<std::string> keys;
  keys.reserve(plans.size());
  for (const HeadPlan& hp : plans) keys.push_back(plan_key(method, hp));
  if (plans_out) *plans_out = std::move(plans);
  return keys;
}

void UpdateInbox::push(LayerUpdate u) {
  std::lock_guard<std::mutex> lock(mu_);
  updates_.push_back(std::move(u));
}

std::vector<LayerUpdate> UpdateInbox::take() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(updates_, {});
}

int choose_query_positions(const DumpSource& src, const LivePass& pass, double budget_s) {
  const DumpShape& s = src.shape();
  constexpr int kProbe = 16;
  const std::vector<int> probe = sample_positions(s.tokens, kProbe);
  ScopedBlasThreads blas(1);
  PairBuffers b;
  const auto t0 = Clock::now();
  load_pair(src, pass, s.layers / 2, 0, probe, b);  // as if nothing were cached: the costlier case
  const double fixed = seconds_since(t0);  // per pair: conversion + reconstruction
  const auto t1 = Clock::now();
  (void)measure_pair(src, probe, b);
  const double per_position = seconds_since(t1) / double(probe.size());
  src.release_layer(s.layers / 2);
  if (std::getenv("KVSCOPE_PROFILE"))
    std::fprintf(stderr, "live attention probe: %.1f ms per pair (load + reconstruction), %.3f ms per query position\n",
                 fixed * 1e3, per_position * 1e3);
  const double pairs = double(s.layers) * s.kv_heads;
  const double per_pair = budget_s * worker_threads() / pairs;
  const double n = per_position > 0 ? (per_pair - fixed) / per_position : kMaxPositions;
  const double clamped = std::clamp(n, double(kMinPositions), double(kMaxPositions));  // before the cast: n may be huge
  return std::min(s.tokens, static_cast<int>(clamped));
}

void run_live_pass(const DumpSource& src, const LivePass& pass, const std::atomic<bool>& cancel, UpdateInbox& inbox,
                   const std::function<void(double)>& progress) {
  const DumpShape& s = src.shape();
  const int H = s.kv_heads;
  const size_t n = static_cast<size_t>(s.tokens) * s.head_dim;
  auto check = [&] {
    if (cancel.load()) throw Cancelled();
  };
  // Work units: one per slice, four per attention pair (its reconstruction and the products).
  const double total = double(pass.slices.size()) + 4.0 * pass.attention.size();
  double done = 0;
  auto advance = [&](double units) {
    done += units;
    if (progress && total > 0) progress(done / total);
  };

  const bool profile = std::getenv("KVSCOPE_PROFILE") != nullptr;
  const auto t0 = Clock::now();
  double kernel_s = 0;  // inside quantize_stored_all
  // Tensor metrics, a layer at a time.
  for (size_t i = 0; i < pass.slices.size();) {
    check();
    const int l = static_cast<int>(pass.slices[i] / (2 * H));
    size_t end = i;
    while (end < pass.slices.size() && static_cast<int>(pass.slices[end] / (2 * H)) == l) ++end;
    src.check_intact(l);
    std::vector<StoredJob> jobs;
    for (size_t j = i; j < end; ++j) {
      const HeadPlan& p = pass.plans[pass.slices[j]];
      jobs.push_back({src.slice(l, p.head, p.kind), p.quant, p.fp_head, p.fp_tail, nullptr});
    }
    const auto tq = Clock::now();
    std::vector<StoredResult> res = quantize_stored_all(jobs);
    kernel_s += seconds_since(tq);
    LayerUpdate u;
    u.gen = pass.gen;
    u.layer = l;
    for (size_t j = i; j < end; ++j) {
      const size_t si = pass.slices[j];
      const HeadPlan& p = pass.plans[si];
      const StoredResult& r = res[j - i];
      SliceOutcome o;
      o.key = pass.keys[si];
      o.sums = r.err;
      HeadMetrics& m = o.metrics;  // as quantize_dump fills it
      m.layer = p.layer;
      m.head = p.head;
      m.kind = p.kind;
      m.nmse = r.err.nmse();
      m.cos = r.err.cos();
      m.mse = r.err.mse();
      m.max_abs = r.err.max_abs;
      m.bits = r.q.total_bits();
      m.elements = n;
      m.full_precision = p.quant.full_precision;
      o.static_bits = r.q.static_bits();
      u.slices.emplace_back(si, std::move(o));
    }
    inbox.push(std::move(u));
    src.release_layer(l);
    advance(double(end - i));
    i = end;
  }
  const double tensor_s = seconds_since(t0);
  if (profile)
    std::fprintf(stderr, "live pass %llu: %zu slices in %.3f s (%.3f s in the kernels)\n", (unsigned long long)pass.gen,
                 pass.slices.size(), tensor_s, kernel_s);
  if (pass.attention.empty()) return;

  // Attention metrics, a layer at a time, one (layer, KV head) per worker thread.
  std::vector<int> positions = pass.positions;
  if (!src.stored_q_positions().empty()) positions = src.stored_q_positions();
  else if (positions.empty()) positions = sample_positions(s.tokens, choose_query_positions(src, pass, pass.attention_budget_s));
  ScopedBlasThreads blas(1);
  for (size_t i = 0; i < pass.attention.size();) {
    check();
    const int l = static_cast<int>(pass.attention[i] / H);
    size_t end = i;
    while (end < pass.attention.size() && static_cast<int>(pass.attention[end] / H) == l) ++end;
    src.check_intact(l);
    std::vector<AttentionSums> sums(end - i);
    parallel_for(static_cast<int64_t>(end - i), [&](int64_t j) {
      check();
      thread_local PairBuffers b;  // reused across pairs: the query rows are rewritten at the same positions
      const int h = static_cast<int>(pass.attention[i + j] % H);
      load_pair(src, pass, l, h, positions, b);
      sums[j] = measure_pair(src, positions, b);
    });
    LayerUpdate u;
    u.gen = pass.gen;
    u.layer = l;
    for (size_t j = i; j < end; ++j) {
      const size_t pi = pass.attention[j];
      AttentionOutcome o;
      o.key = pass.keys[pi * 2] + "&" + pass.keys[pi * 2 + 1];
      o.positions = static_cast<int>(positions.size());
      o.sums = sums[j - i];
      u.attention.emplace_back(pi, std::move(o));
    }
    inbox.push(std::move(u));
    src.release_layer(l);
    advance(4.0 * double(end - i));
    i = end;
  }
  if (profile)
    std::fprintf(stderr, "live pass %llu: attention of %zu pairs at %zu positions in %.3f s\n", (unsigned long long)pass.gen,
                 pass.attention.size(), positions.size(), seconds_since(t0) - tensor_s);
}

QuantizeReport assemble_report(const KvDump& header, const Policy& policy, const std::vector<SliceOutcome>& slices,
                               const std::vector<AttentionOutcome>& attention, int positions) {
  QuantizeReport r = report_header(policy, header.shape, header.meta.model_id);
  std::vector<ErrorSums> sums;
  uint64_t sbits = 0;
  for (const SliceOutcome& o : slices) {
    if (o.key.empty()) continue;
    r.per_head.push_back(o.metrics);
    sums.push_back(o.sums);
    sbits += o.static_bits;
  }
  ErrorSums ks, vs;
  merge_kv_sums(r.per_head, sums, &ks, &vs);
  fill_report_totals(r, ks, vs, sbits);
  std::vector<std::pair<size_t, AttentionSums>> measured;
  for (size_t i = 0; i < attention.size(); ++i)
    if (!attention[i].key.empty() && attention[i].positions == positions) measured.emplace_back(i, attention[i].sums);
  fill_attention_totals(r, measured, positions);
  return r;
}

}  // namespace kvscope::gui
