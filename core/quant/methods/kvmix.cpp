// Method kvmix (seed 003, ALGORITHMS.md §6): symmetric int-N with an inverse scale
// (q = rint(x * qmax / amax), x^ = q / inv) and fp32 scales; strategies 1-3 are axis and
// outlier-head choices of the policy.
#include <fmt/format.h>

#include "core/quant/method_registry.h"

namespace kvscope {

const QuantMethod& kvmix_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "kvmix";
    m.description = "kvmix: symmetric int-N with inverse scale, fp32 scales, optional fp16 outlier K heads";
    m.presets = {"kvmix-1", "kvmix-2", "kvmix-3", "kvmix-3-online"};
    m.set_defaults = [](Policy& p) {  // symmetric int8 with inverse scale, fp32 scales (seed 003)
      for (TensorQuant* q : {&p.k, &p.v}) {
        q->bits = 8;
        q->symmetric = true;
        q->inverse_scale = true;
        q->scale_dtype = DType::F32;
      }
    };
    m.attention_bits = true;
    m.group_outliers = true;
    m.quantize_slice = quantize_tensor_slice;
    m.quantize_slice_reference = quantize_tensor_slice_reference;
    m.test_policy = [](int bits) {
      if (bits < 2 || bits > 8) return std::string();  // symmetric needs 2 bits
      return fmt::format(R"({{"method": "kvmix", "k": {{"bits": {0}}}, "v": {{"bits": {0}, "group_size": 32}}}})", bits);
    };
    return m;
  }();
  return m;
}

}  // namespace kvscope
