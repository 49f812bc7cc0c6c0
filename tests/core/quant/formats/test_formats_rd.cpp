// Rate-distortion table of the new formats on a KV dump (hidden: run by hand, not in CI).
//   KVSCOPE_RD_DUMP=demo.safetensors build/tests/test_core "[formats-rd]"
// Prints one Markdown row per format: bits per element (K, V, all; every stored bit), pooled K/V
// NMSE and the attention metrics exactly as `kvscope quantize` aggregates them (core/metrics), so
// the rows sit beside `kvscope quantize --json` output for uniform/KIVI on the same dump.
// Calibration-based formats calibrate on the dump itself (calibration mode "dump").
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"
#include "core/quant/formats/hadamard.h"
#include "core/quant/formats/kvquant.h"
#include "core/quant/formats/nvfp4.h"
#include "core/quant/formats/slice_codecs.h"
#include "core/tensor/rope.h"

using namespace kvscope;
using namespace kvscope::formats;

namespace {

// One (layer, kind) of the dump: in [heads, T, D], out the same; returns the bits stored.
using LayerCodec = std::function<uint64_t(const KvDump&, int layer, char kind, std::vector<float>& out)>;

struct Row {
  std::string name;
  LayerCodec k, v;
};

LayerCodec per_head(std::function<SliceBits(const float*, int T, int D, float*)> f) {
  return [f](const KvDump& d, int l, char kind, std::vector<float>& out) {
    uint64_t bits = 0;
    for (int h = 0; h < d.shape.kv_heads; ++h) {
      const float* x = kind == 'k' ? d.k(l, h) : d.v(l, h);
      bits += f(x, d.shape.tokens, d.shape.head_dim, out.data() + h * d.head_elems()).bits;
    }
    return bits;
  };
}

LayerCodec rotated(int seed, std::function<SliceBits(const float*, int T, int D, float*)> f) {
  return per_head([seed, f](const float* x, int T, int D, float* y) {
    const HadamardRotation r(D, uint64_t(seed));
    std::vector<float> xr(x, x + size_t(T) * D);
    r.rotate(xr.data(), size_t(T));
    const SliceBits b = f(xr.data(), T, D, y);
    r.unrotate(y, size_t(T));  // metrics in the original basis
    return b;
  });
}

LayerCodec fp16_codec() {
  return per_head([](const float* x, int T, int D, float* y) {
    for (size_t i = 0; i < size_t(T) * D; ++i) y[i] = x[i];
    return SliceBits{uint64_t(T) * D * 16, 0};
  });
}

LayerCodec kvquant_codec(KvQuantOptions o) {
  return [o](const KvDump& d, int l, char kind, std::vector<float>& out) {
    const int H = d.shape.kv_heads, T = d.shape.tokens, D = d.shape.head_dim;
    const bool keys = kind == 'k';
    const std::vector<float>& src = keys ? d.layers[l].k_pre_rope : d.layers[l].v;
    REQUIRE(!src.empty());
    const KvQuantCalibration cal = kvquant_calibrate(src.data(), H, T, D, keys, o);
    uint64_t bits = kvquant_static_bits(cal);
    for (int h = 0; h < H; ++h) {
      float* y = out.data() + h * d.head_elems();
      bits += kvquant_roundtrip(cal, h, src.data() + h * d.head_elems(), T, o, y).bits;
      if (keys) apply_rope(y, T, D, d.meta.rope_theta, 0, false, d.meta.rope_style == "interleaved");
    }
    return bits;
  };
}

// TurboQuant with `n_out` outlier channels (largest RMS of the head in the dump) at out_bits.
LayerCodec turbo_codec(int n_out_num, int n_out_den, int out_bits, int base_bits, bool qjl) {
  return per_head([=](const float* x, int T, int D, float* y) {
    const std::vector<int> oc = top_rms_channels(x, size_t(T), D, D * n_out_num / n_out_den);
    const TurboQuantSplit tq(D, oc, out_bits, base_bits, qjl, 0x7B0);
    return turboquant_slice(tq, x, T, y);
  });
}

LayerCodec qjl_codec(int m_per_d) {
  return per_head([=](const float* x, int T, int D, float* y) {
    const Qjl q(D, m_per_d * D, 0x91);
    std::vector<uint8_t> s(size_t(m_per_d) * D);
    for (int t = 0; t < T; ++t) q.decode(s.data(), q.encode(x + size_t(t) * D, s.data()), y + size_t(t) * D);
    return SliceBits{q.bits_per_vector() * uint64_t(T), 0};
  });
}

// vLLM-style FP8: one scale per layer x kind from the dump's amax (counted once per layer x kind).
LayerCodec fp8_codec(Fp8Format f) {
  return [f](const KvDump& d, int l, char kind, std::vector<float>& out) {
    const std::vector<float>& src = kind == 'k' ? d.layers[l].k : d.layers[l].v;
    const float scale = fp8_scale_from_amax(f, abs_max(src.data(), src.size()));
    const SliceBits b = fp8_slice(f, src.data(), d.shape.kv_heads * d.shape.tokens, d.shape.head_dim, scale, true, out.data());
    return b.bits;
  };
}

LayerCodec nvfp4_codec() {
  return [](const KvDump& d, int l, char kind, std::vector<float>& out) {
    const std::vector<float>& src = kind == 'k' ? d.layers[l].k : d.layers[l].v;
    const float g = nvfp4_global_scale(abs_max(src.data(), src.size()));
    return nvfp4_slice(src.data(), d.shape.kv_heads * d.shape.tokens, d.shape.head_dim, g, out.data()).bits;
  };
}

}  // namespace

