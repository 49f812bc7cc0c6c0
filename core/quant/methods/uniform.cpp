// Method uniform: integer round-to-nearest quantization of each K/V head in groups along a token's
// channels, a channel's tokens or the whole head (ALGORITHMS.md §1), symmetric or asymmetric, with
// clipping; what KVSmooth, QAQ's attention-guided bits and per-group outliers build on.
#include <fmt/format.h>

#include "core/quant/method_registry.h"

namespace kvscope {

const QuantMethod& uniform_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "uniform";
    m.description = "round-to-nearest int-N per group (token, channel or head axis), symmetric or asymmetric";
    m.presets = {"uniform-2", "uniform-4", "uniform-8", "kvsmooth-4", "kvsmooth-4-online"};
    m.attention_bits = true;
    m.group_outliers = true;
    m.quantize_slice = quantize_tensor_slice;
    m.quantize_slice_reference = quantize_tensor_slice_reference;
    m.test_policy = [](int bits) {
      if (bits > 8) return std::string();
      return fmt::format(R"({{"method": "uniform", "k": {{"bits": {0}, "group_size": 32}}, "v": {{"bits": {0}, "axis": "channel", "group_size": 64}}, "sink_tokens": 4}})",
                         bits);
    };
    return m;
  }();
  return m;
}

}  // namespace kvscope
