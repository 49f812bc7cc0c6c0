// Method watersic (ALGORITHMS.md §5): keys coded by ZSIC with the query Hessian of their group and
// an entropy-coded rate searched to a target; values fp16 (ModelOpt) or the A = I fallback. Replay
// streams each row through a WaterSicCoder fixed from the calibration's keys and queries.
#include <cmath>

#include "core/dump/kv_dump.h"
#include "core/quant/head_plan.h"
#include "core/quant/method_registry.h"
#include "core/quant/quantized_tensor.h"
#include "core/quant/watersic.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "core/util/json_reader.h"

namespace kvscope {

namespace {

void read_watersic(JsonReader& rw, Policy& p) {
  auto& w = p.watersic;
  w.target_rate = rw.number("target_rate", w.target_rate, 0, 32, true);
  w.kl_aware = rw.boolean("kl_aware", w.kl_aware);
  w.importance_clip = rw.number("importance_clip", w.importance_clip, 0, 1e12, true);
  w.use_lmmse = rw.boolean("use_lmmse", w.use_lmmse);
  w.n_rescaler_iters = rw.integer("n_rescaler_iters", w.n_rescaler_iters, 0, 10000);
  w.sample_frac = rw.number("sample_frac", w.sample_frac, 0, 1);
  w.sort_columns = rw.boolean("sort_columns", w.sort_columns);
  w.seed = static_cast<uint64_t>(rw.integer("seed", static_cast<int>(w.seed), 0, 1 << 30));
  std::string q = rw.str("queries", w.modelopt_queries ? "same_index" : "group");
  if (q != "group" && q != "same_index") rw.err("queries", "must be \"group\" or \"same_index\"");
  w.modelopt_queries = q == "same_index";
  std::string v = rw.str("values", w.values_fp16 ? "fp16" : "watersic");
  if (v != "fp16" && v != "watersic") rw.err("values", "must be \"fp16\" or \"watersic\"");
  w.values_fp16 = v == "fp16";
  rw.reject_unknown();
}

nlohmann::json watersic_json(const Policy& p) {
  const auto& w = p.watersic;
  return {{"target_rate", w.target_rate}, {"kl_aware", w.kl_aware}, {"importance_clip", w.importance_clip},
          {"use_lmmse", w.use_lmmse}, {"n_rescaler_iters", w.n_rescaler_iters}, {"sample_frac", w.sample_frac},
          {"sort_columns", w.sort_columns}, {"seed", w.seed},
          {"queries", w.modelopt_queries ? "same_index" : "group"}, {"values", w.values_fp16 ? "fp16" : "watersic"}};
}

void check_dump(const KvDump& dump, const Policy& policy) {
  if (!dump.has_q()) throw Error("dump has no queries (layers.{L}.q); watersic needs Q for the key Hessian");
  if (policy.residual > 0 || policy.sink_tokens > 0)  // the batch pass codes every token; replay streams them
    throw Error(fmt::format("policy: $.{}: watersic on a dump codes every token (residual and sink_tokens apply to replay only)",
                            policy.residual > 0 ? "residual" : "sink_tokens"));
  if (std::string problem = check_watersic_options(watersic_options_of(policy.watersic)); !problem.empty())
    throw Error("policy: $.watersic: " + problem);
}

SliceResult fp16_values(const SliceInput& in) {
  const size_t n = static_cast<size_t>(in.tokens) * in.head_dim;
  for (size_t e = 0; e < n; ++e) in.out[e] = round_to_f16(in.x[e]);
  SliceResult r;
  r.bits = r.fixed_width_bits = 16ull * n;
  r.stored_bytes = 2 * n;
  r.full_precision = true;
  return r;
}

// Entropy-coded size (the rate WaterSIC reports) plus the column permutation, a per-cache constant;
// stored bytes: the codes packed at their fixed width, 16-bit row and column scales, the permutation.
SliceResult state_result(const WaterSicState& st) {
  SliceResult r;
  r.bits = static_cast<uint64_t>(std::ceil(st.entropy_bits())) + st.perm_bits();
  r.fixed_width_bits = st.fixed_width_bits() + st.perm_bits();
  r.static_bits = st.perm_bits();
  r.stored_bytes = packed_bytes(st.codes.size(), st.code_width) + st.side_bits() / 8 + (st.perm_bits() + 7) / 8;
  r.calibration_seconds = st.seconds;
  return r;
}

SliceResult quantize_slice(const SliceInput& in) {
  const HeadPlan& p = *in.plan;
  if (p.kind == 'v' && in.policy->watersic.values_fp16) return fp16_values(in);
  const WaterSicOptions wo = watersic_options_of(in.policy->watersic);
  WaterSicState st;
  if (p.kind == 'k') {
    st = watersic_quantize_key_head(*in.dump, p.layer, p.head, wo);
  } else {
    std::vector<double> v(in.x, in.x + static_cast<size_t>(in.tokens) * in.head_dim);
    st = watersic_quantize_values(v.data(), in.tokens, in.head_dim, wo);
  }
  std::vector<double> rec = reconstruct(st);
  for (size_t e = 0; e < rec.size(); ++e) in.out[e] = static_cast<float>(rec[e]);
  return state_result(st);
}

// Reference: the batch pass with its streaming coder, then every row coded again on its own by the
// coder and decoded (the replay path); the coder reproduces the batch codes (watersic.h), so this
// must equal quantize_slice. Needs kl_aware off and no rescaler (the coder's limits).
SliceResult quantize_slice_reference(const SliceInput& in) {
  const HeadPlan& p = *in.plan;
  if (p.kind == 'v' && in.policy->watersic.values_fp16) return fp16_values(in);
  const WaterSicOptions wo = watersic_options_of(in.policy->watersic);
  const int T = in.tokens, D = in.head_dim;
  std::vector<double> x(in.x, in.x + static_cast<size_t>(T) * D);
  WaterSicCoder coder;
  WaterSicState st;
  if (p.kind == 'k') {
    const int G = in.dump->shape.group();
    std::vector<const float*> queries;
    for (int j = p.head * G; j < (p.head + 1) * G; ++j) queries.push_back(in.dump->q(p.layer, j));
    st = watersic_quantize_keys(x.data(), T, D, queries, T, wo, &coder);
  } else {
    st = watersic_quantize_values(x.data(), T, D, wo, &coder);
  }
  std::vector<int32_t> z(D);
  std::vector<double> rec(D);
  for (int t = 0; t < T; ++t) {
    coder.code_row(&x[static_cast<size_t>(t) * D], z.data());
    coder.decode_row(z.data(), rec.data());
    for (int j = 0; j < D; ++j) in.out[static_cast<size_t>(t) * D + j] = static_cast<float>(rec[j]);
  }
  return state_result(st);
}

// Replay: one streaming coder per (layer, KV head) for K (and V with "values": "watersic", the
// A = I fallback) from the calibration's rows and the group's queries.
std::vector<HeadQuantPlan> plan_replay(const ModelConfig& cfg, const Policy& policy, const Calibration* calib,
                                       const std::string& where) {
  const WatersicPolicy& wp = policy.watersic;
  if (wp.kl_aware)
    fail(where, "$.watersic.kl_aware: not in replay (row importance needs the queries that will read the row, which a streaming cache has not seen)");
  if (wp.n_rescaler_iters > 0)
    fail(where, "$.watersic.n_rescaler_iters: must be 0 in replay (the rescaler's per-row factors need the whole key matrix)");
  if (wp.modelopt_queries)
    fail(where, "$.watersic.queries: \"same_index\" (ModelOpt parity mode, float64 side info) is not replayed; use \"group\"");
  if (!calib) {
    if (policy.calibration.mode == CalibrationSpec::Mode::None)
      fail(where, "$.calibration.mode: method watersic needs \"text\" or \"online\" in replay (the key Hessian comes from calibration queries)");
    fail(where, "method watersic needs its calibration before the cache is planned");
  }
  const int L = cfg.num_layers, H = cfg.num_kv_heads, D = cfg.head_dim, G = cfg.group();
  if (calib->layers != L || calib->kv_heads != H || calib->head_dim != D || calib->q_heads != cfg.num_heads)
    fail(where, "the calibration was taken on a model of another shape");
  const WaterSicOptions wo = watersic_options_of(wp);
  const int T = calib->tokens;
  std::vector<HeadQuantPlan> plans(static_cast<size_t>(L) * H * 2);
  std::vector<double> x(static_cast<size_t>(T) * D);
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h)
      for (int kind = 0; kind < 2; ++kind) {
        HeadQuantPlan& p = plans[(static_cast<size_t>(l) * H + h) * 2 + kind];
        p.window = policy.residual;
        p.quant.axis = Axis::Token;
        if (kind == 1 && wp.values_fp16) {
          p.quant.full_precision = true;
          continue;
        }
        const float* src = &(kind == 0 ? calib->k : calib->v)[l][static_cast<size_t>(h) * T * D];
        std::copy(src, src + x.size(), x.begin());
        auto coder = std::make_shared<WaterSicCoder>();
        try {
          if (kind == 0) {
            std::vector<const float*> queries;  // all G query heads of the group (HF repeat_kv: j -> j / G)
            for (int j = h * G; j < (h + 1) * G; ++j) queries.push_back(&calib->q[l][static_cast<size_t>(j) * T * D]);
            watersic_quantize_keys(x.data(), T, D, queries, T, wo, coder.get());
          } else {
            watersic_quantize_values(x.data(), T, D, wo, coder.get());
          }
        } catch (const Error& e) {
          fail(where, "$.watersic: layer {} KV head {} {}: {}", l, h, kind == 0 ? "K" : "V", e.what());
        }
        p.quant.bits = coder->code_width;
        p.watersic = std::move(coder);
      }
  return plans;
}

}  // namespace

