#pragma once
// The weight files of a Hugging Face model folder: model.safetensors or a sharded
// model.safetensors.index.json. Pickled PyTorch checkpoints (*.bin, *.pt) are refused, never read.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/tensor/dtype.h"
#include "core/tensor/matmul.h"

namespace kvscope {

class SafetensorsFile;

// A tensor the forward needs, with the shape config.json implies.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor name and shape the config implies. `with_lm_head` = false for tied embeddings
// whose file omits lm_head.weight.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg, bool with_lm_head);

class Checkpoint {
 public:
  // Opens every shard of the folder (memory-mapped, validated). Throws Error naming the file.
  static Checkpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // File that holds `name` (for messages); throws naming the folder when absent.
  const std::string& file_of(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  DType dtype(const std::string& name) const;
  // Converts the tensor to f32 into dst (numel floats).
  void read_f32(const std::string& name, float* dst) const;
  std::vector<float> read_f32(const std::string& name) const;
  // A 2-D tensor in place in the memory map, at its stored dtype (valid while this Checkpoint or
  // a copy of it lives). The file's size is re-checked first (a truncated file fails here).
  WeightMatrix matrix(const std::string& name) const;

  // Checks presence, shape and dtype of every tensor the config needs, before any compute.
  // lm_head.weight may be absent only when tie_word_embeddings is true.
  void check_against(const ModelConfig& cfg) const;
  bool has_lm_head() const { return has("lm_head.weight"); }
  // Storage dtype of the embedding ("F32", "F16", "BF16").
  std::string storage_dtype() const;
  uint64_t total_bytes() const;  // tensor data bytes over all shards

 private:
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
};

}  // namespace kvscope
