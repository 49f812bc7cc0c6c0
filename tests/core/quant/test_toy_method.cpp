// [registry] A method added by one file: "toy-absmax" (per-token absmax, int8 codes stored one per
// byte, fp32 scale) registered only here, then parsed, run by quantize_dump and checked by the same
// loop as the built-in methods. docs/METHODS.md counts this file's method part.
#include <algorithm>
#include <cmath>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "core/quant/head_plan.h"
#include "core/quant/method_registry.h"
#include "core/quant/quantize_dump.h"
#include "core/quant/quantized_tensor.h"
#include "core/util/json_reader.h"
#include "tests/core/quant/method_checks.h"

using namespace kvscope;

namespace {

// ---- the method: everything a new method needs ----------------------------------------------
// Codes: rint(x / s) in [-qmax, qmax], s = max|x| / qmax per token (fp32); one byte per code.
SliceResult toy_quantize(const SliceInput& in, bool reference) {
  const int qmax = (1 << (in.plan->quant.bits - 1)) - 1;
  std::vector<int8_t> codes(static_cast<size_t>(in.tokens) * in.head_dim);  // what is stored
  std::vector<float> scales(in.tokens);
  for (int t = 0; t < in.tokens; ++t) {
    const float* x = in.x + static_cast<size_t>(t) * in.head_dim;
    float amax = 0;
    for (int c = 0; c < in.head_dim; ++c) amax = std::max(amax, std::fabs(x[c]));
    scales[t] = amax > 0 ? amax / qmax : 1.0f;
    for (int c = 0; c < in.head_dim; ++c) {
      const float v = reference ? static_cast<float>(std::nearbyint(double(x[c]) / scales[t])) : rint_small(x[c] / scales[t]);
      codes[static_cast<size_t>(t) * in.head_dim + c] = static_cast<int8_t>(std::clamp(v, float(-qmax), float(qmax)));
    }
  }
  for (size_t e = 0; e < codes.size(); ++e) in.out[e] = codes[e] * scales[e / in.head_dim];
  SliceResult r;
  r.stored_bytes = codes.size() + scales.size() * sizeof(float);
  r.bits = 8 * r.stored_bytes;
  return r;
}

const QuantMethod& toy_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "toy-absmax";
    m.description = "per-token absmax int-N, one byte per code (a registry example)";
    m.set_defaults = [](Policy& p) { p.k.bits = p.v.bits = 8; };
    m.validate = [](const Policy& p, JsonReader& r) {
      if (p.k.bits < 2 || p.v.bits < 2) r.err(p.k.bits < 2 ? "k.bits" : "v.bits", "toy-absmax needs at least 2 bits");
    };
    m.quantize_slice = [](const SliceInput& in) { return toy_quantize(in, false); };
    m.quantize_slice_reference = [](const SliceInput& in) { return toy_quantize(in, true); };
    m.replay_refusal = "toy-absmax has no streaming encoder";
    m.test_policy = [](int bits) {
      return bits >= 2 && bits <= 8 ? fmt::format(R"({{"method": "toy-absmax", "k": {{"bits": {0}}}, "v": {{"bits": {0}}}}})", bits)
                                    : std::string();
    };
    return m;
  }();
  return m;
}
// ---- end of the method ----------------------------------------------------------------------

struct Registered {  // registration for this test only (the built-in line is X(name) in method_registry.h)
  Registered() { register_method(toy_method()); }
  ~Registered() { unregister_method("toy-absmax"); }
};

}  // namespace

TEST_CASE("a method added in one file parses, quantizes a dump and passes the registry checks", "[registry]") {
  Registered reg;
  const KvDump d = testing::gaussian_dump();
  CHECK(testing::check_method(toy_method(), d) == 4);  // 2, 3, 4 and 8 bits
  const Policy p = parse_policy(nlohmann::json::parse(R"({"method": "toy-absmax", "k": {"bits": 4}})"), "p.json");
  CHECK(p.method == &toy_method());
  CHECK(p.v.bits == 8);  // its default
  CHECK_THROWS_WITH(parse_policy(nlohmann::json::parse(R"({"method": "toy-absmax", "v": {"bits": 1}})"), "p.json"),
                    "p.json: $.v.bits: toy-absmax needs at least 2 bits");
  const QuantizeReport r = quantize_dump(d, p);
  CHECK(r.method == "toy-absmax");
  // K: 4-bit codes in bytes + fp32 scale per token = 8 + 32/64 bits/element; V the same at 8 bits.
  CHECK(r.bits_per_element == Approx(8.5).epsilon(1e-12));
  CHECK(r.k_nmse < testing::nmse_bound(4));
  CHECK(method_list().find("toy-absmax") != std::string::npos);
}
