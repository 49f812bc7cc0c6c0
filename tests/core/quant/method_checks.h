#pragma once
// The registry test's checks of one method (tests/core/quant/test_method_registry.cpp), shared with
// the toy method's test: fast path vs reference, a named NMSE bound per bit width on Gaussian data,
// and the bit accounting against the bytes the method stores.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/metrics/tensor_error.h"
#include "core/policy/policy.h"
#include "core/quant/head_plan.h"
#include "core/quant/method_registry.h"

namespace kvscope::testing {

// Test data: every K, V and Q value N(0, σ = 1), clamped to ±kClampSigma so that the widest range a
// quantization group can see is known exactly (8σ); with 256 x 64 values per head the clamp touches
// about one value in 16,000.
inline constexpr double kClampSigma = 4.0;

// Named NMSE bound per bit width, from the uniform-noise model: rounding to a grid of step Δ adds an
// error uniform in [-Δ/2, Δ/2], of mean square Δ²/12. The widest step any method's b-bit grid can have
// on this data is the full range 2·kClampSigma split into 2^b - 2 steps (a symmetric b-bit grid has
// 2^b - 1 levels over [-amax, amax]; asymmetric grids have one step more, entropy-coded ones are finer
// at the same rate). So NMSE = MSE / σ² <= Δ_max(b)² / 12, with no extra margin: a correct quantizer
// sits well under it (groups of 32-64 Gaussians span ~5σ, not 8σ: ~(5/8)² of the bound), while
// truncating instead of rounding (error in [0, Δ), mean square Δ²/3, 4x) or a doubled scale goes
// above it. 16 bits means fp16 storage: relative error <= 2^-11 per value, NMSE <= 2^-22.
inline double nmse_bound(int bits) {
  if (bits >= 16) return std::ldexp(1.0, -22);
  const double step = 2 * kClampSigma / (std::ldexp(1.0, bits) - 2);
  return step * step / 12;
}
inline constexpr int kTestBits[] = {2, 3, 4, 8, 16};

// A stored buffer rounds its bit count up to whole bytes: at most 7 padding bits per buffer, and a
// slice stores at most kBuffersPerSlice bit-packed buffers (codes, integer zero points).
inline constexpr int kBuffersPerSlice = 2;

inline KvDump gaussian_dump(int layers = 1, int kv_heads = 2, int group = 2, int tokens = 256, int head_dim = 64) {
  KvDump d;
  d.shape = {layers, kv_heads, kv_heads * group, head_dim, tokens};
  std::mt19937_64 rng(14);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& t, int heads) {
    t.resize(static_cast<size_t>(heads) * tokens * head_dim);
    for (float& x : t) x = std::clamp(n01(rng), -static_cast<float>(kClampSigma), static_cast<float>(kClampSigma));
  };
  d.layers.resize(layers);
  for (auto& l : d.layers) {
    fill(l.k, kv_heads);
    fill(l.v, kv_heads);
    fill(l.q, kv_heads * group);
  }
  return d;
}

struct MethodRun {
  ErrorSums err;                       // over every slice
  std::vector<SliceResult> slices;     // layer-major, head, k before v
  std::vector<std::vector<float>> out; // per slice [tokens, head_dim]
};

