// [registry] One loop over every registered method (ggml's test-quantize-fns habit): fast path vs
// its reference implementation, a named NMSE bound per bit width, bit accounting vs stored bytes,
// and the presets each method ships.
#include <set>

#include <catch2/catch.hpp>

#include "core/policy/policy.h"
#include "core/quant/method_registry.h"
#include "core/util/error.h"
#include "tests/core/quant/method_checks.h"

using namespace kvscope;
using namespace kvscope::testing;

TEST_CASE("every registered method matches its reference, its error bound and its stored bytes", "[registry]") {
  const KvDump d = gaussian_dump();
  REQUIRE(all_methods().size() >= 6);
  for (const QuantMethod* m : all_methods()) {
    INFO("method " << m->name);
    CHECK(!m->description.empty());
    CHECK((m->quantize_slice || m->quantize_layer));
    CHECK(check_method(*m, d) >= 1);  // at least one bit width exercised
  }
}

TEST_CASE("the named bounds follow Δ²/12 and would catch truncation", "[registry]") {
  // 4 bits: Δ_max = 8σ / 14, bound = Δ²/12 = 0.0272 (hand-worked).
  CHECK(nmse_bound(4) == Approx(std::pow(8.0 / 14.0, 2) / 12).epsilon(1e-12));
  CHECK(nmse_bound(16) == std::ldexp(1.0, -22));
  for (int b = 2; b < 8; ++b) CHECK(nmse_bound(b + 1) < nmse_bound(b) / 3.5);  // ~4x per bit
}

TEST_CASE("every preset belongs to the method that lists it", "[registry]") {
  std::set<std::string> listed;
  for (const QuantMethod* m : all_methods())
    for (const std::string& name : m->presets) {
      INFO("preset " << name << " of " << m->name);
      CHECK(listed.insert(name).second);
      CHECK(load_preset(name).method == m);
    }
  for (const PresetInfo& p : list_presets()) {
    INFO("preset file " << p.name);
    CHECK(listed.count(p.name) == 1);
  }
}

TEST_CASE("policy errors list the registered methods and refuse another method's options", "[registry]") {
  auto err = [](const char* text) -> std::string {
    try {
      parse_policy(nlohmann::json::parse(text), "p.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  CHECK(method_list() == "fp16, uniform, kivi, kvmix, skvq, watersic, ggml, fp8, nvfp4, turboquant, qjl or kvquant");
  CHECK(err(R"({"method": "kivi", "skvq": {}})") == "p.json: $.skvq: only applies to method 'skvq'");
  for (const QuantMethod* m : all_methods()) {
    CHECK(find_method(m->name) == m);
    CHECK(parse_policy(nlohmann::json{{"method", m->name}}, "p.json").method == m);
  }
  CHECK(find_method("zip") == nullptr);
}
