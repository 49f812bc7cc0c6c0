// Policy JSON: parse_policy, then the canonical form must parse back to the same canonical form
// (the run store hashes it, so a policy that does not round-trip would split identical runs).
#include <nlohmann/json.hpp>

#include "core/policy/policy.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;  // not JSON: load_policy_file reports that before parse_policy
  try {
    kvscope::Policy p = kvscope::parse_policy(j, "policy.json");
    const std::string canon = kvscope::canonical_policy_json(p);
    kvscope::Policy again = kvscope::parse_policy(nlohmann::json::parse(canon), "canonical");
    if (kvscope::canonical_policy_json(again) != canon) {
      std::fprintf(stderr, "policy does not round-trip:\n%s\n%s\n", canon.c_str(),
                   kvscope::canonical_policy_json(again).c_str());
      __builtin_trap();
    }
  } catch (const kvscope::Error&) {
  }
  return 0;
}
