#pragma once
// A [rows, cols] row-major matrix at its stored precision (a view, usually into a memory-mapped
// dump): what the streaming quantizer kernels read, converting to f32 inside their own loops.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/tensor/dtype.h"

namespace kvscope {

// A file whose bytes a view can also be read from with pread (SafetensorsFile). Copying a slice
// into a reused buffer costs a fraction of touching a fresh mapping 4 KB page by page: 6.5 vs
// 1.5 GB/s of f16 converted on one core here, 12 vs 2.3 GB/s on two (a 2 MB slice at a time).
class StoredSource {
 public:
  virtual ~StoredSource() = default;
  // Copies n bytes at `offset` (from the start of the file) into dst; throws Error naming the
  // file when it cannot (the file shrank since it was opened, an I/O error).
  virtual void read_bytes(uint64_t offset, size_t n, void* dst) const = 0;
};

struct StoredMatrix {
  const void* data = nullptr;  // rows * cols elements of dtype, any alignment
  DType dtype = DType::F32;    // F16, BF16 or F32
  int rows = 0, cols = 0;
  const StoredSource* source = nullptr;  // when set, `data` (a mapping) can be read from here too
  uint64_t source_offset = 0;            // where `data` starts in the source

  size_t elems() const { return static_cast<size_t>(rows) * cols; }
  // Rows [r, rows) as a view.
  const unsigned char* row_ptr(int r) const {
    return static_cast<const unsigned char*>(data) + static_cast<size_t>(r) * cols * dtype_size(dtype);
  }
};

// x itself when it has no source, else x read from its source into `buf` (grown as needed): a
// view of the same values that costs no page faults. Throws like StoredSource::read_bytes.
StoredMatrix stage(const StoredMatrix& x, std::vector<unsigned char>& buf);

// Row r of m in f32 (m.cols floats), read from m's source when it has one (one small pread costs
// less than faulting in a page of the mapping for it).
void row_to_f32(const StoredMatrix& m, int r, float* dst);

// Exact conversion of n stored elements (F16, BF16 or F32) to f32; F16 uses the CPU's F16C
// instructions when present (same values as f16_to_f32 except NaN payloads, which come out quiet).
void stored_to_f32(DType t, const void* src, size_t n, float* dst);

}  // namespace kvscope
