// Streaming row codecs of the deployment formats; see row_codecs.h.
#include "core/quant/formats/row_codecs.h"

#include <algorithm>
#include <vector>

#include "core/quant/formats/nvfp4.h"
#include "core/tensor/dtype.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"

namespace kvscope::formats {

namespace {

uint8_t* grow(std::vector<uint8_t>& store, size_t bytes) {
  const size_t at = store.size();
  store.resize(at + bytes);
  return store.data() + at;
}

class GgmlCodec : public RowCodec {
 public:
  GgmlCodec(GgmlType t, int d) : t_(t), d_(d), row_(ggml_row_bytes(t, static_cast<size_t>(d))) {
    if (d % kGgmlBlock) fail(std::string(ggml_type_info(t).name), "head_dim {} is not a multiple of the block size {}", d, kGgmlBlock);
  }
  uint64_t encode(const float* x, int n, int, std::vector<uint8_t>& store, float* out) const override {
    uint8_t* b = grow(store, row_ * static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      const size_t off = static_cast<size_t>(r) * d_;
      ggml_quantize_row(t_, x + off, static_cast<size_t>(d_), b + r * row_);
      ggml_dequantize_row(t_, b + r * row_, static_cast<size_t>(d_), out + off);
    }
    return uint64_t(row_) * 8 * static_cast<uint64_t>(n);
  }

 private:
  GgmlType t_;
  int d_;
  size_t row_;
};

class Fp8Codec : public RowCodec {
 public:
  Fp8Codec(Fp8Format f, int d, float scale, bool count) : f_(f), d_(d), scale_(scale), count_(count) {}
  uint64_t encode(const float* x, int n, int, std::vector<uint8_t>& store, float* out) const override {
    const size_t count = static_cast<size_t>(n) * d_;
    uint8_t* b = grow(store, count);
    fp8_quantize(f_, x, count, scale_, b);
    fp8_dequantize(f_, b, count, scale_, out);
    return uint64_t(count) * 8;
  }
  uint64_t static_bits() const override { return count_ ? 32 : 0; }

 private:
  Fp8Format f_;
  int d_;
  float scale_;
  bool count_;
};

class Nvfp4Codec : public RowCodec {
 public:
  Nvfp4Codec(int d, float g, bool count) : d_(d), g_(g), count_(count) {
    if (d % kNvfp4Block) fail("nvfp4", "head_dim {} is not a multiple of the block size {}", d, kNvfp4Block);
  }
  uint64_t encode(const float* x, int n, int, std::vector<uint8_t>& store, float* out) const override {
    const size_t codes = static_cast<size_t>(d_) / 2, scales = static_cast<size_t>(d_) / kNvfp4Block;
    uint8_t* b = grow(store, (codes + scales) * static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      uint8_t* row = b + r * (codes + scales);
      const size_t off = static_cast<size_t>(r) * d_;
      nvfp4_quantize(x + off, static_cast<size_t>(d_), g_, row, row + codes);
      nvfp4_dequantize(row, row + codes, static_cast<size_t>(d_), g_, out + off);
    }
    return uint64_t(codes + scales) * 8 * static_cast<uint64_t>(n);
  }
  uint64_t static_bits() const override { return count_ ? 32 : 0; }

 private:
  int d_;
  float g_;
  bool count_;
};

class TurboCodec : public RowCodec {
 public:
  explicit TurboCodec(std::shared_ptr<const TurboQuantSplit> tq) : tq_(std::move(tq)) {}
  uint64_t encode(const float* x, int n, int, std::vector<uint8_t>&, float* out) const override {
    const int d = tq_->dim();
    for (int r = 0; r < n; ++r) tq_->roundtrip(x + static_cast<size_t>(r) * d, out + static_cast<size_t>(r) * d);
    return tq_->bits_per_vector() * static_cast<uint64_t>(n);
  }
  uint64_t static_bits() const override { return tq_->static_bits(); }

