// Replay plans of the deployment-format records: each (layer, KV head, kind) gets its format's
// streaming RowCodec (core/quant/formats/row_codecs.h) with the same parameters the dump path uses,
// the data-dependent ones taken from the replay calibration instead of the dump:
//   fp8    scale "tensor": amax of the layer x kind's calibration rows / max_finite (counted once, head 0);
//          "head": the head's amax; "fixed": 1.0 (no calibration);
//   nvfp4  tensor scale amax / (6 * 448) from the layer x kind's calibration rows (counted once);
//   turboquant  2.5/3.5 bits: the head's head_dim/4 largest-RMS calibration channels; same seeds;
//   kvquant  codebook (k-means + Q-Norm) and key channel ranges from the layer x kind's calibration rows
//          (keys rotated back to pre-RoPE at their positions), counted once per layer / head as the dump path;
//   ggml, qjl  nothing data-dependent.
// With $.rotation, calibration rows are rotated like the rows the codec will see.
#include "core/quant/methods/formats_replay.h"

#include <cmath>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/model/config.h"
#include "core/quant/formats/hadamard.h"
#include "core/quant/formats/nvfp4.h"
#include "core/quant/formats/row_codecs.h"
#include "core/replay/calibration.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"

namespace kvscope {

using namespace formats;

namespace {

nlohmann::json options_of(const Policy& p) {
  return p.method_options.empty() ? nlohmann::json::object() : nlohmann::json::parse(p.method_options);
}

using CodecFn = std::function<std::shared_ptr<const RowCodec>(int layer, int head, int kind)>;

// Plans with one codec per head (null codec = the head stays fp16), window = the layer's residual.
std::vector<HeadQuantPlan> codec_plans(const ModelConfig& cfg, const Policy& p, int nominal_bits, const CodecFn& make) {
  const int L = cfg.num_layers, H = cfg.num_kv_heads;
  std::vector<HeadQuantPlan> plans(static_cast<size_t>(L) * H * 2);
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H; ++h)
      for (int kind = 0; kind < 2; ++kind) {
        HeadQuantPlan& q = plans[(static_cast<size_t>(l) * H + h) * 2 + kind];
        q.window = residual_of(p, l);
        q.quant.axis = Axis::Token;
        q.quant.bits = nominal_bits;
        q.codec = make(l, h, kind);
        q.quant.full_precision = !q.codec;
      }
  return plans;
}

const Calibration& need_calibration(const ModelConfig& cfg, const Policy& p, const Calibration* c, const std::string& where,
                                    const std::string& what) {
  if (!c) {
    if (p.calibration.mode == CalibrationSpec::Mode::None)
      fail(where, "$.calibration.mode: {} needs \"text\" or \"online\" in replay (it is measured on calibration data)", what);
    fail(where, "{} needs its calibration before the cache is planned", what);
  }
  if (c->layers != cfg.num_layers || c->kv_heads != cfg.num_kv_heads || c->head_dim != cfg.head_dim)
    fail(where, "the calibration was taken on a model of another shape");
  return *c;
}

// The calibration rows [kv_heads, T, D] of one layer x kind as the codec sees them: keys rotated back
// to pre-RoPE when pre_rope, rotated by $.rotation when it applies.
std::vector<float> calib_rows(const Calibration& c, const ModelConfig& cfg, const Policy& p, int l, int kind, bool pre_rope) {
  std::vector<float> x = (kind == 0 ? c.k : c.v)[l];
  const size_t per_head = static_cast<size_t>(c.tokens) * c.head_dim;
  if (pre_rope)
    for (int h = 0; h < c.kv_heads; ++h) apply_rope(x.data() + h * per_head, c.tokens, c.head_dim, cfg.rope_theta, 0, true);
  if (p.rotation && p.rotation->applies("kv"[kind]))
    HadamardRotation(c.head_dim, p.rotation->seed_of("kv"[kind])).rotate(x.data(), x.size() / c.head_dim);
  return x;
}

}  // namespace

// ---- ggml ----

