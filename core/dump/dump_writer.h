#pragma once
// Writes a KV dump one layer at a time: the safetensors header is fixed from the shape, the
// metadata and which optional tensors each layer has, then each layer is converted to the
// storage dtype and written, so memory holds one layer whatever the context length (the
// 32k-token synth of an 8B shape). save_dump() uses it: both give the same bytes.
#include <memory>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"

namespace kvscope {

class SafetensorsWriter;

// Which optional tensors a layer has (k and v always).
struct DumpLayerTensors {
  bool q = false, k_pre_rope = false, q_pre_rope = false;
};

class DumpWriter {
 public:
  // `layers` has one entry per layer of `shape`. `dtype` is F16, BF16 or F32.
  DumpWriter(const std::string& path, const DumpShape& shape, const DumpMeta& meta, DType dtype,
             const std::vector<DumpLayerTensors>& layers);
  ~DumpWriter();
  // Layer l (in order 0, 1, ...), f32 in the shapes of kv_dump.h, with the tensors declared for it.
  void write_layer(int l, const DumpLayer& layer);
  void finish();  // atomic rename into place; a writer destroyed unfinished leaves no file

 private:
  std::string path_;
  DumpShape shape_;
  DumpMeta meta_;
  DType dtype_;
  std::vector<DumpLayerTensors> layers_;
  int next_ = 0;
  std::vector<unsigned char> buf_;
  std::unique_ptr<SafetensorsWriter> out_;
};

}  // namespace kvscope
