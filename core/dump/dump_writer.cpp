#include "core/dump/dump_writer.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/tensor/safetensors_writer.h"
#include "core/util/error.h"

namespace kvscope {

DumpWriter::DumpWriter(const std::string& path, const DumpShape& shape, const DumpMeta& meta, DType dtype,
                       const std::vector<DumpLayerTensors>& layers)
    : path_(path), shape_(shape), meta_(meta), dtype_(dtype), layers_(layers) {
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32) fail(path, "dumps are stored as F16, BF16 or F32");
  if (static_cast<int>(layers.size()) != shape.layers) fail(path, "{} layer layouts for {} layers", layers.size(), shape.layers);
  const std::vector<int64_t> kv{shape.kv_heads, shape.tokens, shape.head_dim};
  const std::vector<int64_t> q{shape.q_heads, shape.tokens, shape.head_dim};
  std::vector<TensorDecl> decl;
  for (int l = 0; l < shape.layers; ++l) {
    const DumpLayerTensors& t = layers[l];
    decl.push_back({dump_tensor_name(meta, l, "k"), dtype, kv});
    decl.push_back({dump_tensor_name(meta, l, "v"), dtype, kv});
    if (t.q) decl.push_back({dump_tensor_name(meta, l, "q"), dtype, q});
    if (t.k_pre_rope) decl.push_back({dump_tensor_name(meta, l, "k_pre_rope"), dtype, kv});
    if (t.q_pre_rope) decl.push_back({dump_tensor_name(meta, l, "q_pre_rope"), dtype, q});
  }
  out_ = std::make_unique<SafetensorsWriter>(path, decl, dump_metadata(meta, shape, dtype));
}

DumpWriter::~DumpWriter() = default;

void DumpWriter::write_layer(int l, const DumpLayer& L) {
  if (l != next_ || l >= shape_.layers) fail(path_, "layer {} written out of order (expected layer {})", l, next_);
  const size_t kv = static_cast<size_t>(shape_.kv_heads) * shape_.tokens * shape_.head_dim;
  const size_t q = static_cast<size_t>(shape_.q_heads) * shape_.tokens * shape_.head_dim;
  auto put = [&](const char* what, const std::vector<float>& src, size_t n) {
    if (src.size() != n) fail(path_, "layer {}: {} has {} values, the shape says {}", l, what, src.size(), n);
    buf_.resize(n * dtype_size(dtype_));
    convert_from_f32(dtype_, src.data(), n, buf_.data());
    out_->write(dump_tensor_name(meta_, l, what), buf_.data());
  };
  const DumpLayerTensors& t = layers_[l];
  put("k", L.k, kv);
  put("v", L.v, kv);
  if (t.q) put("q", L.q, q);
  if (t.k_pre_rope) put("k_pre_rope", L.k_pre_rope, kv);
  if (t.q_pre_rope) put("q_pre_rope", L.q_pre_rope, q);
  ++next_;
}

void DumpWriter::finish() {
  if (next_ != shape_.layers) fail(path_, "only {} of {} layers were written", next_, shape_.layers);
  out_->finish();
}

}  // namespace kvscope
