// Replay speed on tinystories-llama-8L, measured in the same run:
//   decode tokens/s with the quantized cache (kivi-2, uniform-4, kvmix-1)  vs  the fp16 reference
//   cache on the same model and context (target >= 0.8x), and wall time per 1000 decode steps.
// Decode runs from a 256-token prefill for kSteps steps (positions 256..256+kSteps), so KIVI's key
// block flushes (every 128 tokens) and value slides (every token) are inside the measured loop.
// Run: KVSCOPE_TEST_MODELS=../shared/models build/tests/bench/bench_replay
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/replay/quantized_kv_cache.h"

#include "bench_common.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPrefill = 256;
constexpr int kSteps = 256;

std::map<std::string, double> g_rate;  // name -> decode steps per second (best of the repetitions)

using bench::model;
using bench::tokens;

std::unique_ptr<kvscope::KvCache> make_cache(const std::string& preset) {
  const auto& c = model().config();
  if (preset == "reference")
    return std::make_unique<kvscope::Fp16KvCache>(c.num_layers, c.num_kv_heads, c.head_dim, kPrefill + kSteps);
  return std::make_unique<kvscope::QuantizedKvCache>(c, kvscope::load_preset(preset), kPrefill + kSteps);
}

void BM_Decode(benchmark::State& state, const std::string& preset) {
  const auto ids = tokens(kPrefill + kSteps);
  for (auto _ : state) {
    state.PauseTiming();
    auto cache = make_cache(preset);
    model().forward(std::span<const int32_t>(ids.data(), kPrefill), *cache);
    state.ResumeTiming();
    const auto t0 = Clock::now();
    for (int i = 0; i < kSteps; ++i) {
      auto logits = model().forward(std::span<const int32_t>(&ids[kPrefill + i], 1), *cache);
      benchmark::DoNotOptimize(logits.data());
    }
    const double rate = kSteps / std::chrono::duration<double>(Clock::now() - t0).count();
    g_rate[preset] = std::max(g_rate[preset], rate);
  }
  state.counters["tok/s"] = benchmark::Counter(static_cast<double>(kSteps) * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Decode, reference, std::string("reference"))->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(BM_Decode, kivi2, std::string("kivi-2"))->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(BM_Decode, uniform4, std::string("uniform-4"))->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(BM_Decode, kvmix1, std::string("kvmix-1"))->Unit(benchmark::kMillisecond)->Iterations(3);

// The machine is shared: the ratio comes from rounds that alternate the caches (best rate of each),
// so a burst of outside load hits all of them alike.
void interleaved_rounds(int rounds) {
  const auto ids = tokens(kPrefill + kSteps);
  for (int r = 0; r < rounds; ++r) {
    for (const std::string preset : {"reference", "kivi-2", "uniform-4", "kvmix-1"}) {
      auto cache = make_cache(preset);
      model().forward(std::span<const int32_t>(ids.data(), kPrefill), *cache);
      const auto t0 = Clock::now();
      for (int i = 0; i < kSteps; ++i) {
        auto logits = model().forward(std::span<const int32_t>(&ids[kPrefill + i], 1), *cache);
        benchmark::DoNotOptimize(logits.data());
      }
      const double rate = kSteps / std::chrono::duration<double>(Clock::now() - t0).count();
      g_rate[preset] = std::max(g_rate[preset], rate);
    }
  }
}

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  interleaved_rounds(4);
  const double ref = g_rate["reference"];
  std::printf("\ndecode tokens/s, quantized cache vs fp16 reference cache (target >= 0.8x):\n");
  for (const auto& [name, rate] : g_rate)
    std::printf("  %-10s %8.1f tok/s  ratio %.3f  wall per 1000 decode steps %.2f s\n", name.c_str(), rate,
                ref > 0 ? rate / ref : 0.0, 1000.0 / rate);
  benchmark::Shutdown();
  return 0;
}
