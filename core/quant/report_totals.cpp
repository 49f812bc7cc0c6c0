#include "core/quant/report_totals.h"

#include "core/quant/method_registry.h"

namespace kvscope {

QuantizeReport report_header(const Policy& policy, const DumpShape& shape, const std::string& model_id) {
  QuantizeReport r;
  r.method = method_name(policy.method);
  r.policy_name = policy.name;
  r.policy_json = canonical_policy_json(policy);
  r.shape = shape;
  r.model_id = model_id;
  return r;
}

void merge_kv_sums(const std::vector<HeadMetrics>& per_head, const std::vector<ErrorSums>& sums, ErrorSums* k,
                   ErrorSums* v) {
  for (size_t i = 0; i < per_head.size(); ++i) (per_head[i].kind == 'k' ? *k : *v).merge(sums[i]);
}

void fill_report_totals(QuantizeReport& r, const ErrorSums& k, const ErrorSums& v, uint64_t static_bits) {
  const DumpShape& s = r.shape;
  uint64_t kbits = 0, vbits = 0, kel = 0, vel = 0;
  for (const HeadMetrics& h : r.per_head) {
    (h.kind == 'k' ? kbits : vbits) += h.bits;
    (h.kind == 'k' ? kel : vel) += h.elements;
  }
  r.k_nmse = k.nmse();
  r.v_nmse = v.nmse();
  r.k_cos = k.cos();
  r.v_cos = v.cos();
  r.k_bits_per_element = kel ? double(kbits) / kel : 0;
  r.v_bits_per_element = vel ? double(vbits) / vel : 0;
  r.bits_per_element = (kel + vel) ? double(kbits + vbits) / double(kel + vel) : 0;
  r.static_bytes = double(static_bits) / 8.0;
  r.bytes_per_token = (double(kbits + vbits - static_bits) / 8.0) / s.tokens;
  r.fp16_bytes_per_token = double(s.layers) * s.kv_heads * s.head_dim * 2 /*K,V*/ * 2 /*bytes*/;
}

void fill_attention_totals(QuantizeReport& r, const std::vector<std::pair<size_t, AttentionSums>>& measured, int positions) {
  if (measured.empty()) return;
  const int H = r.shape.kv_heads;
  AttentionSums all;
  for (const auto& [i, sums] : measured) {
    r.attention.push_back(sums.metrics(static_cast<int>(i / H), static_cast<int>(i % H)));
    all.merge(sums);
  }
  r.attn_queries = positions;
  const AttentionMetrics agg = all.metrics(-1, -1);
  r.attn_cos_mean = agg.out_cos_mean;
  r.attn_cos_min = agg.out_cos_min;
  r.attn_nmse = agg.out_nmse;
  r.attn_kl_mean = agg.kl_mean;
}

}  // namespace kvscope
