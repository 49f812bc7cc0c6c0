// Method kivi (ALGORITHMS.md §2): keys per channel, values per token, groups of 32, a residual
// window of the most recent tokens kept fp16; keys leave the window in whole blocks of `residual`
// tokens (§2.2), values one at a time.
#include <fmt/format.h>

#include "core/quant/method_registry.h"
#include "core/util/json_reader.h"

namespace kvscope {

const QuantMethod& kivi_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "kivi";
    m.description = "KIVI: keys per channel, values per token, group 32, fp16 residual window";
    m.presets = {"kivi-2", "kivi-4", "kivi-qaq-3"};
    m.set_defaults = [](Policy& p) {  // KIVI: keys per-channel, values per-token, G = 32, R = 128 (lab default, §2.3)
      p.k.axis = Axis::Channel;
      p.v.axis = Axis::Token;
      p.k.bits = p.v.bits = 2;
      p.k.group_size = p.v.group_size = 32;
      p.residual = 128;
    };
    m.validate = [](const Policy& p, JsonReader& r) {
      if (p.k.axis != Axis::Channel || p.v.axis != Axis::Token) r.err("k.axis", "kivi quantizes keys per channel and values per token");
      if (p.residual > 0 && p.k.group_size > 0 && p.residual % p.k.group_size != 0)
        r.err("residual", fmt::format("must be a multiple of k.group_size ({}) for kivi", p.k.group_size));
    };
    m.key_residual_blocks = true;
    m.attention_bits = true;
    m.group_outliers = true;
    m.quantize_slice = quantize_tensor_slice;
    m.quantize_slice_reference = quantize_tensor_slice_reference;
    m.test_policy = [](int bits) {
      if (bits > 8) return std::string();
      return fmt::format(R"({{"method": "kivi", "k": {{"bits": {0}}}, "v": {{"bits": {0}}}, "residual": 32}})", bits);
    };
    return m;
  }();
  return m;
}

}  // namespace kvscope
