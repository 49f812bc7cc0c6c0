#pragma once
// Hand-built QuantizeReports for the storage tests (no quantizer involved).
#include <string>

#include "core/quant/report.h"

namespace kvscope::test {

// `layers` x `kv_heads` x {k, v} head rows and `layers` x `kv_heads` attention rows, with values
// derived from `seed` so two reports differ in every number.
inline QuantizeReport make_report(int layers, int kv_heads, int seed, const std::string& method = "kivi",
                                  const std::string& model = "tiny-llama") {
  QuantizeReport r;
  r.method = method;
  r.policy_name = method + "-2";
  r.policy_json = R"({"k":{"bits":2},"method":")" + method + R"(","name":")" + method + R"(-2"})";
  r.dump_path = "/data/dumps/" + model + ".safetensors";
  r.shape = {layers, kv_heads, kv_heads * 2, 64, 128};
  r.model_id = model;
  r.bits_per_element = 2.25 + seed * 0.001;
  r.k_bits_per_element = 2.5 + seed * 0.001;
  r.v_bits_per_element = 2.0 + seed * 0.001;
  r.bytes_per_token = 1234.5 + seed;
  r.static_bytes = 64;
  r.fp16_bytes_per_token = 8192;
  r.k_nmse = 0.0123 + seed * 1e-5;
  r.v_nmse = 0.0456 + seed * 1e-5;
  r.k_cos = 0.9938 - seed * 1e-6;
  r.v_cos = 0.9771 - seed * 1e-6;
  r.attn_cos_mean = 0.9991 - seed * 1e-6;
  r.attn_cos_min = 0.91;
  r.attn_nmse = 0.0017;
  r.attn_kl_mean = 0.0031;
  r.attn_queries = 64;
  r.wall_seconds = 1.5 + seed;
  for (int l = 0; l < layers; ++l) {
    for (int h = 0; h < kv_heads; ++h) {
      for (char kind : {'k', 'v'}) {
        HeadMetrics m;
        m.layer = l;
        m.head = h;
        m.kind = kind;
        m.nmse = 0.001 * (1 + l) + 0.0001 * h + (kind == 'v' ? 0.01 : 0) + seed * 1e-7;
        m.cos = 1 - m.nmse / 2;
        m.mse = m.nmse * 0.5;
        m.max_abs = 0.25 + l + h * 0.125;
        m.bits = 128 * 64 * 2 + 1024 + uint64_t(seed);
        m.elements = 128 * 64;
        m.full_precision = (l == 0 && h == 0 && kind == 'k');
        r.per_head.push_back(m);
      }
      AttentionMetrics a;
      a.layer = l;
      a.head = h;
      a.out_cos_mean = 0.999 - 0.001 * l;
      a.out_cos_min = 0.95 - 0.01 * h;
      a.out_nmse = 0.002 + 0.0001 * l;
      a.kl_mean = 0.003 + 0.0002 * h;
      a.prob_cos_mean = 0.998;
      a.logit_rmse = 0.05 + seed * 1e-4;
      a.logit_max_abs = 0.5;
      r.attention.push_back(a);
    }
  }
  return r;
}

}  // namespace kvscope::test
