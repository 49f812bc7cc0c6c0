#include "core/tensor/stored_matrix.h"

#include <immintrin.h>

#include <cstring>

#include "core/util/error.h"

namespace kvscope {

namespace {

__attribute__((target("avx2,f16c"))) void f16_to_f32_f16c(const unsigned char* src, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i + 16));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(a));
    _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(b));
  }
  for (; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = _cvtsh_ss(h);
  }
}

void f16_to_f32_soft(const unsigned char* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}

__attribute__((target_clones("avx2", "default"))) void bf16_to_f32_all(const unsigned char* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);
    uint32_t u = static_cast<uint32_t>(h) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

#if defined(__clang__)
const bool kHasF16c = false;  // clang has no "f16c" for __builtin_cpu_supports; only the fuzz build uses clang
#else
const bool kHasF16c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
#endif

}  // namespace

StoredMatrix stage(const StoredMatrix& x, std::vector<unsigned char>& buf) {
  if (!x.source) return x;
  const size_t bytes = x.elems() * dtype_size(x.dtype);
  if (buf.size() < bytes) buf.resize(bytes);
  x.source->read_bytes(x.source_offset, bytes, buf.data());
  return {buf.data(), x.dtype, x.rows, x.cols};
}

void row_to_f32(const StoredMatrix& m, int r, float* dst) {
  if (!m.source) return stored_to_f32(m.dtype, m.row_ptr(r), static_cast<size_t>(m.cols), dst);
  const size_t bytes = static_cast<size_t>(m.cols) * dtype_size(m.dtype);
  thread_local std::vector<unsigned char> buf;
  if (buf.size() < bytes) buf.resize(bytes);
  m.source->read_bytes(m.source_offset + static_cast<uint64_t>(r) * bytes, bytes, buf.data());
  stored_to_f32(m.dtype, buf.data(), static_cast<size_t>(m.cols), dst);
}

void stored_to_f32(DType t, const void* src, size_t n, float* dst) {
  if (n == 0) return;
  const auto* p = static_cast<const unsigned char*>(src);
  switch (t) {
    case DType::F32: std::memcpy(dst, p, n * 4); return;
    case DType::F16: (kHasF16c ? f16_to_f32_f16c : f16_to_f32_soft)(p, n, dst); return;
    case DType::BF16: bf16_to_f32_all(p, n, dst); return;
    default: throw Error("stored_to_f32: only F16, BF16 and F32 matrices are supported");
  }
}

}  // namespace kvscope
