#pragma once
// A safetensors writer for data that arrives in pieces (a capture writes each layer's chunk as it
// is produced): every tensor's shape and dtype are known up front, so the header with the final
// offsets is written first and each piece goes straight to its place (pwrite). The file is
// "<path>.tmp-<pid>" until commit() renames it over `path`; a writer destroyed without commit()
// (an error, an exception) deletes it, so a failed run never leaves a half-written file.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/dtype.h"

namespace kvscope {

class TempFileGuard;

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};

class SafetensorsStreamWriter {
 public:
  SafetensorsStreamWriter(const std::string& path, const std::vector<TensorSpec>& tensors,
                          const std::map<std::string, std::string>& metadata);
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // Writes `bytes` bytes at byte `offset` of tensor `index`'s data (bounds-checked).
  void write(size_t index, uint64_t offset, const void* data, uint64_t bytes);
  // Flushes, fsyncs and renames into place. Throws Error naming the file on failure.
  void commit();
  uint64_t file_bytes() const { return data_start_ + data_bytes_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t data_start_ = 0, data_bytes_ = 0;
  std::vector<uint64_t> begin_, size_;
  std::unique_ptr<TempFileGuard> guard_;
};

}  // namespace kvscope
