#pragma once
// Streaming safetensors writer: the header (names, dtypes, shapes, offsets) is fixed up front,
// then tensors are written one at a time in the declared order, so a file larger than memory
// (a 32k-token dump of an 8B model) is written holding one tensor at a time. Atomic: the data go
// to "<path>.tmp-<pid>", renamed over `path` by finish(); a writer destroyed before finish()
// (an exception, a cancelled command) removes its temporary file. write_safetensors() uses it,
// so both give the same bytes.
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/dtype.h"

namespace kvscope {

class TempFileGuard;

struct TensorDecl {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, const std::vector<TensorDecl>& tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor in declared order (its name is checked); `data` holds its numel * dtype_size bytes.
  void write(const std::string& name, const void* data);
  // Every tensor written: flush, fsync, rename into place. Errors name the file.
  void finish();

 private:
  [[noreturn]] void failed(const std::string& what);
  std::string path_, tmp_;
  std::vector<TensorDecl> tensors_;
  std::vector<uint64_t> bytes_;
  size_t next_ = 0;
  FILE* fp_ = nullptr;
  std::unique_ptr<TempFileGuard> guard_;
};

}  // namespace kvscope
