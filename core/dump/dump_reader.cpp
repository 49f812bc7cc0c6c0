#include "core/dump/dump_reader.h"

#include <algorithm>

#include "core/tensor/safetensors.h"
#include "core/util/error.h"

namespace kvscope {

DumpReader::DumpReader(const std::string& path, const DumpLoadOptions& opts) : opts_(opts) {
  file_ = SafetensorsFile::open(path);
  header_ = read_dump_header(*file_, opts);
  const DumpShape& s = header_.shape;
  // Every layer must have the same shapes; Q for one layer means Q for all (checked in load_dump's order).
  const std::vector<int64_t> kv_shape{s.kv_heads, s.tokens, s.head_dim};
  const DumpMeta& m = header_.meta;
  if (const TensorInfo* q0 = s.q_heads > 0 ? file_->find(dump_tensor_name(m, 0, "q")) : nullptr) q_rows_ = dump_q_rows(m, s, *q0);
  const std::vector<int64_t> q_shape{s.q_heads, q_rows_, s.head_dim};
  auto expect = [&](int l, const char* what, const std::vector<int64_t>& shape) {
    const TensorInfo& t = file_->get(dump_tensor_name(m, l, what));  // "tensor 'layers.L.v' is missing"
    if (t.shape != shape) fail(path, "tensor '{}' has shape {}, expected {}", t.name, shape_str(t.shape), shape_str(shape));
    return &t;
  };
  layers_.resize(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    LayerTensors& L = layers_[l];
    L.k = expect(l, "k", kv_shape);
    L.v = expect(l, "v", kv_shape);
    if (s.q_heads > 0) {
      if (!file_->find(dump_tensor_name(m, l, "q"))) fail(path, "layer {} has no queries but layer 0 has", l);
      if (opts.load_q) L.q = expect(l, "q", q_shape);
    }
    if (opts.load_pre_rope) {
      if (file_->find(dump_tensor_name(m, l, "k_pre_rope"))) L.k_pre_rope = expect(l, "k_pre_rope", kv_shape);
      if (s.q_heads > 0 && file_->find(dump_tensor_name(m, l, "q_pre_rope"))) L.q_pre_rope = expect(l, "q_pre_rope", q_shape);
    }
  }
}

DumpReader::~DumpReader() = default;

const std::string& DumpReader::path() const { return file_->path(); }

StoredMatrix DumpReader::view(const TensorInfo* t, int l, const char* what, int head, bool any_rows) const {
  if (l < 0 || l >= shape().layers) fail(path(), "layer {} out of range (the dump has {})", l, shape().layers);
  if (!t) fail(path(), "tensor '{}' is missing", dump_tensor_name(meta(), l, what));
  if (!any_rows && t->shape[1] != shape().tokens)
    fail(path(), "tensor '{}' holds queries at {} of {} positions (q_positions); streamed views need every position", t->name,
         t->shape[1], shape().tokens);
  if (head < 0 || head >= t->shape[0]) fail(path(), "head {} out of range in tensor '{}'", head, t->name);
  if (t->dtype != DType::F16 && t->dtype != DType::BF16 && t->dtype != DType::F32)
    fail(path(), "tensor '{}' is stored as {}; streamed reading needs F16, BF16 or F32", t->name, dtype_name(t->dtype));
  const size_t per_head = static_cast<size_t>(t->shape[1]) * t->shape[2] * dtype_size(t->dtype);
  return {file_->data(*t) + per_head * head, t->dtype, static_cast<int>(t->shape[1]), static_cast<int>(t->shape[2]),
          file_.get(), file_->file_offset(*t) + per_head * head};
}

StoredMatrix DumpReader::k(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].k : nullptr, l, "k", h); }
StoredMatrix DumpReader::v(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].v : nullptr, l, "v", h); }
StoredMatrix DumpReader::q(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].q : nullptr, l, "q", h); }
StoredMatrix DumpReader::q_stored(int l, int h) const {
  return view(l >= 0 && l < shape().layers ? layers_[l].q : nullptr, l, "q", h, true);
}
StoredMatrix DumpReader::k_pre_rope(int l, int h) const {
  return view(l >= 0 && l < shape().layers ? layers_[l].k_pre_rope : nullptr, l, "k_pre_rope", h);
}

DumpLayer DumpReader::load_layer(int l) const {
  if (l < 0 || l >= shape().layers) fail(path(), "layer {} out of range (the dump has {})", l, shape().layers);
  const LayerTensors& t = layers_[l];
  DumpLayer out;
  auto read = [&](const TensorInfo* info, std::vector<float>& dst) {
    if (!info) return;
    dst.resize(static_cast<size_t>(info->numel()));
    file_->read_f32_into(*info, dst.data());  // throws naming the file if it shrank since open
  };
  read(t.k, out.k);
  read(t.v, out.v);
  // Queries stored at q_positions only: spread to [q_heads, tokens, head_dim], zero elsewhere.
  auto read_q = [&](const TensorInfo* info, std::vector<float>& dst) {
    read(info, dst);
    if (!info || q_rows_ == shape().tokens) return;
    const size_t D = static_cast<size_t>(shape().head_dim), T = static_cast<size_t>(shape().tokens);
    std::vector<float> full(static_cast<size_t>(shape().q_heads) * T * D, 0.f);
    for (int h = 0; h < shape().q_heads; ++h)
      for (int j = 0; j < q_rows_; ++j)
        std::copy_n(&dst[(static_cast<size_t>(h) * q_rows_ + j) * D], D, &full[(h * T + meta().q_positions[j]) * D]);
    dst = std::move(full);
  };
  read_q(t.q, out.q);
  read(t.k_pre_rope, out.k_pre_rope);
  read_q(t.q_pre_rope, out.q_pre_rope);
  return out;
}

void DumpReader::check_intact(int l) const {
  if (l < 0 || l >= shape().layers) fail(path(), "layer {} out of range (the dump has {})", l, shape().layers);
  for (const TensorInfo* t : {layers_[l].k, layers_[l].v, layers_[l].q, layers_[l].k_pre_rope, layers_[l].q_pre_rope})
    if (t) file_->check_intact(*t);
}

void DumpReader::release_layer(int l) const {
  if (l < 0 || l >= shape().layers) return;
  for (const TensorInfo* t : {layers_[l].k, layers_[l].v, layers_[l].q, layers_[l].k_pre_rope, layers_[l].q_pre_rope})
    if (t) file_->release(*t);
}

}  // namespace kvscope
