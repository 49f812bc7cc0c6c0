#pragma once
// KV caches for replay.
//
// QuantizedKvCache implements the runtime's KvCache with a policy: tokens are quantized as they
// leave the residual (full-precision) window, the first `sink_tokens` stay fp16 forever, and the
// storage is packed (QuantizedTensor blocks + fp16 rows), so stored_bits() is the real size of the
// cache's buffers. The forward reads a dequantized f32 mirror, exactly the values a packed runtime
// would attend to; the mirror is a working buffer of the simulation and is not counted.
//
// Timing (KIVI, ALGORITHMS.md §2.2): append() stores the new tokens in fp16 and the attention of
// that forward reads them exactly; the "after attention" quantization happens in flush(), which
// append() runs first (so the next forward sees it) and which callers may run explicitly.
// So a prefill attends to fp16 K/V, and every decode step attends to quantized history + exact
// residual + its own exact token, as KIVI does.
//
// Which tokens are quantized at flush, per (layer, KV head, kind), with S sinks, window R and the
// T tokens cached (`settled` = S + tokens already quantized):
//   Axis::Token (per-token groups: KIVI V, uniform, kvmix-2, SKVQ): every token older than the last R
//       is quantized, one token at a time (groups never span tokens, so a token's codes do not depend
//       on when it is quantized): fp16 tokens = min(T - S, R).
//   KIVI keys (Axis::Channel, method kivi): whole blocks of R tokens from the fp16 buffer; fp16
//       tokens = (T - S) mod R. Blocks are aligned at the first non-sink token.
//   Other Axis::Channel (uniform per-channel): keep R tokens fp16, quantize older tokens in blocks of
//       group_size (group_size 0: blocks of 32).
//   Axis::Head (kvmix strat1, one scale per head): the first flush that quantizes anything calibrates
//       the scale (and zero point) on the tokens it quantizes (normally the prefill); later tokens are
//       encoded with that scale, clamped to its range. The scale is counted once.
//   WaterSIC (method watersic, streaming): as Axis::Token, one row at a time, each row coded on its
//       own by the head's WaterSicCoder (core/quant/watersic.h) fixed from the calibration's K and
//       queries; codes at the calibration codes' fixed width, clamped into it (counted). Stored: the
//       codes plus the coder's side info once per head (column scales, permutation, code range).
//   Row codecs (plan.codec: llama.cpp types, FP8, NVFP4, TurboQuant, QJL, KVQuant): as Axis::Token, the
//       rows leaving the window go through the head's RowCodec, which packs them into the head's byte
//       store; its bits (and its static bits once per head) are the stored size.
//   Rotation ($.rotation, any per-head method): the rows are rotated by the plan's Hadamard matrix before
//       their codes are made and the reconstruction is rotated back into the mirror (errors measured there).
//   Full precision (fp16 method, fp16 outlier heads): everything fp16.
//
// Calibrated decisions (core/replay/calibration.h): a policy that ranks outlier heads, smooths keys or
// chooses bits from attention is planned from a Calibration: given at construction (mode text, or
// plans computed once), or, for mode online, by calibrate() on the prompt's activations after the
// prefill forward and before the first flush. KVSmooth is folded into the cache: a smoothed K head
// quantizes K / s and attention reads s * dequant(...), which equals scaling the queries by s
// (Q'K'^T = QK^T, ALGORITHMS.md 4.4); fp16 rows are exact either way.
// outliers_ratio (QAQ): in each quantization group of a block, the m = ceil(ratio/2 * n) smallest and
// m largest elements are clamped to the (m+1)-th before quantizing and read back exactly; each costs
// 16 bits + ceil(log2 n) bits of position.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/model/config.h"
#include "core/model/model.h"
#include "core/policy/policy.h"
#include "core/quant/formats/hadamard.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/row_codec.h"
#include "core/quant/watersic.h"

namespace kvscope {

// Reference cache: the full-precision fp16 cache a runtime keeps (values rounded to fp16, f32 compute).
class Fp16KvCache : public KvCache {
 public:
  Fp16KvCache(int layers, int kv_heads, int head_dim, int reserve_tokens = 256);
  int length(int layer) const override { return dense_.length(layer); }
  void append(int layer, const float* k, const float* v, int n) override;
  KvLayerView view(int layer) const override { return dense_.view(layer); }
  void clear() override { dense_.clear(); }
  uint64_t stored_bits() const;  // 16 bits per cached element

