#include "core/quant/method_registry.h"

#include <algorithm>

#include "core/quant/head_plan.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

std::vector<const QuantMethod*>& registry() {
  static std::vector<const QuantMethod*> methods = [] {
    std::vector<const QuantMethod*> v;
#define KVSCOPE_LIST_METHOD(name) v.push_back(&name##_method());
    KVSCOPE_METHODS(KVSCOPE_LIST_METHOD)
#undef KVSCOPE_LIST_METHOD
    return v;
  }();
  return methods;
}

// Stored size of a QuantizedTensor's buffers: packed codes, one scale (and float zero point) per
// group in its dtype (integer zero points at `bits` each, packed), fp16 rows.
uint64_t stored_bytes_of(const QuantizedTensor& t) {
  const uint64_t scale_bytes = t.spec.scale_dtype == DType::F32 ? 4 : 2;
  uint64_t zero_bytes = 0;
  if (!t.zeros.empty())
    zero_bytes = t.spec.integer_zero_point ? packed_bytes(t.zeros.size(), t.spec.bits) : t.zeros.size() * scale_bytes;
  return t.codes.size() + t.scales.size() * scale_bytes + zero_bytes + t.fp16_rows.size() * 2;
}

SliceResult tensor_slice_result(const QuantizedTensor& t, bool full_precision) {
  SliceResult r;
  r.bits = t.total_bits();
  r.static_bits = t.static_bits();
  r.stored_bytes = stored_bytes_of(t);
  r.full_precision = full_precision;
  return r;
}

}  // namespace

const QuantMethod& default_method() { return fp16_method(); }

std::string method_name(const QuantMethod* m) { return m ? m->name : "?"; }

const std::vector<const QuantMethod*>& all_methods() { return registry(); }

const QuantMethod* find_method(const std::string& name) {
  for (const QuantMethod* m : registry())
    if (m->name == name) return m;
  return nullptr;
}

std::vector<std::string> method_names() {
  std::vector<std::string> out;
  for (const QuantMethod* m : registry()) out.push_back(m->name);
  return out;
}

std::string method_list(const std::string& last) {
  const auto names = method_names();
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? " " + last + " " : ", ") + names[i];
  return s;
}

void register_method(const QuantMethod& m) {
  if (m.name.empty() || find_method(m.name)) fail("method registry", "method '{}' is empty or already registered", m.name);
  registry().push_back(&m);
}

void unregister_method(const std::string& name) {
  auto& r = registry();
  r.erase(std::remove_if(r.begin(), r.end(), [&](const QuantMethod* m) { return m->name == name; }), r.end());
}

SliceResult quantize_tensor_slice(const SliceInput& in) {
  const HeadPlan& p = *in.plan;
  QuantizedTensor qt = quantize_tensor(in.x, in.tokens, in.head_dim, p.quant, p.fp_head, p.fp_tail, in.out);
  return tensor_slice_result(qt, p.quant.full_precision);
}

SliceResult quantize_tensor_slice_reference(const SliceInput& in) {
  const HeadPlan& p = *in.plan;
  QuantizedTensor qt = quantize_tensor_reference(in.x, in.tokens, in.head_dim, p.quant, p.fp_head, p.fp_tail);
  qt.dequantize(in.out);
  return tensor_slice_result(qt, p.quant.full_precision);
}

}  // namespace kvscope
