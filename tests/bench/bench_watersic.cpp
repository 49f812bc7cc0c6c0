// WaterSIC time per (layer, KV head) on the Qwen2.5-0.5B shape (4096 tokens, head_dim 64, 7 query
// heads per KV head) at target 2.0: Hessian of the stacked queries + subsample search + refinement
// on all rows + final pass, single-threaded; next to uniform-4 per-token (groups of 32, fp16
// metadata) of the same head. Also the parts (Hessian alone, search alone) and kl_aware.
//
//   build/tests/bench/bench_watersic [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <vector>

#include "core/policy/policy.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/watersic.h"
#include "core/synth/synth.h"

using namespace kvscope;

namespace {

// One layer of the default synthetic dump, with a planted outlier head (KV head 0), fp16-rounded.
const KvDump& dump() {
  static KvDump d = [] {
    SynthOptions o;
    o.layers = 1;
    o.planted = {{0, 0, 125.7f}};
    KvDump x = make_synthetic_dump(o);
    for (auto& l : x.layers)
      for (auto* t : {&l.k, &l.v, &l.q})
        for (auto& v : *t) v = round_to_f16(v);
    return x;
  }();
  return d;
}

std::vector<const float*> group_queries(int kv_head) {
  const KvDump& d = dump();
  std::vector<const float*> q;
  for (int j = kv_head * d.shape.group(); j < (kv_head + 1) * d.shape.group(); ++j) q.push_back(d.q(0, j));
  return q;
}

void BM_watersic_key_head(benchmark::State& st) {
  const KvDump& d = dump();
  WaterSicOptions o;
  o.target_rate = 2.0;
  o.kl_aware = st.range(1) != 0;
  double rate = 0;
  for (auto _ : st) {
    WaterSicState s = watersic_quantize_key_head(d, 0, static_cast<int>(st.range(0)), o);
    rate = s.rate;
    st.counters["passes"] = s.passes;
  }
  st.counters["rate"] = rate;
}

void BM_watersic_hessian(benchmark::State& st) {
  const KvDump& d = dump();
  const auto q = group_queries(0);
  for (auto _ : st) benchmark::DoNotOptimize(query_gram(q, d.shape.tokens, d.shape.head_dim).data());
}

void BM_watersic_search_given_hessian(benchmark::State& st) {
  const KvDump& d = dump();
  const auto sigma = query_gram(group_queries(0), d.shape.tokens, d.shape.head_dim);
  std::vector<double> k(d.k(0, 0), d.k(0, 0) + d.head_elems());
  WaterSicOptions o;
  o.target_rate = 2.0;
  for (auto _ : st) benchmark::DoNotOptimize(watersic_quantize(k.data(), d.shape.tokens, d.shape.head_dim, sigma.data(), o).rate);
}

void BM_uniform4_key_head(benchmark::State& st) {
  const KvDump& d = dump();
  TensorQuant spec;
  spec.bits = 4;
  spec.group_size = 32;
  std::vector<float> y(d.head_elems());
  for (auto _ : st) {
    QuantizedTensor q = quantize_tensor(d.k(0, 0), d.shape.tokens, d.shape.head_dim, spec);
    q.dequantize(y.data());
    benchmark::DoNotOptimize(y.data());
  }
}

}  // namespace

BENCHMARK(BM_watersic_key_head)->Args({0, 0})->Args({1, 0})->Args({0, 1})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_watersic_hessian)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_watersic_search_given_hessian)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_uniform4_key_head)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
