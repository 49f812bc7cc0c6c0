// Method fp16: the unquantized cache (every K/V value rounded to fp16), the baseline every run is
// compared with.
#include "core/quant/method_registry.h"

namespace kvscope {

const QuantMethod& fp16_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "fp16";
    m.description = "no quantization: K and V stored as fp16 (the reference cache)";
    m.presets = {"fp16"};
    m.set_defaults = [](Policy& p) { p.k.full_precision = p.v.full_precision = true; };
    m.keeps_fp16 = true;
    m.quantize_slice = quantize_tensor_slice;
    m.quantize_slice_reference = quantize_tensor_slice_reference;
    m.test_policy = [](int bits) { return bits == 16 ? std::string(R"({"method": "fp16"})") : std::string(); };
    return m;
  }();
  return m;
}

}  // namespace kvscope