 private:
  DenseKvCache dense_;
  int kv_heads_, head_dim_, layers_;
  std::vector<float> scratch_k_, scratch_v_;
};

// The settings one (layer, KV head, kind) runs with after overrides and outlier heads.
struct HeadQuantPlan {
  TensorQuant quant;
  bool channel_blocks = false;  // Axis::Channel: quantized in blocks of block_len tokens
  int block_len = 1;
  int window = 0;               // tokens kept fp16 before a block may be quantized (0 for KIVI keys)
  std::vector<float> smooth;    // K of a smoothed layer: per-channel scales s [head_dim]; empty = none
  double outliers_ratio = 0;    // per quantization group, ceil(ratio/2 n) lowest and highest kept exact
  // Attention-guided bits ($.attention): what the choice was made from (docs/REPLAY.md).
  bool attention_chosen = false;
  double range = 0, tolerance = 0;
  // Method watersic: the streaming coder of this head (shared by the plans' copies); quant.bits is
  // its code width, for the nominal bits.
  std::shared_ptr<const WaterSicCoder> watersic;
  // A registry record's streaming coder (core/quant/row_codec.h): rows leave the window one token at a
  // time through it (the deployment formats). quant.bits is then the nominal bits, rounded.
  std::shared_ptr<const RowCodec> codec;
  // $.rotation: rows are rotated before quantization and the reconstruction rotated back (null = none).
  std::shared_ptr<const formats::HadamardRotation> rotation;
};

struct Calibration;

// Resolves the policy for replay, one plan per (layer, KV head, kind) at index (layer * H + head) * 2 + kind.
// Throws Error naming the JSON path when a decision needs calibration (ranked outlier rules, smooth,
// use_attentions, method watersic) and `calib` is null, or a watersic option cannot stream.
std::vector<HeadQuantPlan> plan_replay_heads(const ModelConfig& cfg, const Policy& policy, const Calibration* calib = nullptr);
// Mean over plans of bits per entry (16 for full precision).
double nominal_bits_of_plans(const std::vector<HeadQuantPlan>& plans);

class QuantizedKvCache : public KvCache {
 public:
  // A policy with calibration mode online that needs calibration waits for calibrate().
  QuantizedKvCache(const ModelConfig& cfg, const Policy& policy, int reserve_tokens = 256);
  // With plans computed beforehand (e.g. once from a text calibration).
  QuantizedKvCache(const ModelConfig& cfg, const Policy& policy, std::vector<HeadQuantPlan> plans, int reserve_tokens = 256);
  ~QuantizedKvCache() override;

  // Plans the heads from a calibration (online mode); its time and c.seconds count as calibration.
  void calibrate(const Calibration& c);
  bool awaiting_calibration() const;
  const std::vector<HeadQuantPlan>& plans() const;

  int length(int layer) const override;
  void append(int layer, const float* k, const float* v, int n) override;
  KvLayerView view(int layer) const override;
  void clear() override;

  // Applies the pending quantization of every layer (what happens after attention).
  void flush();

  // Exact packed size now: codes + scales/zero points + fp16 rows (sinks and residual window).
  uint64_t stored_bits() const;
  // Max of stored_bits() after each flush() and right after each single-token append (the decode
  // step's fp16 token before its quantization), since construction / clear().
  uint64_t peak_stored_bits() const;
  uint64_t elements() const;          // K and V elements cached (tokens * head_dim per head and kind)
  // Sum over quantized elements of (x - x^)^2 and, over all cached elements, of x^2 (x = fp16 value).
  double squared_error() const;
  double squared_norm() const;
  double calibration_seconds() const;  // calibrate() + per-head-global scale calibration
  // WaterSIC: codes clamped into the calibration's fixed width / codes written, since clear().
  uint64_t clamped_codes() const;
  uint64_t coded_elements() const;
  // Tokens of (layer, head, kind) currently kept in fp16 after the sinks (the residual window).
  int residual_fp16_tokens(int layer, int head, char kind) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvscope
