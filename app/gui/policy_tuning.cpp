#include "app/gui/policy_tuning.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/quant/method_registry.h"
#include "core/quant/head_plan.h"

namespace kvscope::gui {

namespace {

// The override as written says "fp16": true (read from its JSON, which is what round-trips).
bool single_head_fp16(const PolicyOverride& o, int layer, int head, char kind) {
  bool kind_ok = kind == 'k' ? (o.k && !o.v) : (o.v && !o.k);
  if (!kind_ok || o.layers != std::vector<int>{layer} || o.heads != std::vector<int>{head}) return false;
  nlohmann::json j = nlohmann::json::parse(o.json, nullptr, false);
  return j.is_object() && j.value("fp16", false) == true;
}

}  // namespace

bool head_kept_fp16(const Policy& p, int layer, int head, char kind) {
  for (const auto& o : p.overrides)
    if (single_head_fp16(o, layer, head, kind)) return true;
  return false;
}

std::vector<std::pair<int, int>> fp16_heads(const Policy& p, char kind) {
  std::vector<std::pair<int, int>> out;
  for (const auto& o : p.overrides)
    if (o.layers.size() == 1 && o.heads.size() == 1 && single_head_fp16(o, o.layers[0], o.heads[0], kind))
      out.emplace_back(o.layers[0], o.heads[0]);
  return out;
}

void toggle_head_fp16(Policy& p, int layer, int head, char kind) {
  nlohmann::json j = policy_to_json(p);
  nlohmann::json overrides = nlohmann::json::array();
  bool removed = false;
  for (size_t i = 0; i < p.overrides.size(); ++i) {
    if (!removed && single_head_fp16(p.overrides[i], layer, head, kind)) {
      removed = true;
      continue;
    }
    overrides.push_back(nlohmann::json::parse(p.overrides[i].json));
  }
  if (!removed) {
    nlohmann::json o = nlohmann::json::object();
    o["layers"] = nlohmann::json::array({layer});
    o["heads"] = nlohmann::json::array({head});
    o["kind"] = std::string(1, kind);
    o["fp16"] = true;
    overrides.push_back(o);
  }
  j["overrides"] = overrides;
  p = parse_policy(j, "policy editor");
}

double tensor_bits_per_element(const TensorQuant& q, int tokens, int head_dim) {
  if (q.full_precision) return 16.0;
  double axis_len = q.axis == Axis::Token ? head_dim : q.axis == Axis::Channel ? tokens : double(tokens) * head_dim;
  double group = q.group_size > 0 && q.axis != Axis::Head ? std::min<double>(q.group_size, axis_len) : axis_len;
  double scale_bits = q.scale_dtype == DType::F32 ? 32 : 16;
  double zero_bits = q.symmetric ? 0 : q.integer_zero_point ? q.bits : scale_bits;
  return q.bits + (scale_bits + zero_bits) / group;
}

CostEstimate estimate_cost(const Policy& p, const KvDump& dump) {
  CostEstimate e;
  const DumpShape& s = dump.shape;
  if (s.layers <= 0 || s.kv_heads <= 0 || s.tokens <= 0 || s.head_dim <= 0) return e;
  // Data-dependent outlier rules would quantize the whole dump at every slider move; estimate
  // without them (List is exact, Count's cost is exact: `count` K heads become fp16).
  Policy q = p;
  using Rule = OutlierSelect::Rule;
  if (q.outliers.rule != Rule::List) q.outliers.rule = Rule::None;
  double total_bits = 0, k_bits = 0;
  for (const HeadPlan& h : plan_heads(dump, q)) {
    double b;
    if (p.method->keeps_fp16 || h.quant.full_precision) {
      b = 16;
    } else {
      int fp = std::min(s.tokens, h.fp_head + h.fp_tail);
      int quantized = s.tokens - fp;
      b = quantized > 0 ? (quantized * tensor_bits_per_element(h.quant, quantized, s.head_dim) + fp * 16.0) / s.tokens : 16;
    }
    total_bits += b;
    if (h.kind == 'k') k_bits += b;
  }
  int heads = s.layers * s.kv_heads;
  if (p.outliers.rule == Rule::Count && p.outliers.count > 0) {
    double avg_k = k_bits / heads;
    total_bits += std::min(p.outliers.count, heads) * (16 - avg_k);
  }
  e.bits_per_element = total_bits / (2.0 * heads);
  e.bytes_per_token = total_bits * s.head_dim / 8.0;
  return e;
}

}  // namespace kvscope::gui
