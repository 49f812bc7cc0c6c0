#include "core/dump/dump_reader.h"

#include "core/tensor/safetensors.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

std::string layer_name(int l, const char* what) { return "layers." + std::to_string(l) + "." + what; }

}  // namespace

DumpReader::DumpReader(const std::string& path, const DumpLoadOptions& opts) : opts_(opts) {
  file_ = SafetensorsFile::open(path);
  header_ = read_dump_header(*file_, opts);
  const DumpShape& s = header_.shape;
  // Every layer must have the same shapes; Q for one layer means Q for all (checked in load_dump's order).
  const std::vector<int64_t> kv_shape{s.kv_heads, s.tokens, s.head_dim};
  const std::vector<int64_t> q_shape{s.q_heads, s.tokens, s.head_dim};
  auto expect = [&](int l, const char* what, const std::vector<int64_t>& shape) {
    const TensorInfo& t = file_->get(layer_name(l, what));  // "tensor 'layers.L.v' is missing"
    if (t.shape != shape) fail(path, "tensor '{}' has shape {}, expected {}", t.name, shape_str(t.shape), shape_str(shape));
    return &t;
  };
  layers_.resize(s.layers);
  for (int l = 0; l < s.layers; ++l) {
    LayerTensors& L = layers_[l];
    L.k = expect(l, "k", kv_shape);
    L.v = expect(l, "v", kv_shape);
    if (s.q_heads > 0) {
      if (!file_->find(layer_name(l, "q"))) fail(path, "layer {} has no queries but layer 0 has", l);
      if (opts.load_q) L.q = expect(l, "q", q_shape);
    }
    if (opts.load_pre_rope) {
      if (file_->find(layer_name(l, "k_pre_rope"))) L.k_pre_rope = expect(l, "k_pre_rope", kv_shape);
      if (s.q_heads > 0 && file_->find(layer_name(l, "q_pre_rope"))) L.q_pre_rope = expect(l, "q_pre_rope", q_shape);
    }
  }
}

DumpReader::~DumpReader() = default;

const std::string& DumpReader::path() const { return file_->path(); }

StoredMatrix DumpReader::view(const TensorInfo* t, int l, const char* what, int head) const {
  if (l < 0 || l >= shape().layers) fail(path(), "layer {} out of range (the dump has {})", l, shape().layers);
  if (!t) fail(path(), "tensor '{}' is missing", layer_name(l, what));
  if (head < 0 || head >= t->shape[0]) fail(path(), "head {} out of range in tensor '{}'", head, t->name);
  if (t->dtype != DType::F16 && t->dtype != DType::BF16 && t->dtype != DType::F32)
    fail(path(), "tensor '{}' is stored as {}; streamed reading needs F16, BF16 or F32", t->name, dtype_name(t->dtype));
  const size_t per_head = static_cast<size_t>(t->shape[1]) * t->shape[2] * dtype_size(t->dtype);
  return {file_->data(*t) + per_head * head, t->dtype, static_cast<int>(t->shape[1]), static_cast<int>(t->shape[2])};
}

StoredMatrix DumpReader::k(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].k : nullptr, l, "k", h); }
StoredMatrix DumpReader::v(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].v : nullptr, l, "v", h); }
StoredMatrix DumpReader::q(int l, int h) const { return view(l >= 0 && l < shape().layers ? layers_[l].q : nullptr, l, "q", h); }
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
  read(t.q, out.q);
  read(t.k_pre_rope, out.k_pre_rope);
  read(t.q_pre_rope, out.q_pre_rope);
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
