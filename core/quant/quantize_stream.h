#pragma once
// quantize_dump one layer at a time, straight from the memory-mapped file: the methods whose
// registry record quantizes a slice with quantize_tensor_slice (fp16, uniform, KIVI, kvmix; ranked
// outlier heads come from a first pass over the keys; KVSmooth per layer), run the streaming
// kernels on each layer's stored F16/BF16/F32 data, and attention metrics follow per layer, so
// peak memory is about one layer of reconstruction plus the sampled query rows, whatever the
// dump's size. The report is bit-identical to quantize_dump(load_dump(path), ...) (tested), except
// wall_seconds. Other policies need statistics over the whole dump: use quantize_dump.
#include "core/dump/dump_reader.h"
#include "core/quant/quantize_dump.h"

namespace kvscope {

// Whether quantize_dump_streamed handles this policy.
bool quantizes_streamed(const Policy& policy);

// Throws Error for policies !quantizes_streamed, Cancelled when opts.cancel is set.
QuantizeReport quantize_dump_streamed(const DumpReader& dump, const Policy& policy, const QuantizeOptions& opts = {});

}  // namespace kvscope