std::vector<HeadQuantPlan> ggml_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration*, const std::string& where) {
  const nlohmann::json o = options_of(p);
  std::shared_ptr<const RowCodec> codec[2];
  int bits = 8;
  for (int kind = 0; kind < 2; ++kind) {
    const char* key = kind == 0 ? "k_type" : "v_type";
    const std::string name = o.contains(key) ? o.at(key).get<std::string>() : o.value("type", std::string("q4_0"));
    GgmlType t;
    if (!parse_ggml_type(name, &t)) fail(where, "$.ggml.{}: must be one of q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl", key);
    if (cfg.head_dim % kGgmlBlock) fail(where, "{}: head_dim {} is not a multiple of ggml's block of 32", name, cfg.head_dim);
    codec[kind] = ggml_row_codec(t, cfg.head_dim);
    bits = std::min(bits, static_cast<int>(ggml_bits_per_element(t)));
  }
  return codec_plans(cfg, p, bits, [&](int, int, int kind) { return codec[kind]; });
}

// ---- fp8 ----

bool fp8_needs_calibration(const Policy& p) { return options_of(p).value("scale", std::string("tensor")) != "fixed"; }

std::vector<HeadQuantPlan> fp8_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration* c, const std::string& where) {
  const nlohmann::json o = options_of(p);
  Fp8Format f = Fp8Format::E4M3;
  if (o.contains("format")) parse_fp8_format(o.at("format").get<std::string>(), &f);
  const std::string mode = o.value("scale", std::string("tensor"));
  const int H = cfg.num_kv_heads;
  std::vector<float> scales(static_cast<size_t>(cfg.num_layers) * H * 2, 1.0f);
  if (mode != "fixed") {
    const Calibration& cal = need_calibration(cfg, p, c, where, "method fp8 with scale \"" + mode + "\"");
    const size_t per_head = static_cast<size_t>(cal.tokens) * cal.head_dim;
    for (int l = 0; l < cfg.num_layers; ++l)
      for (int kind = 0; kind < 2; ++kind) {
        const std::vector<float> x = calib_rows(cal, cfg, p, l, kind, false);
        for (int h = 0; h < H; ++h) {
          const float amax = mode == "head" ? abs_max(x.data() + h * per_head, per_head) : abs_max(x.data(), x.size());
          scales[(static_cast<size_t>(l) * H + h) * 2 + kind] = fp8_scale_from_amax(f, amax);
        }
      }
  }
  return codec_plans(cfg, p, 8, [&](int l, int h, int kind) {
    const bool count = mode == "head" || (mode == "tensor" && h == 0);  // a per-tensor scale once per layer x kind
    return fp8_row_codec(f, cfg.head_dim, scales[(static_cast<size_t>(l) * H + h) * 2 + kind], count);
  });
}

// ---- nvfp4 ----

std::vector<HeadQuantPlan> nvfp4_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration* c, const std::string& where) {
  if (cfg.head_dim % kNvfp4Block) fail(where, "nvfp4: head_dim {} is not a multiple of NVFP4's block of 16", cfg.head_dim);
  const Calibration& cal = need_calibration(cfg, p, c, where, "method nvfp4 (its fp32 tensor scale)");
  std::vector<float> g(static_cast<size_t>(cfg.num_layers) * 2);
  for (int l = 0; l < cfg.num_layers; ++l)
    for (int kind = 0; kind < 2; ++kind) {
      const std::vector<float> x = calib_rows(cal, cfg, p, l, kind, false);
      g[static_cast<size_t>(l) * 2 + kind] = nvfp4_global_scale(abs_max(x.data(), x.size()));
    }
  return codec_plans(cfg, p, 4, [&](int l, int h, int kind) {
    return nvfp4_row_codec(cfg.head_dim, g[static_cast<size_t>(l) * 2 + kind], h == 0);
  });
}

// ---- turboquant / qjl ----

bool turboquant_needs_calibration(const Policy& p) {
  const double bits = options_of(p).value("bits", 3.5);
  return bits != std::floor(bits);
}

