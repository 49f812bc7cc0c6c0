// Forward speed of one model as ratios measured in the same run (not part of the test suite):
//   prefill tok/s and its GFLOP/s as % of OpenBLAS sgemm at the model's MLP shape
//     (FLOPs counted: q/k/v/o projections, MLP, causal attention QK^T and PV; no LM head)
//     (timed into a KV cache already touched, as sgemm's buffers are; the fresh-cache time is printed too)
//   decode tok/s (one token per forward from position 0, as llama2.c's run.c steps) vs
//     - the memory-read bound: read bandwidth (2 threads summing 1 GiB: AVX2 float, AVX-512 float and
//       AVX2 integer adds on 4 KB pages, AVX2 float adds on 2 MB pages, the highest, best of before
//       and after the decode runs) / weight bytes as stored; and paired: each decode segment over
//       the mean of read samples taken just before and after it (median, min, max of the ratios)
//     - the session-6 mat-vec and the current one with its AVX2 loop forced, in the same run
//       (interleaved segments)
//     - run.c (OpenMP) on the same weights, when --runc BIN --runc-model FILE --tokenizer FILE are given
// Usage: bench_forward MODEL_DIR [--prefill N] [--decode N] [--reps N (prefill, best of)] [--runc ... --runc-model ... --tokenizer ...]
// scripts/bench_forward.sh builds run.c and converts the weights (outside the repo).
// GCC 12's avx512fintrin.h reads an uninitialized vector in _mm512_undefined_* (used by
// _mm512_reduce_add_ps and friends): a false -Wuninitialized under -Werror.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/model/model.h"
#include "core/tensor/matmul.h"
#include "core/tensor/worker_pool.h"

#include "bench_common.h"

namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double prefill_flops(const kvscope::ModelConfig& c, int n) {
  const double hid = c.hidden_size, inter = c.intermediate_size, d = c.head_dim;
  const double qd = c.num_heads * d, kvd = c.num_kv_heads * d;
  const double proj = 2.0 * n * (hid * (qd + 2 * kvd) + qd * hid + 3 * hid * inter);
  const double attn = 2.0 * 2.0 * c.num_heads * d * (double(n) * (n + 1) / 2);  // causal QK^T and PV
  return c.num_layers * (proj + attn);
}

// Best of `reps` sgemm [m, k] x [k, n]^T through the same wrapper the model uses.
double sgemm_gflops(int64_t m, int64_t n, int64_t k, int reps) {
  std::vector<float> a(m * k, 0.01f), b(n * k, 0.02f), c(m * n);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    kvscope::sgemm(false, true, m, n, k, 1.f, a.data(), k, b.data(), k, 0.f, c.data(), n);
    best = std::max(best, 2.0 * m * n * k / secs(t0) / 1e9);
  }
  return best;
}

__attribute__((target("avx2"))) float sum_avx2(const float* p, long n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (long i = 0; i + 32 <= n; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
  }
  float t[8];
  _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return t[0] + t[7];
}

