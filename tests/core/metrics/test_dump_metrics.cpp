// Quantize and measure apart: core/metrics measures any dequantized cache (closed forms here), and
// quantize_dump is exactly quantize_slices followed by measure_dump.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/metrics/dump_metrics.h"
#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"
#include "tests/core/quant/method_checks.h"

using namespace kvscope;

namespace {

constexpr double kSumsRel = 1e-6;  // float partial sums carried in double (tensor_error.cpp)

DequantizedKV scaled(const KvDump& d, float factor) {
  DequantizedKV dq;
  for (const auto& l : d.layers) {
    dq.k.push_back(l.k);
    dq.v.push_back(l.v);
    for (auto* t : {&dq.k.back(), &dq.v.back()})
      for (float& x : *t) x *= factor;
  }
  return dq;
}

}  // namespace

TEST_CASE("measure_dump: a cache scaled by 1 + e has NMSE e^2 and cosine 1; an exact one no attention error", "[metrics]") {
  const KvDump d = testing::gaussian_dump(2, 2, 2, 64, 32);
  const float e = 0.125f;  // exact in float: (1 + e) x has no rounding error for these x
  MeasureOptions o;
  o.attn_queries = 0;
  const DumpMetrics m = measure_dump(d, scaled(d, 1 + e), o);
  REQUIRE(m.per_head.size() == 8u);
  for (const HeadMetrics& h : m.per_head) {
    CHECK(h.nmse == Approx(e * e).epsilon(kSumsRel));
    CHECK(h.cos == Approx(1).epsilon(kSumsRel));
    CHECK(h.elements == 64u * 32u);
  }
  CHECK(m.k.nmse() == Approx(e * e).epsilon(kSumsRel));
  const DumpMetrics exact = measure_dump(d, scaled(d, 1), o);
  CHECK(exact.attn_queries == 64);
  CHECK(exact.attention.size() == 4u);
  CHECK(exact.attention_all.out_nmse == 0);
  CHECK(exact.attention_all.kl_mean == Approx(0).margin(1e-12));
  CHECK(exact.k.nmse() == 0);
}

TEST_CASE("quantize_dump is quantize_slices then measure_dump", "[metrics]") {
  const KvDump d = testing::gaussian_dump(2, 2, 2, 96, 32);
  const Policy p = parse_policy(nlohmann::json::parse(R"({"method": "kivi", "residual": 32})"), "p.json");
  QuantizeOptions qo;
  qo.attn_queries = 16;
  DequantizedKV dq;
  const QuantizeReport r = quantize_dump(d, p, qo, &dq);
  const QuantizedDump q = quantize_slices(d, p, qo);
  MeasureOptions mo;
  mo.attn_queries = 16;
  const DumpMetrics m = measure_dump(d, q.dequantized, mo);
  REQUIRE(r.per_head.size() == q.slices.size());
  CHECK(dq.k == q.dequantized.k);
  CHECK(dq.v == q.dequantized.v);
  for (size_t i = 0; i < q.slices.size(); ++i) {
    CHECK(r.per_head[i].bits == q.slices[i].bits);
    CHECK(r.per_head[i].nmse == m.per_head[i].nmse);
  }
  CHECK(r.k_nmse == m.k.nmse());
  CHECK(r.attn_cos_mean == m.attention_all.out_cos_mean);
  CHECK(r.attn_queries == 16);
}
