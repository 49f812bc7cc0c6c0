#pragma once
// safetensors reader (memory-mapped, never trusted) and writer (temp file + rename).
// Format: u64 little-endian header length N, N bytes of JSON header, then the data block.
// Header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//          "__metadata__": {"key": "string value", ...}}; offsets are relative to the data block.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor/dtype.h"
#include "core/tensor/stored_matrix.h"

namespace kvscope {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset inside the data block
  uint64_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile : public StoredSource {
 public:
  // Maximum header size we accept (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  // Maps and validates the file; throws Error("<path>: <problem>") on any inconsistency.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile() override;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;  // nullptr when absent
  const TensorInfo& get(const std::string& name) const;   // throws naming the file when absent
  const unsigned char* data(const TensorInfo& t) const { return data_ + t.begin; }
  // Where tensor t's bytes start in the file (for read_bytes).
  uint64_t file_offset(const TensorInfo& t) const {
    return static_cast<uint64_t>(data_ - static_cast<const unsigned char*>(map_)) + t.begin;
  }
  // pread of the file (StoredSource): throws Error naming the file when it shrank since open().
  void read_bytes(uint64_t offset, size_t n, void* dst) const override;

  // Reads a tensor as f32 (any float or int dtype), checking the expected shape if given.
  std::vector<float> read_f32(const std::string& name, const std::vector<int64_t>& expect_shape = {}) const;
  // Converts one tensor of this file into dst (numel floats); F16, BF16 and F32 tensors of 1 MB or
  // more are read with pread a chunk at a time (no page faults). Throws Error naming the file when
  // the file was truncated since open() (by another process), instead of dying of SIGBUS.
  void read_f32_into(const TensorInfo& t, float* dst) const;
  // Throws Error naming the file when it is now too short to hold tensor t (truncated since open()).
  void check_intact(const TensorInfo& t) const;
  // Drops this process's mapping of the whole pages inside tensor t (madvise DONTNEED: the page
  // cache keeps them, a later read maps them again), so streaming through a file larger than
  // memory does not keep every page read resident in the process.
  void release(const TensorInfo& t) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;  // kept open to re-check the size before each read
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const unsigned char* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write: `data` must hold numel * dtype_size bytes and stay alive until write().
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};

// Writes atomically: to "<path>.tmp-<pid>" first, renamed over `path` only when complete.
void write_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Runs `copy`, which reads from a memory map, and returns false instead of crashing when the map
// faults with SIGBUS (the file shrank under it). Only SIGBUS raised inside `copy` on this thread
// is caught; any other SIGBUS goes to the previous handler. `copy` must not allocate or lock.
bool run_sigbus_guarded(const std::function<void()>& copy);

std::string shape_str(const std::vector<int64_t>& shape);  // "[2, 3, 4]"

}  // namespace kvscope