__attribute__((target("avx512f"))) float sum_avx512(const float* p, long n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (long i = 0; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_loadu_ps(p + i));
    s1 = _mm512_add_ps(s1, _mm512_loadu_ps(p + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_loadu_ps(p + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_loadu_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

// Integer adds (1-cycle latency, no FP pipe): the read loop that asks least of the core.
__attribute__((target("avx2"))) float sum_int_avx2(const float* p, long n) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0;
  const auto* v = reinterpret_cast<const __m256i*>(p);
  for (long i = 0; i + 16 <= n; i += 16) {
    s0 = _mm256_add_epi32(s0, _mm256_loadu_si256(v + i / 8));
    s1 = _mm256_add_epi32(s1, _mm256_loadu_si256(v + i / 8 + 1));
  }
  return static_cast<float>(_mm256_extract_epi32(_mm256_add_epi32(s0, s1), 0));
}

// Read bandwidth: the same threads as the kernels each sum their part of a buffer of n floats (AVX2
// float adds, AVX-512 float adds, AVX2 integer adds: the bound is the highest). `huge`: the buffer in
// 2 MB pages (madvise MADV_HUGEPAGE), else 4 KB pages.
class ReadBuffer {
 public:
  ReadBuffer(long n, bool huge) : n_(n) {
    void* mem = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return;
    (void)madvise(mem, bytes(), huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    p_ = static_cast<float*>(mem);
    std::fill(p_, p_ + n_, 1.f);
  }
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  ~ReadBuffer() {
    if (p_) munmap(p_, bytes());
  }
  // Best GB/s of `reps` passes; 0 when the buffer could not be mapped.
  double gbs(int kind, int reps) {  // 0 AVX2 float adds, 1 AVX-512 float adds, 2 AVX2 integer adds
    if (!p_) return 0;
    double best = 0;
    for (int rep = 0; rep < reps; ++rep) {
      const auto t0 = Clock::now();
      kvscope::run_parts(kvscope::kernel_threads(), [&](int part, int parts) {
        long b, e;
        kvscope::part_range(n_ / 32, part, parts, &b, &e);
        const float* p = p_ + b * 32;
        sums_[part % 8] = kind == 1 ? sum_avx512(p, (e - b) * 32) : kind == 2 ? sum_int_avx2(p, (e - b) * 32) : sum_avx2(p, (e - b) * 32);
      });
      best = std::max(best, bytes() / secs(t0) / 1e9);
    }
    if (sums_[0] < 0) std::printf("(impossible)\n");
    return best;
  }

 private:
  size_t bytes() const { return static_cast<size_t>(n_) * sizeof(float); }
  long n_;
  float* p_ = nullptr;
  float sums_[8] = {};
};

double read_bandwidth_gbs(int kind, bool huge) { return ReadBuffer(long{1} << 28, huge).gbs(kind, 4); }

// MB of file pages this process maps with 2 MB entries (/proc/self/smaps FilePmdMapped).
double file_pmd_mapped_mb() {
  std::ifstream f("/proc/self/smaps");
  double kb = 0;
  for (std::string line; std::getline(f, line);)
    if (line.rfind("FilePmdMapped:", 0) == 0) kb += std::atof(line.c_str() + 14);
  return kb / 1e3;
}

// Greedy decode from position 0 for `steps` forwards, as run.c does (prompt fed token by token).
double decode_tok_s(const kvscope::Model& m, int steps) {
  auto cache = m.new_cache(steps + 1);
  int32_t tok = 1;
  const auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) {
    const std::vector<float> logits = m.forward(std::span<const int32_t>(&tok, 1), *cache);
    tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  return steps / secs(t0);
}

// Paired: the machine is shared and its read bandwidth moves within a run (22-70 GB/s within an
// hour here), so the bound main() prints (the run's highest figure) comes from its quietest moment
// while the mean decode spans all of them. Here each of 8 decode segments of `seg` steps sits
// between two read samples (AVX2 float and integer adds over 256 MB, the higher, same threads), and
// its ratio is to their mean: the same load on both sides of the ratio. Prints median, min, max.
void print_paired_decode(const kvscope::Model& m, int seg) {
  ReadBuffer probe(long{1} << 26, false);
  if (probe.gbs(0, 1) <= 0) return;  // the buffer could not be mapped
  auto sample = [&] { return std::max(probe.gbs(0, 2), probe.gbs(2, 2)); };
  constexpr int kPairs = 8;
  std::vector<double> ratio, rate;
  double before = sample();
  for (int i = 0; i < kPairs; ++i) {
    const double n = decode_tok_s(m, seg), after = sample();
    ratio.push_back(n * m.weight_bytes() / ((before + after) / 2 * 1e9));
    rate.push_back((before + after) / 2);
    before = after;
  }
  std::sort(ratio.begin(), ratio.end());
  std::printf("decode vs the read bandwidth measured around each segment (%d segments of %d steps): median %.2f, min %.2f, max %.2f of the bound; read samples %.1f-%.1f GB/s\n",
              kPairs, seg, (ratio[kPairs / 2 - 1] + ratio[kPairs / 2]) / 2, ratio.front(), ratio.back(),
              *std::min_element(rate.begin(), rate.end()), *std::max_element(rate.begin(), rate.end()));
}

double runc_tok_s(const std::string& bin, const std::string& model, const std::string& tok, int steps) {
  const std::string cmd = "OMP_NUM_THREADS=2 " + bin + " " + model + " -z " + tok + " -t 0 -n " + std::to_string(steps) +
                          " -i 'Once upon a time' 2>&1 >/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return 0;
  char line[512];
  double r = 0;
  while (std::fgets(line, sizeof line, p))
    if (const char* s = std::strstr(line, "achieved tok/s:")) r = std::atof(s + 15);
  pclose(p);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_forward MODEL_DIR [--prefill N] [--decode N] [--runc BIN --runc-model F --tokenizer F]\n");
    return 2;
  }
  const std::string dir = argv[1];
  int prefill = 2048, decode = 256, reps = 2;
  std::string runc, runc_model, tokenizer;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--prefill") prefill = std::atoi(v.c_str());
    else if (k == "--decode") decode = std::atoi(v.c_str());
    else if (k == "--reps") reps = std::max(1, std::atoi(v.c_str()));
    else if (k == "--runc") runc = v;
    else if (k == "--runc-model") runc_model = v;
    else if (k == "--tokenizer") tokenizer = v;
  }
  auto m = kvscope::Model::load(dir);
  const auto& c = m->config();
  std::printf("== bench_forward %s (%s, %d layers, hidden %d, %s weights %.1f MB; %d kernel threads) ==\n", dir.c_str(),
              std::string(kvscope::arch_name(c.arch)).c_str(), c.num_layers, c.hidden_size, m->storage_dtype().c_str(),
              m->weight_bytes() / 1e6, kvscope::kernel_threads());

  if (prefill > 0) {
    // sgemm and prefill alternate, best of each: on a busy machine both see the same load.
    const auto ids = bench::tokens(prefill);
    kvscope::ForwardOptions fo;
    fo.skip_logits = true;
    // Two prefills per rep: into a fresh cache (its buffers first touched: page faults, ~8% of the
    // 8L prefill), then into the same cache cleared (buffers touched, as sgemm's are when timed).
    double best = 1e30, best_fresh = 1e30, sg = 0;
    for (int rep = 0; rep < reps; ++rep) {
      sg = std::max(sg, sgemm_gflops(prefill, c.intermediate_size, c.hidden_size, 2));
      auto cache = m->new_cache(prefill);
      auto t0 = Clock::now();
      m->forward(ids, *cache, fo);
      best_fresh = std::min(best_fresh, secs(t0));
      cache->clear();
      t0 = Clock::now();
      m->forward(ids, *cache, fo);
      best = std::min(best, secs(t0));
    }
    const double gf = prefill_flops(c, prefill) / best / 1e9, gf_fresh = prefill_flops(c, prefill) / best_fresh / 1e9;
    std::printf("prefill %d tokens: %.3f s, %.0f tok/s, %.1f GFLOP/s = %.0f%% of sgemm [%d x %d x %d] %.1f GFLOP/s (target >= 70%%)\n",
                prefill, best, prefill / best, gf, 100 * gf / sg, prefill, c.intermediate_size, c.hidden_size, sg);
    std::printf("  (into a fresh KV cache, its first touch included: %.3f s, %.1f GFLOP/s = %.0f%% of sgemm)\n", best_fresh,
                gf_fresh, 100 * gf_fresh / sg);
  }
  if (decode > 0) {
    // The bound: the best read bandwidth (AVX2 and AVX-512 loops) measured before and after the
    // decode runs (the machine is shared: the highest figure is the bar).
    const bool have512 = __builtin_cpu_supports("avx512f");
    double bw2 = read_bandwidth_gbs(0, false), bw512 = have512 ? read_bandwidth_gbs(1, false) : 0,
           bwi = read_bandwidth_gbs(2, false), bwh = read_bandwidth_gbs(0, true);
    decode_tok_s(*m, 8);  // warm: weights paged in
    // A/B in this run, interleaved segments of decode/4 steps: the mat-vec before session 7 (up to
    // 64 pieces, 4-accumulator BF16 rows) and the current one; best segment and mean of each.
    const int seg = std::max(8, decode / 4);
    double old_best = 0, old_sum = 0, best = 0, sum = 0, avx2_best = 0, avx2_sum = 0;
    for (int rep = 0; rep < 4; ++rep) {
      kvscope::set_gemv_legacy(true);
      const double o = decode_tok_s(*m, seg);
      kvscope::set_gemv_legacy(false);
      kvscope::force_gemv_isa(kvscope::GemvIsa::Avx2);
      const double a2 = decode_tok_s(*m, seg);
      kvscope::force_gemv_isa(kvscope::GemvIsa::Auto);
      const double n = decode_tok_s(*m, seg);
      old_best = std::max(old_best, o);
      old_sum += o / 4;
      avx2_best = std::max(avx2_best, a2);
      avx2_sum += a2 / 4;
      best = std::max(best, n);
      sum += n / 4;
    }
    const double ours = sum;
    bw2 = std::max(bw2, read_bandwidth_gbs(0, false));
    if (have512) bw512 = std::max(bw512, read_bandwidth_gbs(1, false));
    bwi = std::max(bwi, read_bandwidth_gbs(2, false));
    bwh = std::max(bwh, read_bandwidth_gbs(0, true));
    const double bw = std::max({bw2, bw512, bwi, bwh});
    const double bound = bw * 1e9 / m->weight_bytes(), gb = m->weight_bytes() / 1e9;
    std::printf("read bandwidth (2 threads, sum over 1 GiB, best before/after): 4 KB pages: AVX2 float adds %.2f GB/s, AVX-512 float adds %.2f GB/s, AVX2 integer adds %.2f GB/s; 2 MB pages: AVX2 float adds %.2f GB/s; bound = the highest\n",
                bw2, bw512, bwi, bwh);
    std::printf("weights mapped in 2 MB pages: %.0f of %.0f MB (a file the page cache holds in 4 KB pages keeps them: evict it once, e.g. vmtouch -e, to get huge pages)\n",
                file_pmd_mapped_mb(), m->weight_bytes() / 1e6);
    std::printf("decode, session-6 mat-vec (64 pieces, 4-acc. BF16 rows): mean %.1f tok/s = %.1f GB/s (%.2f of the bound), best segment %.1f tok/s (%.2f)\n",
                old_sum, old_sum * gb, old_sum / bound, old_best, old_best / bound);
    std::printf("decode, the current mat-vec with its AVX2 loop forced: mean %.1f tok/s (%.2f of the bound), best segment %.1f tok/s; the %s loop is %.2fx faster (mean)\n",
                avx2_sum, avx2_sum / bound, avx2_best, kvscope::gemv_isa() == kvscope::GemvIsa::Avx512 ? "AVX-512" : "AVX2",
                sum / avx2_sum);
    std::printf("decode %d steps: mean %.1f tok/s = %.1f GB/s, best segment %.1f tok/s = %.1f GB/s; read bound %.1f tok/s (%.2f GB/s / %.1f MB per step) -> %.2f (mean) / %.2f (best) of the bound (target >= 0.8)\n",
                4 * seg, ours, ours * gb, best, best * gb, bound, bw, m->weight_bytes() / 1e6, ours / bound, best / bound);
    print_paired_decode(*m, seg);
    if (!runc.empty()) {
      const double rc = runc_tok_s(runc, runc_model, tokenizer, decode + 1);
      const double ours2 = decode_tok_s(*m, decode);
      std::printf("run.c OpenMP (2 threads) %.1f tok/s; kvscope %.1f / %.1f tok/s (before / after it) -> %.2fx run.c (mean; target >= 1.0)\n",
                  rc, ours, ours2, rc > 0 ? (ours + ours2) / 2 / rc : 0.0);
    }
  }
  return 0;
}
