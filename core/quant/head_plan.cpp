#include "core/quant/head_plan.h"

#include <algorithm>
#include <numeric>

#include "core/metrics/tensor_error.h"
#include "core/quant/method_registry.h"
#include "core/quant/quantized_tensor.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

int residual_tokens(const Policy& p, char kind, int T, int layer) {
  const int R = residual_of(p, layer);
  if (R <= 0) return 0;
  if (p.method->key_residual_blocks && kind == 'k') return T < R ? T : T % R;  // KIVI: keys flush in blocks of R
  return std::min(T, R);                                                 // values slide by one
}

TensorQuant strat1_spec() {
  TensorQuant q;
  q.bits = 8;
  q.symmetric = true;
  q.inverse_scale = true;
  q.scale_dtype = DType::F32;
  q.axis = Axis::Head;
  return q;
}

std::vector<double> strat1_k_mse(const KvDump& dump) {
  const auto& s = dump.shape;
  const TensorQuant q = strat1_spec();
  std::vector<double> mse(static_cast<size_t>(s.layers) * s.kv_heads);
  parallel_for(static_cast<int64_t>(mse.size()), [&](int64_t i) {
    int l = static_cast<int>(i / s.kv_heads), h = static_cast<int>(i % s.kv_heads);
    const float* x = dump.k(l, h);
    QuantizedTensor t = quantize_tensor(x, s.tokens, s.head_dim, q);
    std::vector<float> y(dump.head_elems());
    t.dequantize(y.data());
    ErrorSums e;
    e.add(x, y.data(), y.size());
    mse[i] = e.mse();
  });
  return mse;
}

std::vector<std::pair<int, int>> rank_outlier_heads(const std::vector<double>& mse, int kv_heads, const OutlierSelect& rule) {
  using Rule = OutlierSelect::Rule;
  std::vector<std::pair<int, int>> out;
  const int H = kv_heads;
  std::vector<size_t> order(mse.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return mse[a] > mse[b]; });
  size_t take = 0;
  if (rule.rule == Rule::Count) {
    take = std::min<size_t>(rule.count, order.size());
  } else if (rule.rule == Rule::MseShare) {
    double total = std::accumulate(mse.begin(), mse.end(), 0.0), acc = 0;
    while (take < order.size() && acc < rule.share * total) acc += mse[order[take++]];
  } else if (rule.rule == Rule::MseOverMedian && !mse.empty()) {  // heads whose error stands far above the typical head
    std::vector<double> sorted = mse;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    double median = sorted[sorted.size() / 2];
    while (take < order.size() && mse[order[take]] >= rule.ratio * median && mse[order[take]] > 0) ++take;
  }
  for (size_t i = 0; i < take; ++i) out.emplace_back(static_cast<int>(order[i] / H), static_cast<int>(order[i] % H));
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::pair<int, int>> select_outlier_heads(const KvDump& dump, const OutlierSelect& rule) {
  using Rule = OutlierSelect::Rule;
  if (rule.rule == Rule::None) return {};
  if (rule.rule == Rule::List) {
    auto out = rule.heads;
    std::sort(out.begin(), out.end());
    return out;
  }
  return rank_outlier_heads(strat1_k_mse(dump), dump.shape.kv_heads, rule);
}

std::vector<HeadPlan> plan_heads(const KvDump& dump, const Policy& policy, const std::vector<double>* k_mse) {
  const auto& s = dump.shape;
  check_residual_layers(policy, s.layers);
  for (size_t i = 0; i < policy.outliers.heads.size(); ++i) {
    auto [l, h] = policy.outliers.heads[i];
    if (l >= s.layers || h >= s.kv_heads)
      fail("policy", "$.outlier_heads.heads[{}]: [{}, {}] is outside the dump ({} layers x {} KV heads)", i, l, h,
           s.layers, s.kv_heads);
  }
  for (size_t i = 0; i < policy.overrides.size(); ++i) {
    for (int l : policy.overrides[i].layers)
      if (l >= s.layers) fail("policy", "$.overrides[{}].layers: layer {} is outside the dump ({} layers)", i, l, s.layers);
    for (int h : policy.overrides[i].heads)
      if (h >= s.kv_heads) fail("policy", "$.overrides[{}].heads: head {} is outside the dump ({} KV heads)", i, h, s.kv_heads);
  }
  using Rule = OutlierSelect::Rule;
  const bool ranked = policy.outliers.rule != Rule::None && policy.outliers.rule != Rule::List;
  auto outliers = ranked && k_mse ? rank_outlier_heads(*k_mse, s.kv_heads, policy.outliers)
                                  : select_outlier_heads(dump, policy.outliers);
  std::vector<HeadPlan> plans;
  plans.reserve(static_cast<size_t>(s.layers) * s.kv_heads * 2);
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h)
      for (char kind : {'k', 'v'}) {
        HeadPlan p;
        p.layer = l;
        p.head = h;
        p.kind = kind;
        p.quant = kind == 'k' ? policy.k : policy.v;
        for (const auto* list : {&policy.rules, &policy.overrides})  // rules first, overrides win
          for (const auto& o : *list)
            if (override_matches(o, l, h, kind, policy.head_group_size)) p.quant = apply_override(p.quant, o);
        if (kind == 'k' && std::binary_search(outliers.begin(), outliers.end(), std::make_pair(l, h)))
          p.quant.full_precision = true;
        p.fp_tail = residual_tokens(policy, kind, s.tokens, l);
        p.fp_head = std::min(policy.sink_tokens, s.tokens - p.fp_tail);
        plans.push_back(p);
      }
  return plans;
}

}  // namespace kvscope
