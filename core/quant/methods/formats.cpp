// Registry entries of the deployment formats and recent methods (numeric core in
// core/quant/formats/, choices in docs/FORMATS.md): ggml (llama.cpp KV block types), fp8, nvfp4,
// turboquant, qjl, kvquant. One file for the six records: they share the option parsing.
// Rotation is the policy's stage ($.rotation, quantize_dump and the replay cache), not a method option.
// Calibration-based settings (FP8/NVFP4 scales, TurboQuant outlier channels, KVQuant codebooks)
// come from the dump itself on the dump path, from the replay calibration (text or online) in replay,
// where each head's streaming RowCodec is built by core/quant/methods/formats_replay.cpp.
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/quant/formats/hadamard.h"
#include "core/quant/formats/kvquant.h"
#include "core/quant/formats/nvfp4.h"
#include "core/quant/formats/slice_codecs.h"
#include "core/quant/head_plan.h"
#include "core/quant/method_registry.h"
#include "core/quant/methods/formats_replay.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/tensor/dtype.h"
#include "core/tensor/rope.h"
#include "core/util/error.h"
#include "core/util/json_reader.h"

namespace kvscope {

using namespace formats;

namespace {

nlohmann::json options_of(const Policy& p) {
  if (p.method_options.empty()) return nlohmann::json::object();
  return nlohmann::json::parse(p.method_options);
}

// Checks that the options object has only `allowed` keys.
void only_keys(const nlohmann::json& o, JsonReader& r, const std::string& key, std::initializer_list<const char*> allowed) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) r.err(key + "." + it.key(), "unknown field");
  }
}

using SliceFn = std::function<SliceBits(const SliceInput&, const float* x, float* out)>;

// Runs fn on the slice (already rotated by quantize_dump when the policy rotates).
SliceResult run_slice(const SliceInput& in, const SliceFn& fn) {
  const SliceBits b = fn(in, in.x, in.out);
  SliceResult res;
  res.bits = b.bits;
  res.static_bits = b.static_bits;
  res.stored_bytes = (b.bits + 7) / 8;
  return res;
}

QuantMethod base(const std::string& name, const std::string& description, std::vector<std::string> presets) {
  QuantMethod m;
  m.name = name;
  m.description = description;
  m.presets = std::move(presets);
  m.options_key = name;
  m.validate = [](const Policy& p, JsonReader& r) {
    if (!p.overrides.empty() || !p.rules.empty() || p.smooth)
      r.err(p.smooth ? "smooth" : (p.rules.empty() ? "overrides" : "rules"), "this method takes no per-head overrides or smoothing here");
  };
  return m;
}

// amax of the layer x kind tensor a slice belongs to (per-tensor scales), rotated as the slices are
// when the policy rotates that kind (a rotation can raise amax up to sqrt(block) times).
float layer_amax(const SliceInput& in) {
  const std::vector<float>& t = in.plan->kind == 'k' ? in.dump->layers[in.plan->layer].k : in.dump->layers[in.plan->layer].v;
  const auto& rot = in.policy->rotation;
  if (!rot || !rot->applies(in.plan->kind)) return abs_max(t.data(), t.size());
  std::vector<float> r(t);
  HadamardRotation(in.head_dim, rot->seed_of(in.plan->kind)).rotate(r.data(), r.size() / in.head_dim);
  return abs_max(r.data(), r.size());
}

// ---- ggml -------------------------------------------------------------------------------------

GgmlType ggml_type_of(const nlohmann::json& o, char kind) {
  const std::string key = kind == 'k' && o.contains("k_type") ? "k_type" : (kind == 'v' && o.contains("v_type") ? "v_type" : "type");
  GgmlType t = GgmlType::Q4_0;
  if (o.contains(key) && !(o.at(key).is_string() && parse_ggml_type(o.at(key).get<std::string>(), &t)))
    throw Error("policy: $.ggml." + key + ": must be one of q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl");
  return t;
}

