// Quantizer throughput: quantize + dequantize + NMSE over the whole 4096-token Qwen2.5-0.5B-shaped
// dump (K and V, all layers and heads), as GB/s of fp32 input, next to (a) the same method as a
// naive chain of libtorch tensor ops and (b) memcpy of the same bytes (the bandwidth limit).
// BM_stored_* run the streaming group kernels (core/quant/group_kernels.h) on the dump stored as
// f16 (codes + scales + NMSE sums, one pass): elements/s and bytes/s of f16 read.
// Ratios are printed at the end of the run. Also: the whole `kvscope quantize --preset kivi-2`
// path (load the dump file + quantize + tensor and attention metrics with default sampling).
//
//   build/tests/bench/bench_quant [--benchmark_filter=...]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "core/metrics/tensor_error.h"
#include "core/policy/policy.h"
#include "core/quant/group_kernels.h"
#include "core/quant/head_plan.h"
#include "core/quant/quantize_dump.h"
#include "core/quant/quantized_tensor.h"
#include "core/synth/synth.h"
#include "core/util/parallel.h"

using namespace kvscope;

namespace {

const KvDump& dump() {
  static KvDump d = [] {
    KvDump x = make_synthetic_dump(SynthOptions{});
    for (auto& l : x.layers)
      for (auto* t : {&l.k, &l.v})
        for (auto& v : *t) v = round_to_f16(v);
    return x;
  }();
  return d;
}

int64_t kv_elems() { return int64_t(dump().shape.layers) * dump().shape.kv_heads * 2 * dump().head_elems(); }
int64_t kv_bytes() { return int64_t(dump().shape.layers) * dump().shape.kv_heads * 2 * dump().head_elems() * 4; }

// Our path: every (layer, head, kind) through quantize_tensor -> dequantize -> ErrorSums.
void run_ours(benchmark::State& st, const char* preset) {
  const KvDump& d = dump();
  auto plans = plan_heads(d, load_preset(preset));
  std::vector<std::vector<float>> out(worker_threads(), std::vector<float>(d.head_elems()));
  double sink = 0;
  for (auto _ : st) {
    std::vector<double> nmse(plans.size());
    parallel_for(static_cast<int64_t>(plans.size()), [&](int64_t i) {
      const HeadPlan& p = plans[i];
      const float* x = p.kind == 'k' ? d.k(p.layer, p.head) : d.v(p.layer, p.head);
      thread_local std::vector<float> y(d.head_elems());
      // As quantize_dump does: the reconstruction comes out of the encoding pass (tests check it
      // equals dequantize() bit for bit).
      QuantizedTensor q = quantize_tensor(x, d.shape.tokens, d.shape.head_dim, p.quant, p.fp_head, p.fp_tail, y.data());
      ErrorSums e;
      e.add(x, y.data(), y.size());
      nmse[i] = e.nmse();
    });
    sink += nmse[0];
  }
  benchmark::DoNotOptimize(sink);
  st.SetBytesProcessed(st.iterations() * kv_bytes());
  st.SetItemsProcessed(st.iterations() * kv_elems());
}

// The dump's K and V as f16 bytes, one buffer per (layer, kind) [kv_heads, tokens, head_dim].
const std::vector<std::vector<uint16_t>>& dump_f16() {
  static std::vector<std::vector<uint16_t>> b = [] {
    std::vector<std::vector<uint16_t>> out;
    for (const auto& l : dump().layers)
      for (const auto* t : {&l.k, &l.v}) {
        out.emplace_back(t->size());
        convert_from_f32(DType::F16, t->data(), t->size(), out.back().data());
      }
    return out;
  }();
  return b;
}

// Streaming kernels on f16: every (layer, head, kind) -> codes, scales, error sums (no f32 copy).
void run_stored(benchmark::State& st, const char* preset) {
  const KvDump& d = dump();
  const auto& f16 = dump_f16();
  const int T = d.shape.tokens, D = d.shape.head_dim;
  std::vector<StoredJob> jobs;
  for (const HeadPlan& p : plan_heads(d, load_preset(preset))) {
    const auto& buf = f16[p.layer * 2 + (p.kind == 'v')];
    jobs.push_back({{buf.data() + size_t(p.head) * T * D, DType::F16, T, D}, p.quant, p.fp_head, p.fp_tail, nullptr});
  }
  double sink = 0;
  for (auto _ : st) {
    std::vector<StoredResult> r = quantize_stored_all(jobs);
    sink += r[0].err.nmse() + double(r.back().q.total_bits());
  }
  benchmark::DoNotOptimize(sink);
  st.SetBytesProcessed(st.iterations() * kv_elems() * 2);
  st.SetItemsProcessed(st.iterations() * kv_elems());
}

// Asymmetric min-max fake quantization of groups along the last dim, fp16 metadata, as a
// straightforward libtorch op chain (what a Python script would write).
at::Tensor torch_fake_quant(const at::Tensor& x, int bits) {
  at::Tensor mn = std::get<0>(x.min(-1, true)).to(at::kHalf).to(at::kFloat);
  at::Tensor mx = std::get<0>(x.max(-1, true));
  at::Tensor s = ((mx - mn) / double((1 << bits) - 1)).to(at::kHalf).to(at::kFloat).clamp_min(1e-8);
  at::Tensor q = at::round((x - mn) / s).clamp(0, (1 << bits) - 1);
  return q * s + mn;
}

double torch_nmse(const at::Tensor& x, const at::Tensor& y) { return ((x - y).pow(2).sum() / x.pow(2).sum()).item<double>(); }

void run_torch(benchmark::State& st, const char* preset) {
  const KvDump& d = dump();
  const int64_t T = d.shape.tokens, D = d.shape.head_dim, H = d.shape.kv_heads;
  const bool kivi = std::string(preset) == "kivi-2";
  at::set_num_threads(worker_threads());
  std::vector<at::Tensor> ks, vs;
  for (const auto& l : d.layers) {
    ks.push_back(at::from_blob(const_cast<float*>(l.k.data()), {H, T, D}));
    vs.push_back(at::from_blob(const_cast<float*>(l.v.data()), {H, T, D}));
  }
  double sink = 0;
  for (auto _ : st) {
    for (size_t l = 0; l < ks.size(); ++l) {
      if (!kivi) {  // uniform-4: per-token groups of 32 channels
        for (const at::Tensor& x : {ks[l], vs[l]}) {
          at::Tensor y = torch_fake_quant(x.reshape({H, T, D / 32, 32}), 4).reshape({H, T, D});
          sink += torch_nmse(x, y);
        }
      } else {  // kivi-2: K per-channel over 32-token groups, last T % 128 fp16; V per-token, last 128 fp16
        const int64_t tk = T - T % 128, tv = T - std::min<int64_t>(T, 128);
        at::Tensor k = ks[l].narrow(1, 0, tk).reshape({H, tk / 32, 32, D}).transpose(2, 3);
        at::Tensor yk = at::cat({torch_fake_quant(k, 2).transpose(2, 3).reshape({H, tk, D}), ks[l].narrow(1, tk, T - tk)}, 1);
        at::Tensor v = vs[l].narrow(1, 0, tv).reshape({H, tv, D / 32, 32});
        at::Tensor yv = at::cat({torch_fake_quant(v, 2).reshape({H, tv, D}), vs[l].narrow(1, tv, T - tv)}, 1);
        sink += torch_nmse(ks[l], yk) + torch_nmse(vs[l], yv);
      }
    }
  }
  benchmark::DoNotOptimize(sink);
  st.SetBytesProcessed(st.iterations() * kv_bytes());
  st.SetItemsProcessed(st.iterations() * kv_elems());
}

void BM_memcpy(benchmark::State& st) {
  const KvDump& d = dump();
  std::vector<std::vector<float>> dst(d.shape.layers * 2, std::vector<float>(d.layers[0].k.size()));
  for (auto _ : st) {
    parallel_for(d.shape.layers * 2, [&](int64_t i) {
      const auto& src = i % 2 ? d.layers[i / 2].v : d.layers[i / 2].k;
      std::memcpy(dst[i].data(), src.data(), src.size() * 4);
    });
    benchmark::ClobberMemory();
  }
  st.SetBytesProcessed(st.iterations() * kv_bytes());
  st.SetItemsProcessed(st.iterations() * kv_elems());
}

void BM_ours_uniform4(benchmark::State& st) { run_ours(st, "uniform-4"); }
void BM_ours_kivi2(benchmark::State& st) { run_ours(st, "kivi-2"); }
void BM_stored_uniform4(benchmark::State& st) { run_stored(st, "uniform-4"); }
void BM_stored_kivi2(benchmark::State& st) { run_stored(st, "kivi-2"); }
// The same kernels with the loops of a narrower instruction set forced (same bits; what a CPU
// without AVX-512 runs): the A/B of the per-set loops in this run.
void run_stored_isa(benchmark::State& st, const char* preset, KernelIsa isa) {
  if (!set_group_kernel_isa(isa)) {
    st.SkipWithError("this CPU lacks the instruction set");
    return;
  }
  run_stored(st, preset);
  set_group_kernel_isa(KernelIsa::Auto);
}
void BM_stored_kivi2_avx2(benchmark::State& st) { run_stored_isa(st, "kivi-2", KernelIsa::Avx2); }
void BM_stored_kivi2_baseline(benchmark::State& st) { run_stored_isa(st, "kivi-2", KernelIsa::Baseline); }
void BM_torch_uniform4(benchmark::State& st) { run_torch(st, "uniform-4"); }
void BM_torch_kivi2(benchmark::State& st) { run_torch(st, "kivi-2"); }

// The whole `kvscope quantize --dump F --preset kivi-2` work: load the fp16 file, quantize, metrics.
void BM_quantize_command_kivi2(benchmark::State& st) {
  std::string path = (std::filesystem::temp_directory_path() / "kvscope-bench-demo.safetensors").string();
  if (!std::filesystem::exists(path)) save_dump(path, make_synthetic_dump(SynthOptions{}));
  Policy p = load_preset("kivi-2");
  for (auto _ : st) {
    KvDump d = load_dump(path, {.require_q = true, .load_q = true, .load_pre_rope = false});
    QuantizeReport r = quantize_dump(d, p, QuantizeOptions{});
    benchmark::DoNotOptimize(r.attn_cos_mean);
  }
}

// Console output plus a ratio table at the end (GB/s measured in this same run).
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.counters.count("bytes_per_second")) rate_[r.run_name.function_name] = r.counters.at("bytes_per_second");
      if (r.counters.count("items_per_second")) items_[r.run_name.function_name] = r.counters.at("items_per_second");
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto get = [&](const std::string& n) { return rate_.count(n) ? rate_[n] / 1e9 : 0.0; };
    double mem = get("BM_memcpy");
    std::printf("\nthroughput (GB/s of fp32 K+V input), ratios from this run:\n");
    for (const char* m : {"uniform4", "kivi2"}) {
      double ours = get(std::string("BM_ours_") + m), torch = get(std::string("BM_torch_") + m);
      if (ours > 0)
        std::printf("  %-9s ours %6.2f  torch op chain %6.2f  memcpy %6.2f  -> %5.1fx the op chain, %5.1f%% of memcpy\n", m,
                    ours, torch, mem, torch > 0 ? ours / torch : 0.0, mem > 0 ? 100 * ours / mem : 0.0);
    }
    auto items = [&](const std::string& n) { return items_.count(n) ? items_[n] / 1e9 : 0.0; };
    std::printf("\nstreaming kernels on f16 input (bytes read = 2 per element), ratios from this run:\n");
    for (const char* m : {"uniform4", "kivi2"}) {
      const std::string s = std::string("BM_stored_") + m;
      double el = items(s), by = get(s), torch = items(std::string("BM_torch_") + m);
      if (el > 0)
        std::printf("  %-9s %5.2f G elements/s, %6.2f GB/s of f16 = %5.1f%% of memcpy (%.2f GB/s), %5.1fx the op chain, %4.1fx quantize_tensor on f32\n",
                    m, el, by, mem > 0 ? 100 * by / mem : 0.0, mem, torch > 0 ? el / torch : 0.0,
                    items(std::string("BM_ours_") + m) > 0 ? el / items(std::string("BM_ours_") + m) : 0.0);
    }
    const double best = items("BM_stored_kivi2");
    for (const char* isa : {"avx2", "baseline"}) {
      const double el = items(std::string("BM_stored_kivi2_") + isa);
      if (el > 0 && best > 0)
        std::printf("  kivi2 with the %-8s loops: %5.2f G elements/s (the CPU's best loops, %s: %.2fx)\n", isa, el,
                    group_kernel_isa_name(), best / el);
    }
  }

 private:
  std::map<std::string, double> rate_, items_;
};

}  // namespace

BENCHMARK(BM_memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ours_uniform4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_torch_uniform4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ours_kivi2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_torch_kivi2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stored_uniform4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stored_kivi2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stored_kivi2_avx2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_stored_kivi2_baseline)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_quantize_command_kivi2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

int main(int argc, char** argv) {
  // Every iteration allocates the kernels' outputs (packed codes, scales: ~20 MB here) and frees
  // them; glibc's default trim threshold hands that memory back to the kernel each time, so every
  // iteration would also time ~5,000 page faults. A pipeline reuses its memory: keep it.
  if (!std::getenv("KVSCOPE_BENCH_TRIM")) mallopt(M_TRIM_THRESHOLD, 1 << 30), mallopt(M_MMAP_THRESHOLD, 1 << 28);
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
}