std::vector<HeadQuantPlan> turboquant_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration* c,
                                                   const std::string& where) {
  const nlohmann::json o = options_of(p);
  const double bits = o.value("bits", 3.5);
  const uint64_t seed = o.value("seed", uint64_t(0));
  const bool split = bits != std::floor(bits);
  const int bb = static_cast<int>(std::floor(bits)), ob = bb + 2, D = cfg.head_dim;
  const Calibration* cal = split ? &need_calibration(cfg, p, c, where, "method turboquant at 2.5/3.5 bits (its outlier channels)") : nullptr;
  std::vector<float> rows[2];
  int rows_layer = -1;
  return codec_plans(cfg, p, bb, [&](int l, int h, int kind) {
    std::vector<int> oc;
    if (split) {
      if (rows_layer != l) {
        for (int k = 0; k < 2; ++k) rows[k] = calib_rows(*cal, cfg, p, l, k, false);
        rows_layer = l;
      }
      oc = top_rms_channels(rows[kind].data() + static_cast<size_t>(h) * cal->tokens * D, size_t(cal->tokens), D, D / 4);
    }
    const bool qjl = kind == 0 && o.value("qjl_keys", false);
    auto tq = std::make_shared<const TurboQuantSplit>(D, oc, ob, bb, qjl, seed + 2 * (l * 1000 + h) + kind);
    return turboquant_row_codec(std::move(tq));
  });
}

std::vector<HeadQuantPlan> qjl_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration*, const std::string&) {
  const nlohmann::json o = options_of(p);
  const int per_dim = o.value("sketch_per_dim", 2);
  const uint64_t seed = o.value("seed", uint64_t(0));
  return codec_plans(cfg, p, 2, [&](int l, int h, int kind) -> std::shared_ptr<const RowCodec> {
    if (kind == 1) return nullptr;  // QJL is a key sketch; values stay fp16
    return qjl_row_codec(std::make_shared<const Qjl>(cfg.head_dim, per_dim * cfg.head_dim, seed + l * 1000 + h), cfg.head_dim);
  });
}

// ---- kvquant ----

std::vector<HeadQuantPlan> kvquant_replay_plans(const ModelConfig& cfg, const Policy& p, const Calibration* c, const std::string& where) {
  const nlohmann::json o = options_of(p);
  KvQuantOptions ko;
  ko.bits = o.value("bits", 4);
  ko.outlier_fraction = o.value("outlier_fraction", 0.0);
  ko.fp16_tokens = o.value("fp16_tokens", 1);
  ko.q_norm = o.value("q_norm", true);
  const bool pre_rope = o.value("pre_rope", true);
  if (pre_rope && cfg.rope_scaling != RopeScaling::None)
    fail(where, "$.kvquant.pre_rope: the model's RoPE scaling is not re-applied by the cache; set pre_rope to false");
  const Calibration& cal = need_calibration(cfg, p, c, where, "method kvquant (its codebooks and key ranges)");
  const int H = cfg.num_kv_heads;
  std::vector<std::shared_ptr<const KvQuantCalibration>> cals(static_cast<size_t>(cfg.num_layers) * 2);
  for (int l = 0; l < cfg.num_layers; ++l)
    for (int kind = 0; kind < 2; ++kind) {
      const std::vector<float> x = calib_rows(cal, cfg, p, l, kind, kind == 0 && pre_rope);
      try {
        cals[static_cast<size_t>(l) * 2 + kind] =
            std::make_shared<const KvQuantCalibration>(kvquant_calibrate(x.data(), H, cal.tokens, cfg.head_dim, kind == 0, ko));
      } catch (const Error& e) {
        fail(where, "$.kvquant: layer {} {}: {}", l, kind == 0 ? "K" : "V", e.what());
      }
    }
  return codec_plans(cfg, p, ko.bits, [&](int l, int h, int kind) {
    return kvquant_row_codec(cals[static_cast<size_t>(l) * 2 + kind], h, ko, kind == 0 && pre_rope, cfg.rope_theta, h == 0);
  });
}

}  // namespace kvscope
