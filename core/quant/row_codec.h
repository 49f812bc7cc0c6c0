#pragma once
// A streaming coder of one (layer, KV head, kind) for the replay cache: rows (tokens) leave the
// fp16 window, the codec packs them into the head's byte store and hands back the values a packed
// runtime would read. A method's registry record builds one per head in its plan_replay
// (core/quant/methods/formats_replay.cpp for the deployment formats); the cache only calls encode.
// Every bit is counted: what encode appends (plus static_bits() once per head) is the stored size.
#include <cstdint>
#include <vector>

namespace kvscope {

class RowCodec {
 public:
  virtual ~RowCodec() = default;
  // x: n rows of head_dim values (fp16-representable), tokens at absolute positions first .. first+n-1
  // of the sequence (RoPE-aware and first-token-aware codecs use it). Appends the stored bytes to
  // `store`, writes the decoded rows to out (n x head_dim, may not alias x) and returns the bits stored
  // for these rows (the bytes' payload; a codec whose layout is not byte-aligned counts exact bits).
  virtual uint64_t encode(const float* x, int n, int first, std::vector<uint8_t>& store, float* out) const = 0;
  // Bits stored once for the head whatever its length (scales, ranges, a share of a codebook).
  virtual uint64_t static_bits() const { return 0; }
};

}  // namespace kvscope