SliceResult ggml_quantize(const SliceInput& in) {
  const GgmlType t = ggml_type_of(options_of(*in.policy), in.plan->kind);
  return run_slice(in, [t](const SliceInput& s, const float* x, float* out) { return ggml_slice(t, x, s.tokens, s.head_dim, out); });
}

const QuantMethod& make_ggml() {
  static const QuantMethod m = [] {
    QuantMethod m = base("ggml", "llama.cpp KV cache block types (q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl), bit-exact with ggml",
                         {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "q4_0-rot"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "ggml", {"type", "k_type", "v_type"});
      for (const char* k : {"type", "k_type", "v_type"}) {
        GgmlType t;
        if (o.contains(k) && !(o.at(k).is_string() && parse_ggml_type(o.at(k).get<std::string>(), &t)))
          r.err(std::string("ggml.") + k, "must be one of q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl");
      }
    };
    m.check_dump = [](const KvDump& d, const Policy&) {
      if (d.shape.head_dim % kGgmlBlock) throw Error(fmt::format("head_dim {} is not a multiple of ggml's block of 32", d.shape.head_dim));
    };
    m.plan_replay = ggml_replay_plans;
    m.quantize_slice = ggml_quantize;
    m.quantize_slice_reference = ggml_quantize;
    m.test_policy = [](int bits) {
      return bits == 4 ? std::string(R"({"method": "ggml", "ggml": {"type": "q4_0"}})") : std::string();
    };
    return m;
  }();
  return m;
}

// ---- fp8 --------------------------------------------------------------------------------------

SliceResult fp8_quantize(const SliceInput& in) {
  const nlohmann::json o = options_of(*in.policy);
  Fp8Format f = Fp8Format::E4M3;
  if (o.contains("format")) parse_fp8_format(o.at("format").get<std::string>(), &f);
  const std::string mode = o.value("scale", std::string("tensor"));
  return run_slice(in, [&](const SliceInput& s, const float* x, float* out) {
    float scale = 1.0f;
    if (mode == "head") scale = fp8_scale_from_amax(f, abs_max(x, size_t(s.tokens) * s.head_dim));
    else if (mode == "tensor") scale = fp8_scale_from_amax(f, layer_amax(s));
    // A per-tensor scale is counted once per layer x kind (with head 0's slice).
    const bool count = mode == "head" || (mode == "tensor" && s.plan->head == 0);
    return fp8_slice(f, x, s.tokens, s.head_dim, scale, count, out);
  });
}

const QuantMethod& make_fp8() {
  static const QuantMethod m = [] {
    QuantMethod m = base("fp8", "FP8 KV cache as vLLM stores it: e4m3 or e5m2, RNE, saturating, fp32 scale per tensor/head or 1.0",
                         {"fp8-e4m3", "fp8-e5m2"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "fp8", {"format", "scale"});
      Fp8Format f;
      if (o.contains("format") && !(o.at("format").is_string() && parse_fp8_format(o.at("format").get<std::string>(), &f)))
        r.err("fp8.format", "must be \"e4m3\" or \"e5m2\"");
      if (o.contains("scale") && !(o.at("scale") == "tensor" || o.at("scale") == "head" || o.at("scale") == "fixed"))
        r.err("fp8.scale", "must be \"tensor\" (per layer x kind), \"head\" or \"fixed\" (1.0)");
    };
    m.plan_replay = fp8_replay_plans;
    m.needs_calibration_for = fp8_needs_calibration;
    m.quantize_slice = fp8_quantize;
    m.quantize_slice_reference = fp8_quantize;
    // The registry's bounds are a uniform grid's; FP8's relative error 2^-4 (e4m3) sits between the
    // 4- and 8-bit bounds, so it is checked against the 4-bit one.
    m.test_policy = [](int bits) { return bits == 4 ? std::string(R"({"method": "fp8", "fp8": {"format": "e4m3", "scale": "head"}})") : std::string(); };
    return m;
  }();
  return m;
}

// ---- nvfp4 ------------------------------------------------------------------------------------

SliceResult nvfp4_quantize(const SliceInput& in) {
  return run_slice(in, [](const SliceInput& s, const float* x, float* out) {
    SliceBits b = nvfp4_slice(x, s.tokens, s.head_dim, nvfp4_global_scale(layer_amax(s)), out);
    if (s.plan->head != 0) b.bits -= 32, b.static_bits = 0;  // one fp32 tensor scale per layer x kind
    return b;
  });
}

const QuantMethod& make_nvfp4() {
  static const QuantMethod m = [] {
    QuantMethod m = base("nvfp4", "NVFP4 (ModelOpt): e2m1 in blocks of 16, e4m3 block scales, fp32 tensor scale; 4.5 bits", {"nvfp4"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "nvfp4", {});
    };
    m.check_dump = [](const KvDump& d, const Policy&) {
      if (d.shape.head_dim % kNvfp4Block) throw Error(fmt::format("head_dim {} is not a multiple of NVFP4's block of 16", d.shape.head_dim));
    };
    m.plan_replay = nvfp4_replay_plans;
    m.needs_calibration = true;  // the fp32 tensor scale
    m.quantize_slice = nvfp4_quantize;
    m.quantize_slice_reference = nvfp4_quantize;
    m.test_policy = [](int bits) { return bits == 4 ? std::string(R"({"method": "nvfp4"})") : std::string(); };
    return m;
  }();
  return m;
}

// ---- turboquant / qjl -------------------------------------------------------------------------

// "bits": an integer b (one instance), 2.5 (d/4 outlier channels at 4 bits, the rest at 2) or 3.5 (5 and 3).
void turbo_bits(double bits, int* out_bits, int* base_bits, bool* split) {
  *split = bits != std::floor(bits);
  *base_bits = static_cast<int>(std::floor(bits));
  *out_bits = *base_bits + 2;
}

SliceResult turbo_quantize(const SliceInput& in) {
  const nlohmann::json o = options_of(*in.policy);
  const double bits = o.value("bits", 3.5);
  const bool qjl = in.plan->kind == 'k' && o.value("qjl_keys", false);
  const uint64_t seed = o.value("seed", uint64_t(0));
  int ob, bb;
  bool split;
  turbo_bits(bits, &ob, &bb, &split);
  return run_slice(in, [&](const SliceInput& s, const float* x, float* out) {
    const std::vector<int> oc = split ? top_rms_channels(x, size_t(s.tokens), s.head_dim, s.head_dim / 4) : std::vector<int>();
    const TurboQuantSplit tq(s.head_dim, oc, ob, bb, qjl, seed + 2 * (s.plan->layer * 1000 + s.plan->head) + (s.plan->kind == 'v'));
    return turboquant_slice(tq, x, s.tokens, out);
  });
}

SliceResult qjl_quantize(const SliceInput& in) {
  const nlohmann::json o = options_of(*in.policy);
  const int per_dim = o.value("sketch_per_dim", 2);
  const uint64_t seed = o.value("seed", uint64_t(0));
  return run_slice(in, [&](const SliceInput& s, const float* x, float* out) {
    const size_t n = size_t(s.tokens) * s.head_dim;
    if (s.plan->kind == 'v') {  // QJL is a key sketch; values stay fp16
      for (size_t i = 0; i < n; ++i) out[i] = round_to_f16(x[i]);
      return SliceBits{uint64_t(n) * 16, 0};
    }
    const Qjl q(s.head_dim, per_dim * s.head_dim, seed + s.plan->layer * 1000 + s.plan->head);
    std::vector<uint8_t> sg(size_t(per_dim) * s.head_dim);
    for (int t = 0; t < s.tokens; ++t)
      q.decode(sg.data(), q.encode(x + size_t(t) * s.head_dim, sg.data()), out + size_t(t) * s.head_dim);
    return SliceBits{q.bits_per_vector() * uint64_t(s.tokens), 0};
  });
}

