#pragma once
// Hand-built QuantizeReports for the storage tests (no quantizer involved).
#include <cmath>
#include <string>

#include <catch2/catch.hpp>

#include <SQLiteCpp/SQLiteCpp.h>

#include "core/quant/report.h"

namespace kvscope::test {

// The single integer a query returns (e.g. "SELECT count(*) FROM runs"), read with its own connection.
inline int64_t query_count(const std::string& db_path, const std::string& sql) {
  SQLite::Database db(db_path, SQLite::OPEN_READONLY);
  SQLite::Statement q(db, sql);
  q.executeStep();
  return q.getColumn(0).getInt64();
}

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

// Same bits, or both NaN.
inline bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

inline void require_same_report(const QuantizeReport& a, const QuantizeReport& b) {
  CHECK(a.method == b.method);
  CHECK(a.policy_name == b.policy_name);
  CHECK(a.policy_json == b.policy_json);
  CHECK(a.dump_path == b.dump_path);
  CHECK(a.model_id == b.model_id);
  CHECK(a.shape.layers == b.shape.layers);
  CHECK(a.shape.kv_heads == b.shape.kv_heads);
  CHECK(a.shape.q_heads == b.shape.q_heads);
  CHECK(a.shape.head_dim == b.shape.head_dim);
  CHECK(a.shape.tokens == b.shape.tokens);
  for (auto f : {&QuantizeReport::bits_per_element, &QuantizeReport::k_bits_per_element,
                 &QuantizeReport::v_bits_per_element, &QuantizeReport::bytes_per_token, &QuantizeReport::static_bytes,
                 &QuantizeReport::fp16_bytes_per_token, &QuantizeReport::k_nmse, &QuantizeReport::v_nmse,
                 &QuantizeReport::k_cos, &QuantizeReport::v_cos, &QuantizeReport::attn_cos_mean,
                 &QuantizeReport::attn_cos_min, &QuantizeReport::attn_nmse, &QuantizeReport::attn_kl_mean,
                 &QuantizeReport::wall_seconds}) {
    CHECK(same(a.*f, b.*f));
  }
  CHECK(a.attn_queries == b.attn_queries);
  REQUIRE(a.per_head.size() == b.per_head.size());
  for (size_t i = 0; i < a.per_head.size(); ++i) {
    const HeadMetrics &x = a.per_head[i], &y = b.per_head[i];
    CHECK(x.layer == y.layer);
    CHECK(x.head == y.head);
    CHECK(x.kind == y.kind);
    CHECK(same(x.nmse, y.nmse));
    CHECK(same(x.cos, y.cos));
    CHECK(same(x.mse, y.mse));
    CHECK(same(x.max_abs, y.max_abs));
    CHECK(x.bits == y.bits);
    CHECK(x.elements == y.elements);
    CHECK(x.full_precision == y.full_precision);
  }
  REQUIRE(a.attention.size() == b.attention.size());
  for (size_t i = 0; i < a.attention.size(); ++i) {
    const AttentionMetrics &x = a.attention[i], &y = b.attention[i];
    CHECK(x.layer == y.layer);
    CHECK(x.head == y.head);
    for (auto f : {&AttentionMetrics::out_cos_mean, &AttentionMetrics::out_cos_min, &AttentionMetrics::out_nmse,
                   &AttentionMetrics::kl_mean, &AttentionMetrics::prob_cos_mean, &AttentionMetrics::logit_rmse,
                   &AttentionMetrics::logit_max_abs}) {
      CHECK(same(x.*f, y.*f));
    }
  }
}

}  // namespace kvscope::test