const QuantMethod& watersic_method() {
  static const QuantMethod m = [] {
    QuantMethod m;
    m.name = "watersic";
    m.description = "WaterSIC/ZSIC: query-Hessian-aware integer key codes, entropy-coded rate searched to a target";
    m.presets = {"watersic-2", "watersic-2-online"};
    m.set_defaults = [](Policy& p) { p.v.full_precision = true; };  // keys by ZSIC, values fp16 unless it says otherwise
    m.options_key = "watersic";
    m.read_options = read_watersic;
    m.options_json = watersic_json;
    m.validate = [](const Policy& p, JsonReader& r) {
      // residual and sink_tokens are replay's streaming window (the dump path refuses them).
      if (!p.overrides.empty() || !p.rules.empty() || p.attention.use_attentions ||
          p.outliers.rule != OutlierSelect::Rule::None || p.smooth)
        r.err("method", "watersic policies take no overrides, outlier heads or smoothing here");
    };
    m.set_rate = [](nlohmann::json& pj, double rate) { pj["watersic"]["target_rate"] = rate; };
    m.needs_queries = true;
    m.needs_calibration = true;  // the key Hessian
    m.calibration_tokens_per_head_dim = 4;
    m.check_dump = check_dump;
    m.quantize_slice = quantize_slice;
    m.quantize_slice_reference = quantize_slice_reference;
    m.entropy_coded = true;
    m.plan_replay = plan_replay;
    m.test_policy = [](int bits) {
      if (bits > 8) return std::string();
      return fmt::format(R"({{"method": "watersic", "watersic": {{"target_rate": {}, "values": "watersic"}}}})", bits);
    };
    return m;
  }();
  return m;
}

}  // namespace kvscope