const QuantMethod& make_turboquant() {
  static const QuantMethod m = [] {
    QuantMethod m = base("turboquant", "TurboQuant: random rotation + Lloyd-Max codebook per coordinate, norms fp16; "
                                       "2.5/3.5 bits by an outlier-channel split; optional QJL residual for keys",
                         {"turboquant-2.5", "turboquant-3.5", "turboquant-prod-3.5"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "turboquant", {"bits", "qjl_keys", "seed"});
      if (o.contains("bits")) {
        const auto& b = o.at("bits");
        const double x = b.is_number() ? b.get<double>() : -1;
        const bool ok = (x == std::floor(x) && x >= 1 && x <= 8) || x == 2.5 || x == 3.5;
        if (!ok) r.err("turboquant.bits", "must be an integer in 1..8, 2.5 or 3.5");
        if (o.value("qjl_keys", false) && x < 2) r.err("turboquant.qjl_keys", "the QJL residual needs at least 2 bits");
      }
      if (o.contains("qjl_keys") && !o.at("qjl_keys").is_boolean()) r.err("turboquant.qjl_keys", "must be true or false");
      if (o.contains("seed") && !o.at("seed").is_number_unsigned()) r.err("turboquant.seed", "must be a non-negative integer");
    };
    m.plan_replay = turboquant_replay_plans;
    m.needs_calibration_for = turboquant_needs_calibration;
    m.quantize_slice = turbo_quantize;
    m.quantize_slice_reference = turbo_quantize;
    m.test_policy = [](int bits) {
      return bits >= 2 && bits <= 4 ? fmt::format(R"({{"method": "turboquant", "turboquant": {{"bits": {}}}}})", bits) : std::string();
    };
    return m;
  }();
  return m;
}

const QuantMethod& make_qjl() {
  static const QuantMethod m = [] {
    QuantMethod m = base("qjl", "QJL keys: sign bits of a seeded Gaussian JL projection + fp16 norm (unbiased q.k); values fp16", {"qjl"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "qjl", {"sketch_per_dim", "seed"});
      if (o.contains("sketch_per_dim") && !(o.at("sketch_per_dim").is_number_integer() && o.at("sketch_per_dim").get<int>() >= 1 &&
                                            o.at("sketch_per_dim").get<int>() <= 16))
        r.err("qjl.sketch_per_dim", "must be an integer in 1..16 (sketch size m = sketch_per_dim x head_dim)");
      if (o.contains("seed") && !o.at("seed").is_number_unsigned()) r.err("qjl.seed", "must be a non-negative integer");
    };
    m.plan_replay = qjl_replay_plans;
    m.quantize_slice = qjl_quantize;
    m.quantize_slice_reference = qjl_quantize;
    // The unbiased sketch has a large variance per key (NMSE ~0.8 at m = 2d): only the 2-bit bound holds.
    m.test_policy = [](int bits) { return bits == 2 ? std::string(R"({"method": "qjl"})") : std::string(); };
    return m;
  }();
  return m;
}

// ---- kvquant ----------------------------------------------------------------------------------

KvQuantOptions kvquant_options(const nlohmann::json& o) {
  KvQuantOptions k;
  k.bits = o.value("bits", 4);
  k.outlier_fraction = o.value("outlier_fraction", 0.0);
  k.fp16_tokens = o.value("fp16_tokens", 1);
  k.q_norm = o.value("q_norm", true);
  return k;
}

