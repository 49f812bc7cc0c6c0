// Per-head fp16 toggles and the instant size estimate, against hand-worked numbers and against
// the exact bit count quantize_dump reports.
#include <catch2/catch.hpp>

#include "app/gui/policy_tuning.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"

using namespace kvscope;
using namespace kvscope::gui;

TEST_CASE("bits per element of one head matrix, by hand") {
  TensorQuant q;
  q.bits = 2;
  q.axis = Axis::Token;
  q.group_size = 32;
  CHECK(tensor_bits_per_element(q, 1024, 64) == Approx(2 + 32.0 / 32));  // f16 scale + f16 min per 32
  q.symmetric = true;
  CHECK(tensor_bits_per_element(q, 1024, 64) == Approx(2 + 16.0 / 32));
  q.symmetric = false;
  q.group_size = 0;  // whole axis: one group per token of 64 channels
  CHECK(tensor_bits_per_element(q, 1024, 64) == Approx(2 + 32.0 / 64));
  q.axis = Axis::Channel;  // one group per channel over 1024 tokens
  CHECK(tensor_bits_per_element(q, 1024, 64) == Approx(2 + 32.0 / 1024));
  q.integer_zero_point = true;
  CHECK(tensor_bits_per_element(q, 1024, 64) == Approx(2 + 18.0 / 1024));
  q.full_precision = true;
  CHECK(tensor_bits_per_element(q, 1024, 64) == 16);
}

TEST_CASE("fp16 toggles add and remove one single-head override") {
  Policy p = load_preset("kivi-2");
  CHECK(!head_kept_fp16(p, 8, 0, 'k'));
  toggle_head_fp16(p, 8, 0, 'k');
  CHECK(head_kept_fp16(p, 8, 0, 'k'));
  CHECK(!head_kept_fp16(p, 8, 0, 'v'));
  toggle_head_fp16(p, 1, 1, 'v');
  CHECK(fp16_heads(p, 'k') == std::vector<std::pair<int, int>>{{8, 0}});
  CHECK(fp16_heads(p, 'v') == std::vector<std::pair<int, int>>{{1, 1}});
  toggle_head_fp16(p, 8, 0, 'k');
  CHECK(!head_kept_fp16(p, 8, 0, 'k'));
  CHECK(p.overrides.size() == 1);
  CHECK(p.k.bits == 2);  // the rest of the policy is untouched
}

TEST_CASE("the instant estimate matches the exact size quantize_dump measures") {
  SynthOptions so;
  so.layers = 3;
  so.tokens = 300;  // not a multiple of KIVI's residual: exercises the key block rule
  so.planted = {{1, 1, 80.0f}};
  KvDump dump = make_synthetic_dump(so);
  QuantizeOptions qo;
  qo.attention = false;
  for (const char* name : {"fp16", "uniform-2", "uniform-4", "kivi-2", "kivi-4"}) {
    Policy p = load_preset(name);
    if (std::string(name) == "kivi-2") toggle_head_fp16(p, 2, 0, 'k');
    QuantizeReport rep = quantize_dump(dump, p, qo);
    CostEstimate e = estimate_cost(p, dump);
    INFO(name);
    CHECK(e.bits_per_element == Approx(rep.bits_per_element).epsilon(0.01));
    CHECK(e.bytes_per_token == Approx(rep.bytes_per_token).epsilon(0.01));
  }
}
