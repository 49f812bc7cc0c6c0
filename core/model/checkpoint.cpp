#include "core/model/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/tensor/safetensors.h"
#include "core/util/error.h"

namespace kvscope {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c, bool with_lm_head) {
  const int64_t h = c.hidden_size, hd = c.head_dim, q = int64_t{c.num_heads} * hd, kv = int64_t{c.num_kv_heads} * hd;
  const int64_t inter = c.intermediate_size, vocab = c.vocab_size;
  std::vector<ExpectedTensor> out;
  out.push_back({"model.embed_tokens.weight", {vocab, h}});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "self_attn.q_proj.weight", {q, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    if (c.qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {hd}});
      out.push_back({p + "self_attn.k_norm.weight", {hd}});
    }
    out.push_back({p + "mlp.gate_proj.weight", {inter, h}});
    out.push_back({p + "mlp.up_proj.weight", {inter, h}});
    out.push_back({p + "mlp.down_proj.weight", {h, inter}});
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
  }
  out.push_back({"model.norm.weight", {h}});
  if (with_lm_head) out.push_back({"lm_head.weight", {vocab, h}});
  return out;
}

namespace {

// Pickle-based formats: loading them executes arbitrary code, so we only name them in the error.
std::vector<std::string> pickle_files(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string ext = e.path().extension().string();
    const std::string name = e.path().filename().string();
    if (name.rfind("tok", 0) == 0) continue;  // llama2.c vocabularies (tokenizer.bin, tok512.bin)
    if (ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".ckpt") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir_in) {
  Checkpoint ck;
  ck.dir_ = dir_in;
  const fs::path dir(dir_in);
  if (!fs::is_directory(dir)) fail(dir_in, "not a model folder");
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";

  std::vector<std::string> files;
  if (fs::exists(index)) {
    std::ifstream in(index, std::ios::binary);
    if (!in) fail(index.string(), "cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    json j;
    try {
      j = json::parse(ss.str());
    } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e309
      fail(index.string(), "not valid JSON ({})", e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index.string(), "missing \"weight_map\" object");
    std::set<std::string> shard_names;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(index.string(), "weight_map[\"{}\"] is not a file name", it.key());
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard.find("..") != std::string::npos)
        fail(index.string(), "shard name \"{}\" must be a plain file name", shard);
      shard_names.insert(shard);
    }
    std::map<std::string, size_t> shard_index;
    for (const auto& s : shard_names) {
      const fs::path p = dir / s;
      if (!fs::exists(p)) fail(p.string(), "missing shard (listed in {})", index.string());
      shard_index[s] = ck.files_.size();
      ck.files_.push_back(SafetensorsFile::open(p.string()));
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      const size_t fi = shard_index.at(it.value().get<std::string>());
      if (!ck.files_[fi]->find(it.key()))
        fail(ck.files_[fi]->path(), "tensor '{}' is missing (listed in {})", it.key(), index.string());
      ck.where_[it.key()] = fi;
    }
  } else if (fs::exists(single)) {
    ck.files_.push_back(SafetensorsFile::open(single.string()));
    for (const auto& t : ck.files_[0]->tensors()) ck.where_[t.name] = 0;
  } else {
    const auto pickles = pickle_files(dir);
    if (!pickles.empty())
      fail(pickles[0], "refusing to unpickle a PyTorch pickle checkpoint (it can run arbitrary code); "
                       "convert it to model.safetensors first");
    fail(single.string(), "missing (the folder has neither model.safetensors nor model.safetensors.index.json)");
  }
  return ck;
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "tensor '{}' is missing from the checkpoint", name);
  return files_[it->second]->path();
}

std::vector<int64_t> Checkpoint::shape(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "tensor '{}' is missing from the checkpoint", name);
  return files_[it->second]->get(name).shape;
}

DType Checkpoint::dtype(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "tensor '{}' is missing from the checkpoint", name);
  return files_[it->second]->get(name).dtype;
}

void Checkpoint::read_f32(const std::string& name, float* dst) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "tensor '{}' is missing from the checkpoint", name);
  const SafetensorsFile& f = *files_[it->second];
  const TensorInfo& t = f.get(name);
  f.read_f32_into(t, dst);
}

std::vector<float> Checkpoint::read_f32(const std::string& name) const {
  const auto s = shape(name);
  int64_t n = 1;
  for (auto d : s) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  read_f32(name, out.data());
  return out;
}

WeightMatrix Checkpoint::matrix(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, "tensor '{}' is missing from the checkpoint", name);
  const SafetensorsFile& f = *files_[it->second];
  const TensorInfo& t = f.get(name);
  if (t.shape.size() != 2) fail(f.path(), "tensor '{}' has shape {}, expected a matrix", name, shape_str(t.shape));
  f.check_intact(t);
  WeightMatrix m;
  m.data = f.data(t);
  m.dtype = t.dtype;
  m.rows = t.shape[0];
  m.cols = t.shape[1];
  return m;
}

void Checkpoint::check_against(const ModelConfig& cfg) const {
  const bool lm = has_lm_head();
  if (!lm && !cfg.tie_word_embeddings)
    fail(files_.size() == 1 ? files_[0]->path() : dir_,
         "tensor 'lm_head.weight' is missing and config.json has tie_word_embeddings = false");
  const std::string cfg_path = (fs::path(dir_) / "config.json").string();
  for (const auto& e : expected_tensors(cfg, lm)) {
    auto it = where_.find(e.name);
    if (it == where_.end())
      fail(files_.size() == 1 ? files_[0]->path() : dir_, "tensor '{}' is missing (needed by {})", e.name, cfg_path);
    const TensorInfo& t = files_[it->second]->get(e.name);
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
      fail(files_[it->second]->path(), "tensor '{}' has dtype {}; weights must be F32, F16 or BF16", e.name,
           dtype_name(t.dtype));
    if (t.shape != e.shape)
      fail(files_[it->second]->path(), "tensor '{}' has shape {} but {} implies {}", e.name, shape_str(t.shape),
           cfg_path, shape_str(e.shape));
  }
}

std::string Checkpoint::storage_dtype() const {
  if (!has("model.embed_tokens.weight")) return "?";
  return std::string(dtype_name(dtype("model.embed_tokens.weight")));
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& f : files_)
    for (const auto& t : f->tensors()) n += t.nbytes;
  return n;
}

}  // namespace kvscope