std::vector<SliceResult> kvquant_layer(const KvDump& d, const Policy& p, int l, char kind, float* out) {
  const nlohmann::json o = options_of(p);
  const KvQuantOptions ko = kvquant_options(o);
  const bool pre_rope = kind == 'k' && o.value("pre_rope", true);
  const std::vector<float>& src = kind == 'v' ? d.layers[l].v : (pre_rope ? d.layers[l].k_pre_rope : d.layers[l].k);
  const int H = d.shape.kv_heads, T = d.shape.tokens, D = d.shape.head_dim;
  const KvQuantCalibration cal = kvquant_calibrate(src.data(), H, T, D, kind == 'k', ko);
  std::vector<SliceResult> per(static_cast<size_t>(H));
  for (int h = 0; h < H; ++h) {
    float* y = out + static_cast<size_t>(h) * T * D;
    const KvQuantHeadStats st = kvquant_roundtrip(cal, h, src.data() + static_cast<size_t>(h) * T * D, T, ko, y);
    if (pre_rope) apply_rope(y, T, D, d.meta.rope_theta, 0, false, d.meta.rope_style == "interleaved");
    SliceResult& r = per[static_cast<size_t>(h)];
    const uint64_t head_static = kind == 'k' ? 32ull * D : 0;  // the head's channel ranges
    r.static_bits = head_static + (h == 0 ? 16ull * cal.dec.size() : 0);  // the codebook once per layer x kind
    r.bits = st.bits + r.static_bits;
    r.stored_bytes = (r.bits + 7) / 8;
  }
  return per;
}

const QuantMethod& make_kvquant() {
  static const QuantMethod m = [] {
    QuantMethod m = base("kvquant", "KVQuant: pre-RoPE per-channel keys, per-token values, k-means datatype per layer, "
                                    "Q-Norm, dense-and-sparse outliers, fp16 first tokens",
                         {"kvquant-4", "kvquant-3", "kvquant-2-1%"});
    auto v = m.validate;
    m.validate = [v](const Policy& p, JsonReader& r) {
      v(p, r);
      const nlohmann::json o = options_of(p);
      only_keys(o, r, "kvquant", {"bits", "outlier_fraction", "fp16_tokens", "q_norm", "pre_rope"});
      if (o.contains("bits") && !(o.at("bits").is_number_integer() && o.at("bits").get<int>() >= 1 && o.at("bits").get<int>() <= 8))
        r.err("kvquant.bits", "must be an integer in 1..8");
      if (o.contains("outlier_fraction") &&
          !(o.at("outlier_fraction").is_number() && o.at("outlier_fraction").get<double>() >= 0 && o.at("outlier_fraction").get<double>() < 0.5))
        r.err("kvquant.outlier_fraction", "must be a number in [0, 0.5)");
      if (o.contains("fp16_tokens") && !(o.at("fp16_tokens").is_number_integer() && o.at("fp16_tokens").get<int>() >= 0))
        r.err("kvquant.fp16_tokens", "must be a non-negative integer");
      for (const char* k : {"q_norm", "pre_rope"})
        if (o.contains(k) && !o.at(k).is_boolean()) r.err(std::string("kvquant.") + k, "must be true or false");
    };
    m.needs_pre_rope_keys = [](const Policy& p) { return options_of(p).value("pre_rope", true); };
    m.check_dump = [](const KvDump& d, const Policy& p) {
      if (options_of(p).value("pre_rope", true) && !d.has_k_pre_rope())
        throw Error("dump has no pre-RoPE keys (layers.{L}.k_pre_rope); kvquant needs them (or set $.kvquant.pre_rope to false)");
    };
    m.plan_replay = kvquant_replay_plans;
    m.needs_calibration = true;  // codebooks and key ranges
    m.quantize_layer = kvquant_layer;
    m.quantize_layer_reference = kvquant_layer;
    m.test_policy = [](int bits) {
      return bits >= 3 && bits <= 4 ? fmt::format(R"({{"method": "kvquant", "kvquant": {{"bits": {}, "pre_rope": false}}}})", bits)
                                    : std::string();
    };
    return m;
  }();
  return m;
}

}  // namespace

const QuantMethod& ggml_method() { return make_ggml(); }
const QuantMethod& fp8_method() { return make_fp8(); }
const QuantMethod& nvfp4_method() { return make_nvfp4(); }
const QuantMethod& turboquant_method() { return make_turboquant(); }
const QuantMethod& qjl_method() { return make_qjl(); }
const QuantMethod& kvquant_method() { return make_kvquant(); }

}  // namespace kvscope
