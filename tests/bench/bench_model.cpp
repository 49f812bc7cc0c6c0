// Forward-pass speed on the largest shared model (tinystories-llama-8L), as ratios measured in
// the same run:
//   prefill tokens/s (batched, matrix-matrix)   vs  a naive token-at-a-time prefill (target >= 3x)
//   decode tokens/s (one token, KV cache)        vs  the memory-bandwidth bound: memcpy bandwidth /
//                                                    weight bytes read per step (target within 2x)
//                                                    (bandwidth = bytes copied per second by memcpy)
// Run: KVSCOPE_TEST_MODELS=../shared/models build/tests/bench/bench_model
// (BENCH_BLAS_THREADS=N overrides the OpenBLAS thread count, to compare 1 vs 2 threads.)
#include <benchmark/benchmark.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/util/parallel.h"

#include "bench_common.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPrefillTokens = 256;
constexpr int kDecodeContext = 128;

std::map<std::string, double> g_rate;  // name -> items per second (our own wall-clock measure)

using bench::model;
using bench::tokens;

void record(benchmark::State& state, const std::string& name, double items, Clock::time_point t0) {
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  g_rate[name] = items / s;
  state.counters["items/s"] = benchmark::Counter(items, benchmark::Counter::kIsRate);
}

void BM_PrefillBatched(benchmark::State& state) {
  const auto ids = tokens(kPrefillTokens);
  double items = 0;
  const auto t0 = Clock::now();
  for (auto _ : state) {
    auto cache = model().new_cache(kPrefillTokens);
    benchmark::DoNotOptimize(model().forward(ids, *cache));
    items += kPrefillTokens;
  }
  record(state, "prefill", items, t0);
}
BENCHMARK(BM_PrefillBatched)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

void BM_PrefillNaiveTokenAtATime(benchmark::State& state) {
  const auto ids = tokens(kPrefillTokens);
  double items = 0;
  const auto t0 = Clock::now();
  for (auto _ : state) {
    auto cache = model().new_cache(kPrefillTokens);
    for (int i = 0; i < kPrefillTokens; ++i)
      benchmark::DoNotOptimize(model().forward(std::span(ids).subspan(i, 1), *cache));
    items += kPrefillTokens;
  }
  record(state, "naive_prefill", items, t0);
}
BENCHMARK(BM_PrefillNaiveTokenAtATime)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

void BM_Decode(benchmark::State& state) {
  const auto ids = tokens(kDecodeContext + 64);
  auto cache = model().new_cache(kDecodeContext + 64);
  model().forward(std::span(ids).first(kDecodeContext), *cache);
  int pos = kDecodeContext;
  double items = 0;
  Clock::duration spent{};
  for (auto _ : state) {
    if (pos == static_cast<int>(ids.size())) {  // keep the context length in [128, 192)
      state.PauseTiming();
      cache->clear();
      model().forward(std::span(ids).first(kDecodeContext), *cache);
      pos = kDecodeContext;
      state.ResumeTiming();
    }
    const auto t = Clock::now();
    benchmark::DoNotOptimize(model().forward(std::span(ids).subspan(pos, 1), *cache));
    spent += Clock::now() - t;
    ++pos;
    items += 1;
  }
  g_rate["decode"] = items / std::chrono::duration<double>(spent).count();
  state.counters["items/s"] = benchmark::Counter(items, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond)->MinTime(3.0)->UseRealTime();

// Streaming bandwidth: copy a buffer much larger than the caches (bytes read + written).
void BM_MemcpyBandwidth(benchmark::State& state) {
  const size_t n = size_t{256} << 20;
  std::vector<char> a(n, 1), b(n, 2);
  double bytes = 0;
  const auto t0 = Clock::now();
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::ClobberMemory();
    bytes += 2.0 * n;
  }
  record(state, "bandwidth", bytes, t0);
}
BENCHMARK(BM_MemcpyBandwidth)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

void BM_Sgemm1024(benchmark::State& state) {
  at::Tensor a = at::randn({1024, 1024}), b = at::randn({1024, 1024});
  double flops = 0;
  const auto t0 = Clock::now();
  for (auto _ : state) {
    benchmark::DoNotOptimize(at::mm(a, b));
    flops += 2.0 * 1024 * 1024 * 1024;
  }
  record(state, "sgemm_flops", flops, t0);
}
BENCHMARK(BM_Sgemm1024)->Unit(benchmark::kMillisecond)->MinTime(1.0)->UseRealTime();

// The BLAS library actually mapped into this process (Debian switches libblas.so.3 by alternatives).
std::string mapped_blas() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto p = line.find('/');
    if (p == std::string::npos) continue;
    const std::string path = line.substr(p);
    if (path.find("openblas") != std::string::npos) return path;
  }
  maps.clear();
  maps.seekg(0);
  while (std::getline(maps, line)) {
    const auto p = line.find('/');
    if (p != std::string::npos && line.find("libblas") != std::string::npos) return line.substr(p);
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  model();  // load before timing
  if (const char* t = std::getenv("BENCH_BLAS_THREADS")) {
    using SetThreads = void (*)(int);
    if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(std::atoi(t));
  }
  benchmark::RunSpecifiedBenchmarks();

  const double weight_bytes = static_cast<double>(model().weight_bytes());
  const std::string blas = mapped_blas();
  std::printf("\n== kvscope model benchmark (tinystories-llama-8L; ATen %d thread(s), BLAS %d thread(s)) ==\n",
              at::get_num_threads(), kvscope::worker_threads());
  std::printf("BLAS mapped: %s -> OpenBLAS %s\n", blas.empty() ? "(none found)" : blas.c_str(),
              blas.find("openblas") != std::string::npos ? "ACTIVE" : "NOT active");
  if (g_rate.count("sgemm_flops")) std::printf("sgemm 1024^2: %.1f GFLOP/s\n", g_rate["sgemm_flops"] / 1e9);
  if (g_rate.count("prefill") && g_rate.count("naive_prefill"))
    std::printf("prefill %d tokens: %.0f tok/s batched vs %.0f tok/s token-at-a-time = %.1fx (target >= 3x)\n",
                kPrefillTokens, g_rate["prefill"], g_rate["naive_prefill"], g_rate["prefill"] / g_rate["naive_prefill"]);
  if (g_rate.count("decode") && g_rate.count("bandwidth")) {
    const double bound = g_rate["bandwidth"] / 2.0 / weight_bytes;  // bytes copied per second / bytes per step
    std::printf("decode: %.1f tok/s; bound %.1f tok/s (memcpy %.2f GB/s copied / %.1f MB f32 weights per step)"
                " -> %.2fx of the bound (target within 2x)\n",
                g_rate["decode"], bound, g_rate["bandwidth"] / 2.0 / 1e9, weight_bytes / 1e6, bound / g_rate["decode"]);
  }
  benchmark::Shutdown();
  return 0;
}
