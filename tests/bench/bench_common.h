#pragma once
// Shared by the model-level benchmarks: the largest shared model and a deterministic token stream.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/model/model.h"

namespace bench {

// tinystories-llama-8L from $KVSCOPE_TEST_MODELS (else ../shared/models), loaded once.
inline kvscope::Model& model() {
  static std::unique_ptr<kvscope::Model> m = [] {
    const char* env = std::getenv("KVSCOPE_TEST_MODELS");
    const std::string dir = std::string(env && *env ? env : "../shared/models") + "/tinystories-llama-8L";
    return kvscope::Model::load(dir);
  }();
  return *m;
}

// BOS then n-1 pseudo-random ids (an LCG), the same every run.
inline std::vector<int32_t> tokens(int n) {
  std::vector<int32_t> ids(n);
  uint32_t x = 12345;
  ids[0] = 1;
  for (int i = 1; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    ids[i] = 3 + static_cast<int32_t>((x >> 8) % 31000);
  }
  return ids;
}

}  // namespace bench
