// llama.cpp KV block types; see ggml_blocks.h. Bit-exactness with ggml rests on doing every float
// operation in single precision, in ggml's order, without contraction into FMA (x86-64 baseline has
// no FMA; core/CMakeLists.txt also builds this file with -ffp-contract=off).
#include "core/quant/formats/ggml_blocks.h"

#include <cfloat>
#include <cmath>
#include <cstring>

#include "core/tensor/dtype.h"
#include "core/util/error.h"

namespace kvscope::formats {

const int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {

constexpr int QK = kGgmlBlock;
constexpr int HALF = QK / 2;

const GgmlTypeInfo kInfo[] = {{"q8_0", 34}, {"q4_0", 18}, {"q4_1", 20}, {"q5_0", 22}, {"q5_1", 24}, {"iq4_nl", 18}};

// C's float -> integer conversion (truncation toward zero) for the values ggml converts, which
// are small for finite input; out-of-range values and NaN are clamped instead of being UB.
inline int trunc_int(float v) {
  if (!(v > -1e9f && v < 1e9f)) return v > 0 ? 1000000000 : (v < 0 ? -1000000000 : 0);
  return static_cast<int>(v);
}
inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xFF);
  p[1] = static_cast<uint8_t>(h >> 8);
}
float get_f16(const uint8_t* p) { return f16_to_f32(static_cast<uint16_t>(p[0] | (p[1] << 8))); }
void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

// The element of largest magnitude, sign kept (the first one on ties), as ggml's symmetric types pick it.
float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < QK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

void min_max(const float* x, float* mn, float* mx) {
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int j = 0; j < QK; ++j) {
    if (x[j] < lo) lo = x[j];
    if (x[j] > hi) hi = x[j];
  }
  *mn = lo;
  *mx = hi;
}

// Nibbles: byte j holds element j (low) and element j + 16 (high).
void pack_nibbles(const uint8_t* q, uint8_t* out) {
  for (int j = 0; j < HALF; ++j) out[j] = static_cast<uint8_t>((q[j] & 0x0F) | ((q[j + HALF] & 0x0F) << 4));
}
// Fifth bits: bit j of the little-endian u32 is bit 4 of element j.
uint32_t high_bits(const uint8_t* q) {
  uint32_t qh = 0;
  for (int j = 0; j < QK; ++j) qh |= uint32_t((q[j] >> 4) & 1u) << j;
  return qh;
}
void unpack_nibbles(const uint8_t* in, uint32_t qh, uint8_t* q) {
  for (int j = 0; j < HALF; ++j) {
    q[j] = static_cast<uint8_t>((in[j] & 0x0F) | (((qh >> j) & 1u) << 4));
    q[j + HALF] = static_cast<uint8_t>((in[j] >> 4) | (((qh >> (j + HALF)) & 1u) << 4));
  }
}

void q8_0_block(const float* x, uint8_t* out) {
  float amax = 0.0f;
  for (int j = 0; j < QK; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_f16(out, d);
  for (int j = 0; j < QK; ++j) {
    const int q = clampi(trunc_int(std::round(x[j] * id)), -128, 127);
    out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
  }
}

// q4_0 (bits 4, offset 8) and q5_0 (bits 5, offset 16): d = max / -offset, q = trunc(x/d + offset + 0.5).
void sym_block(const float* x, int bits, uint8_t q[QK], float* d_out) {
  const int offset = 1 << (bits - 1);
  const float d = signed_absmax(x) / static_cast<float>(-offset);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const float bias = static_cast<float>(offset) + 0.5f;
  for (int j = 0; j < QK; ++j) q[j] = static_cast<uint8_t>(clampi(trunc_int(x[j] * id + bias), 0, 2 * offset - 1));
  *d_out = d;
}

// q4_1 / q5_1: d = (max - min) / (2^bits - 1), q = trunc((x - min)/d + 0.5).
void asym_block(const float* x, int bits, uint8_t q[QK], float* d_out, float* m_out) {
  float mn, mx;
  min_max(x, &mn, &mx);
  const int qmax = (1 << bits) - 1;
  const float d = (mx - mn) / static_cast<float>(qmax);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < QK; ++j) q[j] = static_cast<uint8_t>(clampi(trunc_int((x[j] - mn) * id + 0.5f), 0, qmax));
  *d_out = d;
  *m_out = mn;
}