 private:
  std::shared_ptr<const TurboQuantSplit> tq_;
};

// Per row: the m sign bits packed LSB first, then the fp16 norm (2 bytes): ceil(m / 8) + 2 bytes;
// the bits counted are the format's m + 16 (a runtime packs sketches back to back).
class QjlCodec : public RowCodec {
 public:
  QjlCodec(std::shared_ptr<const Qjl> q, int d) : q_(std::move(q)), d_(d) {}
  uint64_t encode(const float* x, int n, int, std::vector<uint8_t>& store, float* out) const override {
    const int m = q_->sketch_dim();
    const size_t sign_bytes = (static_cast<size_t>(m) + 7) / 8, row = sign_bytes + 2;
    uint8_t* b = grow(store, row * static_cast<size_t>(n));
    std::vector<uint8_t> signs(static_cast<size_t>(m));
    for (int r = 0; r < n; ++r) {
      uint8_t* rb = b + r * row;
      const float norm = q_->encode(x + static_cast<size_t>(r) * d_, signs.data());
      std::fill(rb, rb + row, 0);
      for (int i = 0; i < m; ++i) rb[i / 8] |= static_cast<uint8_t>((signs[i] & 1) << (i % 8));
      const uint16_t h = f32_to_f16(norm);
      rb[sign_bytes] = static_cast<uint8_t>(h & 0xff);
      rb[sign_bytes + 1] = static_cast<uint8_t>(h >> 8);
      for (int i = 0; i < m; ++i) signs[i] = (rb[i / 8] >> (i % 8)) & 1;
      const float stored = f16_to_f32(static_cast<uint16_t>(rb[sign_bytes] | (rb[sign_bytes + 1] << 8)));
      q_->decode(signs.data(), stored, out + static_cast<size_t>(r) * d_);
    }
    return q_->bits_per_vector() * static_cast<uint64_t>(n);
  }

 private:
  std::shared_ptr<const Qjl> q_;
  int d_;
};

class KvQuantCodec : public RowCodec {
 public:
  KvQuantCodec(std::shared_ptr<const KvQuantCalibration> cal, int head, const KvQuantOptions& o, bool pre_rope, double theta,
               bool count_codebook)
      : cal_(std::move(cal)), head_(head), o_(o), pre_rope_(pre_rope), theta_(theta), count_codebook_(count_codebook) {}
  uint64_t encode(const float* x, int n, int first, std::vector<uint8_t>&, float* out) const override {
    const int d = cal_->head_dim;
    const float* src = x;
    std::vector<float> pre;
    if (pre_rope_) {
      pre.assign(x, x + static_cast<size_t>(n) * d);
      apply_rope(pre.data(), n, d, theta_, first, true);
      src = pre.data();
    }
    KvQuantOptions o = o_;
    o.fp16_tokens = std::max(0, o_.fp16_tokens - first);  // positions before fp16_tokens stay fp16
    const KvQuantHeadStats st = kvquant_roundtrip(*cal_, head_, src, n, o, out);
    if (pre_rope_) apply_rope(out, n, d, theta_, first, false);
    return st.bits;
  }
  uint64_t static_bits() const override {
    return (cal_->keys ? 32ull * cal_->head_dim : 0) + (count_codebook_ ? 16ull * cal_->dec.size() : 0);
  }

 private:
  std::shared_ptr<const KvQuantCalibration> cal_;
  int head_;
  KvQuantOptions o_;
  bool pre_rope_;
  double theta_;
  bool count_codebook_;
};

}  // namespace

std::shared_ptr<const RowCodec> ggml_row_codec(GgmlType t, int head_dim) { return std::make_shared<GgmlCodec>(t, head_dim); }
std::shared_ptr<const RowCodec> fp8_row_codec(Fp8Format f, int head_dim, float scale, bool count_scale) {
  return std::make_shared<Fp8Codec>(f, head_dim, scale, count_scale);
}
std::shared_ptr<const RowCodec> nvfp4_row_codec(int head_dim, float global_scale, bool count_scale) {
  return std::make_shared<Nvfp4Codec>(head_dim, global_scale, count_scale);
}
std::shared_ptr<const RowCodec> turboquant_row_codec(std::shared_ptr<const TurboQuantSplit> tq) {
  return std::make_shared<TurboCodec>(std::move(tq));
}
std::shared_ptr<const RowCodec> qjl_row_codec(std::shared_ptr<const Qjl> q, int head_dim) {
  return std::make_shared<QjlCodec>(std::move(q), head_dim);
}
std::shared_ptr<const RowCodec> kvquant_row_codec(std::shared_ptr<const KvQuantCalibration> cal, int head,
                                                  const KvQuantOptions& opt, bool pre_rope, double rope_theta,
                                                  bool count_codebook) {
  return std::make_shared<KvQuantCodec>(std::move(cal), head, opt, pre_rope, rope_theta, count_codebook);
}

}  // namespace kvscope::formats
