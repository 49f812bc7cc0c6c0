#pragma once
// Streaming safetensors writer: the header (names, dtypes, shapes, offsets) is fixed up front, so
// a file larger than memory (a 32k-token dump of an 8B model) is written holding one piece at a
// time. Two ways to fill it:
//   write(name, data)      whole tensors, in the declared order (dumps written layer by layer);
//   write_at(i, off, p, n) a piece of tensor i at a byte offset (a chunked capture fills each
//                          [heads, T, d] tensor a chunk of tokens at a time).
// Atomic: the data go to "<path>.tmp-<pid>", renamed over `path` by finish() once every byte of
// every tensor has been written; a writer destroyed before finish() (an exception, a cancelled
// command, SIGINT) removes its temporary file. write_safetensors() uses it, so both give the same bytes.
#include <cstdint>
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
  // `bytes` bytes at byte `offset` of tensor `index`'s data (bounds-checked; pieces must not overlap).
  void write_at(size_t index, uint64_t offset, const void* data, uint64_t bytes);
  // Every byte written: fsync, rename into place. Errors name the file.
  void finish();
  uint64_t file_bytes() const { return data_start_ + data_bytes_; }

 private:
  [[noreturn]] void failed(const std::string& what);
  void put(uint64_t pos, const void* data, uint64_t bytes);
  std::string path_, tmp_;
  std::vector<TensorDecl> tensors_;
  std::vector<uint64_t> begin_, bytes_, written_;
  size_t next_ = 0;
  uint64_t data_start_ = 0, data_bytes_ = 0;
  int fd_ = -1;
  std::unique_ptr<TempFileGuard> guard_;
};

}  // namespace kvscope
