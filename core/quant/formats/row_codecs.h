#pragma once
// Streaming row codecs (core/quant/row_codec.h) of the deployment formats, for the replay cache.
// Each one reproduces its dump-path round trip (slice_codecs.h, kvquant.h) row by row: for the same
// rows and the same parameters (scales, channel sets, seeds, calibration) the decoded values are
// identical, and the bits equal the dump path's per-row bits (static bits once per head).
// Byte stores: ggml rows, FP8 codes, NVFP4 nibbles + block scales and QJL sign bits are the packed
// bytes the runtime keeps (decoded from those bytes); TurboQuant and KVQuant count their exact bits
// (their layouts are not byte-aligned per row) and append nothing.
#include <memory>

#include "core/quant/formats/fp8.h"
#include "core/quant/formats/ggml_blocks.h"
#include "core/quant/formats/kvquant.h"
#include "core/quant/formats/turboquant.h"
#include "core/quant/row_codec.h"

namespace kvscope::formats {

// llama.cpp block type: one ggml row per token (head_dim a multiple of 32).
std::shared_ptr<const RowCodec> ggml_row_codec(GgmlType t, int head_dim);
// FP8 codes with a fixed fp32 scale; the scale is this head's static bits when count_scale (a per
// layer x kind scale is counted by one head of the layer).
std::shared_ptr<const RowCodec> fp8_row_codec(Fp8Format f, int head_dim, float scale, bool count_scale);
// NVFP4 along head_dim (a multiple of 16) with a fixed fp32 tensor scale (counted when count_scale).
std::shared_ptr<const RowCodec> nvfp4_row_codec(int head_dim, float global_scale, bool count_scale);
// TurboQuant (split or not); static bits = the channel mask.
std::shared_ptr<const RowCodec> turboquant_row_codec(std::shared_ptr<const TurboQuantSplit> tq);
// QJL key sketch: m sign bits + fp16 norm per row.
std::shared_ptr<const RowCodec> qjl_row_codec(std::shared_ptr<const Qjl> q, int head_dim);
// KVQuant head `head` of a layer x kind calibration. Keys with pre_rope: the cache's post-RoPE rows are
// rotated back to pre-RoPE at their positions (rope_theta, rotate-half pairs), quantized, and RoPE is
// re-applied to the reconstruction. Rows at positions < opt.fp16_tokens stay fp16. Static bits: the
// head's channel ranges (keys) and, when count_codebook, the layer x kind codebook.
std::shared_ptr<const RowCodec> kvquant_row_codec(std::shared_ptr<const KvQuantCalibration> cal, int head,
                                                  const KvQuantOptions& opt, bool pre_rope, double rope_theta,
                                                  bool count_codebook);

}  // namespace kvscope::formats
