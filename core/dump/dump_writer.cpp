#include "core/dump/dump_writer.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "core/tensor/safetensors_writer.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

std::string layer_name(int l, const char* what) { return "layers." + std::to_string(l) + "." + what; }

std::map<std::string, std::string> dump_metadata(const DumpShape& s, const DumpMeta& m, DType dtype) {
  std::map<std::string, std::string> md = m.extra;
  md["format"] = kDumpFormat;
  md["model_id"] = m.model_id;
  md["config_digest"] = m.config_digest;
  if (!m.token_ids.empty()) md["token_ids"] = nlohmann::json(m.token_ids).dump();
  md["prompt"] = m.prompt;
  md["workload"] = m.workload;
  md["dtype"] = std::string(dtype_name(dtype));
  md["kvscope_version"] = KVSCOPE_VERSION;
  md["rope_style"] = m.rope_style;
  md["rope_theta"] = fmt::format("{}", m.rope_theta);
  md["layers"] = std::to_string(s.layers);
  md["kv_heads"] = std::to_string(s.kv_heads);
  md["q_heads"] = std::to_string(s.q_heads);
  md["head_dim"] = std::to_string(s.head_dim);
  md["tokens"] = std::to_string(s.tokens);
  return md;
}

}  // namespace

DumpWriter::DumpWriter(const std::string& path, const DumpShape& shape, const DumpMeta& meta, DType dtype,
                       const std::vector<DumpLayerTensors>& layers)
    : path_(path), shape_(shape), dtype_(dtype), layers_(layers) {
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32) fail(path, "dumps are stored as F16, BF16 or F32");
  if (static_cast<int>(layers.size()) != shape.layers) fail(path, "{} layer layouts for {} layers", layers.size(), shape.layers);
  const std::vector<int64_t> kv{shape.kv_heads, shape.tokens, shape.head_dim};
  const std::vector<int64_t> q{shape.q_heads, shape.tokens, shape.head_dim};
  std::vector<TensorDecl> decl;
  for (int l = 0; l < shape.layers; ++l) {
    const DumpLayerTensors& t = layers[l];
    decl.push_back({layer_name(l, "k"), dtype, kv});
    decl.push_back({layer_name(l, "v"), dtype, kv});
    if (t.q) decl.push_back({layer_name(l, "q"), dtype, q});
    if (t.k_pre_rope) decl.push_back({layer_name(l, "k_pre_rope"), dtype, kv});
    if (t.q_pre_rope) decl.push_back({layer_name(l, "q_pre_rope"), dtype, q});
  }
  out_ = std::make_unique<SafetensorsWriter>(path, decl, dump_metadata(shape, meta, dtype));
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
    out_->write(layer_name(l, what), buf_.data());
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
