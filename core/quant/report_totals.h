#pragma once
// The report's aggregates, formed one way for every quantize path (quantize_dump,
// quantize_dump_streamed, the GUI's live report), so the three agree bit for bit.
#include <cstdint>
#include <utility>
#include <vector>

#include "core/metrics/attention.h"
#include "core/metrics/tensor_error.h"
#include "core/policy/policy.h"
#include "core/quant/report.h"

namespace kvscope {

// A report naming the method, the policy (name and canonical JSON), the dump's shape and model.
QuantizeReport report_header(const Policy& policy, const DumpShape& shape, const std::string& model_id);

// Tensor aggregates: bits per element and bytes per token from r.per_head (kind, bits, elements),
// K / V NMSE and cosine from the K and V error sums (merged in slice order by the caller),
// `static_bits` the per-cache constants. r.shape must be set.
void fill_report_totals(QuantizeReport& r, const ErrorSums& k, const ErrorSums& v, uint64_t static_bits);

// K and V error sums merged in slice order (sums[i] belongs to per_head[i]).
void merge_kv_sums(const std::vector<HeadMetrics>& per_head, const std::vector<ErrorSums>& sums, ErrorSums* k,
                   ErrorSums* v);

// r.attention and the attention aggregates from the measured (layer, KV head) pairs, given as
// (layer * kv_heads + head, sums) in ascending order; r.attn_queries = positions. Nothing when
// `measured` is empty.
void fill_attention_totals(QuantizeReport& r, const std::vector<std::pair<size_t, AttentionSums>>& measured, int positions);

}  // namespace kvscope