// Index of the nearest table level; ties go to the upper level (ggml's best_index_int8).
int nearest_level(float v) {
  const int8_t* t = kIq4nlValues;
  if (v <= t[0]) return 0;
  if (v >= t[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (v < t[mid]) hi = mid;
    else lo = mid;
  }
  return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

// Weighted least-squares fit of a scale to x for the levels chosen at inverse scale `id`, with
// weights x^2: returns sum w q x and sum w q^2 (accumulated in ggml's order).
void fit_sums(const float* x, float id, float* sumqx, float* sumq2, uint8_t* L) {
  float sx = 0, s2 = 0;
  for (int j = 0; j < QK; ++j) {
    const int l = nearest_level(id * x[j]);
    if (L) L[j] = static_cast<uint8_t>(l);
    const float q = kIq4nlValues[l];
    const float w = x[j] * x[j];
    sx += w * q * x[j];
    s2 += w * q * q;
  }
  *sumqx = sx;
  *sumq2 = s2;
}

// iq4_nl as the KV cache writes it (ggml's quantize_row_iq4_nl_ref, i.e. the shared iq4_nl routine
// with its scale search switched off): the scale maps the element of largest magnitude onto the
// table's first level (-127), each element takes its nearest level, and the scale is then refit by
// least squares with weights x^2: d = sum(w q x) / sum(w q^2). The levels are NOT re-picked at the
// refit scale. A block with amax < 1e-15 gets scale 0 and keeps the level buffer of the previous
// block of the row untouched (ggml leaves it as it was: its bytes repeat that block's nibbles and
// dequantize to 0); `L` carries that buffer from block to block.
void iq4_nl_block(const float* x, uint8_t* out, uint8_t L[QK]) {
  constexpr float kEps = 1e-15f;  // ggml's GROUP_MAX_EPS
  float amax = 0, max = 0;
  for (int j = 0; j < QK; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  float scale = 0.0f;
  if (!(amax < kEps)) {
    const float d = max / static_cast<float>(kIq4nlValues[0]);
    float sumqx, sumq2;
    fit_sums(x, 1 / d, &sumqx, &sumq2, L);
    scale = sumq2 > 0 ? sumqx / sumq2 : 0.0f;
  }
  put_f16(out, scale);
  pack_nibbles(L, out + 2);
}

}  // namespace

const GgmlTypeInfo& ggml_type_info(GgmlType t) { return kInfo[static_cast<int>(t)]; }

bool parse_ggml_type(std::string_view name, GgmlType* out) {
  for (GgmlType t : kAllGgmlTypes)
    if (ggml_type_info(t).name == name) {
      *out = t;
      return true;
    }
  return false;
}

void ggml_quantize_row(GgmlType t, const float* x, size_t n, uint8_t* out) {
  if (n % QK != 0) fail(std::string(ggml_type_info(t).name), "row length {} is not a multiple of {}", n, QK);
  const int bb = ggml_type_info(t).block_bytes;
  uint8_t q[QK];
  // iq4_nl's level buffer, carried across the blocks of the row; a zero first block gets code 8
  // (the level nearest 0; ggml would read an uninitialized buffer there).
  uint8_t L[QK];
  std::memset(L, 8, sizeof(L));
  float d = 0, m = 0;
  for (size_t b = 0; b < n / QK; ++b, x += QK, out += bb) {
    switch (t) {
      case GgmlType::Q8_0: q8_0_block(x, out); break;
      case GgmlType::IQ4_NL: iq4_nl_block(x, out, L); break;
      case GgmlType::Q4_0:
        sym_block(x, 4, q, &d);
        put_f16(out, d);
        pack_nibbles(q, out + 2);
        break;
      case GgmlType::Q5_0:
        sym_block(x, 5, q, &d);
        put_f16(out, d);
        put_u32(out + 2, high_bits(q));
        pack_nibbles(q, out + 6);
        break;
      case GgmlType::Q4_1:
        asym_block(x, 4, q, &d, &m);
        put_f16(out, d);
        put_f16(out + 2, m);
        pack_nibbles(q, out + 4);
        break;
      case GgmlType::Q5_1:
        asym_block(x, 5, q, &d, &m);
        put_f16(out, d);
        put_f16(out + 2, m);
        put_u32(out + 4, high_bits(q));
        pack_nibbles(q, out + 8);
        break;
    }
  }
}

void ggml_dequantize_row(GgmlType t, const uint8_t* in, size_t n, float* y) {
  if (n % QK != 0) fail(std::string(ggml_type_info(t).name), "row length {} is not a multiple of {}", n, QK);
  const int bb = ggml_type_info(t).block_bytes;
  uint8_t q[QK];
  for (size_t b = 0; b < n / QK; ++b, in += bb, y += QK) {
    const float d = get_f16(in);
    switch (t) {
      case GgmlType::Q8_0:
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
        break;
      case GgmlType::Q4_0:
        unpack_nibbles(in + 2, 0, q);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j] - 8) * d;
        break;
      case GgmlType::Q5_0:
        unpack_nibbles(in + 6, get_u32(in + 2), q);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j] - 16) * d;
        break;
      case GgmlType::Q4_1: {
        const float m = get_f16(in + 2);
        unpack_nibbles(in + 4, 0, q);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d + m;
        break;
      }
      case GgmlType::Q5_1: {
        const float m = get_f16(in + 2);
        unpack_nibbles(in + 8, get_u32(in + 4), q);
        for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(q[j]) * d + m;
        break;
      }
      case GgmlType::IQ4_NL:
        unpack_nibbles(in + 2, 0, q);
        for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(kIq4nlValues[q[j]]);
        break;
    }
  }
}

}  // namespace kvscope::formats