// Runs the method's fast path or its reference on every (layer, head, kind) of the dump.
inline MethodRun run_method(const QuantMethod& m, const KvDump& d, const Policy& p, bool reference) {
  const auto& s = d.shape;
  const size_t n = d.head_elems();
  MethodRun r;
  r.slices.resize(static_cast<size_t>(s.layers) * s.kv_heads * 2);
  r.out.assign(r.slices.size(), std::vector<float>(n));
  if (m.quantize_layer) {
    const auto& fn = reference ? m.quantize_layer_reference : m.quantize_layer;
    REQUIRE(fn);
    std::vector<float> out(static_cast<size_t>(s.kv_heads) * n);
    for (int l = 0; l < s.layers; ++l)
      for (char kind : {'k', 'v'}) {
        std::vector<SliceResult> per = fn(d, p, l, kind, out.data());
        REQUIRE(per.size() == static_cast<size_t>(s.kv_heads));
        for (int h = 0; h < s.kv_heads; ++h) {
          const size_t i = (static_cast<size_t>(l) * s.kv_heads + h) * 2 + (kind == 'v');
          r.slices[i] = per[h];
          std::copy_n(out.data() + h * n, n, r.out[i].begin());
        }
      }
  } else {
    const auto& fn = reference ? m.quantize_slice_reference : m.quantize_slice;
    REQUIRE(fn);
    const std::vector<HeadPlan> plans = plan_heads(d, p);
    for (size_t i = 0; i < plans.size(); ++i) {
      SliceInput in;
      in.dump = &d;
      in.policy = &p;
      in.plan = &plans[i];
      in.x = plans[i].kind == 'k' ? d.k(plans[i].layer, plans[i].head) : d.v(plans[i].layer, plans[i].head);
      in.out = r.out[i].data();
      in.tokens = s.tokens;
      in.head_dim = s.head_dim;
      r.slices[i] = fn(in);
    }
  }
  for (size_t i = 0; i < r.slices.size(); ++i) {
    const int l = static_cast<int>(i / (2 * s.kv_heads)), h = static_cast<int>(i / 2 % s.kv_heads);
    r.err.add(i % 2 == 0 ? d.k(l, h) : d.v(l, h), r.out[i].data(), n);
  }
  return r;
}

// Every check of one method at every bit width it has a test policy for; returns the widths run.
inline int check_method(const QuantMethod& m, const KvDump& d) {
  REQUIRE(m.test_policy);
  int widths = 0;
  for (int bits : kTestBits) {
    const std::string pj = m.test_policy(bits);
    if (pj.empty()) continue;
    ++widths;
    INFO("method " << m.name << " at " << bits << " bits: " << pj);
    const Policy p = parse_policy(nlohmann::json::parse(pj), "test policy");
    REQUIRE(p.method == &m);
    const MethodRun fast = run_method(m, d, p, false), ref = run_method(m, d, p, true);

    // Fast path vs reference: the same reconstruction (within the record's tolerance) and bits.
    const double tol = m.reference_tolerance * kClampSigma;
    for (size_t i = 0; i < fast.slices.size(); ++i) {
      INFO("slice " << i);
      CHECK(fast.slices[i].bits == ref.slices[i].bits);
      CHECK(fast.slices[i].static_bits == ref.slices[i].static_bits);
      CHECK(fast.slices[i].stored_bytes == ref.slices[i].stored_bytes);
      double worst = 0;
      for (size_t e = 0; e < fast.out[i].size(); ++e) worst = std::max(worst, double(std::fabs(fast.out[i][e] - ref.out[i][e])));
      CHECK(worst <= tol);
    }

    // The named error bound for this width.
    CHECK(fast.err.nmse() <= nmse_bound(bits));

    // Bit accounting vs the bytes stored, per unit of storage (a slice, or a layer's kind for methods
    // whose groups span heads: their bytes are reported on the layer's first head).
    const int H = d.shape.kv_heads;
    const size_t unit = m.quantize_layer ? static_cast<size_t>(H) : 1;
    for (size_t u0 = 0; u0 < fast.slices.size(); u0 += (m.quantize_layer ? 2 * unit : 1)) {
      for (int kind = 0; kind < (m.quantize_layer ? 2 : 1); ++kind) {
        uint64_t bits = 0, fixed = 0, bytes = 0;
        for (size_t j = 0; j < unit; ++j) {
          const SliceResult& sr = fast.slices[u0 + j * (m.quantize_layer ? 2 : 1) + kind];
          bits += sr.bits;
          fixed += sr.fixed_width_bits;
          bytes += sr.stored_bytes;
        }
        INFO("storage unit at slice " << u0 << " kind " << kind);
        // Entropy-coded methods store their codes at fixed width; the entropy rate is what they report.
        const uint64_t stored_bits = m.entropy_coded ? fixed : bits;
        if (m.entropy_coded) CHECK(bits <= fixed);
        CHECK(stored_bits <= 8 * bytes);
        CHECK(8 * bytes - stored_bits < 8ull * kBuffersPerSlice * unit);
      }
    }
  }
  return widths;
}

}  // namespace kvscope::testing
