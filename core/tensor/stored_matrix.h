#pragma once
// A [rows, cols] row-major matrix at its stored precision (a view, usually into a memory-mapped
// dump): what the streaming quantizer kernels read, converting to f32 inside their own loops.
#include <cstddef>
#include <cstdint>

#include "core/tensor/dtype.h"

namespace kvscope {

struct StoredMatrix {
  const void* data = nullptr;  // rows * cols elements of dtype, any alignment
  DType dtype = DType::F32;    // F16, BF16 or F32
  int rows = 0, cols = 0;

  size_t elems() const { return static_cast<size_t>(rows) * cols; }
  // Rows [r, rows) as a view.
  const unsigned char* row_ptr(int r) const {
    return static_cast<const unsigned char*>(data) + static_cast<size_t>(r) * cols * dtype_size(dtype);
  }
};

// Exact conversion of n stored elements (F16, BF16 or F32) to f32; F16 uses the CPU's F16C
// instructions when present (same values as f16_to_f32 except NaN payloads, which come out quiet).
void stored_to_f32(DType t, const void* src, size_t n, float* dst);

}  // namespace kvscope