TEST_CASE("formats: rate-distortion table on a dump", "[.][formats-rd]") {
  const char* path = std::getenv("KVSCOPE_RD_DUMP");
  REQUIRE(path);
  const KvDump d = load_dump(path);
  const int L = d.shape.layers, H = d.shape.kv_heads, T = d.shape.tokens, D = d.shape.head_dim, G = d.shape.group();
  auto g = [](GgmlType t) { return [t](const float* x, int T_, int D_, float* y) { return ggml_slice(t, x, T_, D_, y); }; };
  KvQuantOptions kq4, kq3, kq2;
  kq4.bits = 4, kq3.bits = 3, kq2.bits = 2, kq2.outlier_fraction = 0.01;
  std::vector<Row> rows = {
      {"q8_0", per_head(g(GgmlType::Q8_0)), per_head(g(GgmlType::Q8_0))},
      {"q5_1", per_head(g(GgmlType::Q5_1)), per_head(g(GgmlType::Q5_1))},
      {"q5_0", per_head(g(GgmlType::Q5_0)), per_head(g(GgmlType::Q5_0))},
      {"q4_1", per_head(g(GgmlType::Q4_1)), per_head(g(GgmlType::Q4_1))},
      {"q4_0", per_head(g(GgmlType::Q4_0)), per_head(g(GgmlType::Q4_0))},
      {"iq4_nl", per_head(g(GgmlType::IQ4_NL)), per_head(g(GgmlType::IQ4_NL))},
      {"q4_0-rot", rotated(1, g(GgmlType::Q4_0)), rotated(2, g(GgmlType::Q4_0))},
      {"fp8-e4m3", fp8_codec(Fp8Format::E4M3), fp8_codec(Fp8Format::E4M3)},
      {"fp8-e5m2", fp8_codec(Fp8Format::E5M2), fp8_codec(Fp8Format::E5M2)},
      {"nvfp4", nvfp4_codec(), nvfp4_codec()},
      {"kvquant-4", kvquant_codec(kq4), kvquant_codec(kq4)},
      {"kvquant-3", kvquant_codec(kq3), kvquant_codec(kq3)},
      {"kvquant-2-1%", kvquant_codec(kq2), kvquant_codec(kq2)},
      {"turboquant-2.5", turbo_codec(1, 4, 4, 2, false), turbo_codec(1, 4, 4, 2, false)},
      {"turboquant-3.5", turbo_codec(1, 4, 5, 3, false), turbo_codec(1, 4, 5, 3, false)},
      {"turboquant-prod-3.5 (K)", turbo_codec(1, 4, 5, 3, true), turbo_codec(1, 4, 5, 3, false)},
      {"qjl m=2d (K), V fp16", qjl_codec(2), fp16_codec()},
  };
  const std::vector<int> positions = sample_positions(T, 256);
  std::printf("| format | K bits | V bits | bits/elem | K NMSE | V NMSE | attn cos | attn KL |\n|---|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    ErrorSums ks, vs;
    uint64_t kb = 0, vb = 0;
    AttentionSums all;
    std::vector<float> kq(size_t(H) * T * D), vq(kq.size());
    for (int l = 0; l < L; ++l) {
      kb += row.k(d, l, 'k', kq);
      vb += row.v(d, l, 'v', vq);
      ks.add(d.layers[l].k.data(), kq.data(), kq.size());
      vs.add(d.layers[l].v.data(), vq.data(), vq.size());
      for (int h = 0; h < H; ++h) {
        std::vector<const float*> q;
        for (int j = 0; j < G; ++j) q.push_back(d.q(l, h * G + j));
        const size_t off = size_t(h) * T * D;
        all.merge(attention_error(q, d.k(l, h), d.v(l, h), kq.data() + off, vq.data() + off, T, D, positions));
      }
    }
    const double n = double(L) * H * T * D;
    const AttentionMetrics a = all.metrics(-1, -1);
    std::printf("| %s | %.3f | %.3f | %.3f | %.3e | %.3e | %.4f | %.3e |\n", row.name.c_str(), kb / n, vb / n,
                (kb + vb) / (2 * n), ks.nmse(), vs.nmse(), a.out_cos_mean, a.kl_mean);
    std::fflush(stdout);
  }
}
