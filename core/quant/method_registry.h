#pragma once
// The method registry: one QuantMethod record per method family (fp16, uniform, kivi, kvmix, skvq,
// watersic, ...), as ggml keeps one traits row per quant type. Policy parsing, quantize_dump, the
// replay cache, head planning, sweeps, the CLI and the GUI read these records; nothing outside
// core/policy and core/quant dispatches on a method's identity.
//
// Adding a method (docs/METHODS.md): one file core/quant/methods/<name>.cpp defining
// `const QuantMethod& <name>_method()`, plus its line X(<name>) in KVSCOPE_METHODS below.
// tests/core/quant/test_method_registry.cpp then runs it against its reference implementation,
// its named error bound and its stored bytes without any change.
//
// Transforms that compose with any per-head method (KVSmooth's key scales) are policy stages
// applied by quantize_dump around quantize_slice, not methods.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/policy/policy.h"

namespace kvscope {

struct KvDump;
struct HeadPlan;        // core/quant/head_plan.h: settings of one (layer, head, kind) after rules
struct HeadQuantPlan;   // core/replay/quantized_kv_cache.h: the same for replay, with its streaming coder
struct ModelConfig;
struct Calibration;     // core/replay/calibration.h
class JsonReader;

// One (layer, kind, KV head) slice of a dump to quantize: x [tokens, head_dim] row-major (keys
// already divided by KVSmooth's scales when the policy smooths), `out` receives the reconstruction.
struct SliceInput {
  const KvDump* dump = nullptr;
  const Policy* policy = nullptr;
  const HeadPlan* plan = nullptr;  // layer, head, kind, TensorQuant after rules/overrides/outliers, fp16 rows
  const float* x = nullptr;
  float* out = nullptr;
  int tokens = 0, head_dim = 0;
};

// Exact bit accounting of one slice (what the run store and the RD plot report).
struct SliceResult {
  uint64_t bits = 0;              // stored size: codes + scales/zero points + kept fp16 rows + side info
  uint64_t static_bits = 0;       // the part of `bits` that does not grow with tokens (per-cache constants)
  uint64_t fixed_width_bits = 0;  // entropy-coded methods: the same codes packed at fixed width (else 0)
  uint64_t stored_bytes = 0;      // bytes of the buffers the method actually filled (packed codes,
                                  // scales in their dtype, fp16 rows, side info); the registry test
                                  // checks `bits` (or fixed_width_bits) against it
  double calibration_seconds = 0; // data-dependent search / calibration work
  bool full_precision = false;    // the whole slice was kept in fp16
};

struct QuantMethod {
  std::string name;         // the policy's "method" value, stored with every run
  std::string description;  // one line for `kvscope presets` / the GUI
  std::vector<std::string> presets;  // assets/presets/<name>.json files whose method this is

  // ---- Policy (core/policy/policy.cpp) ----
  std::function<void(Policy&)> set_defaults;  // before the file's fields are read; null = struct defaults
  // Method-specific JSON object ("skvq": {...}); any other method's key is refused with
  // "$.<key>: only applies to method '<name>'". Empty = none.
  std::string options_key;
  std::function<void(JsonReader&, Policy&)> read_options;   // reads the options object (reject_unknown included)
  std::function<nlohmann::json(const Policy&)> options_json;  // written back by policy_to_json (hashed: keep stable)
  // Cross-field checks after every field was read; errors through r.err("<json path>", "problem").
  std::function<void(const Policy&, JsonReader& r)> validate;
  bool keeps_fp16 = false;        // every tensor stays fp16 whatever the fields say (method fp16)
  bool key_residual_blocks = false;  // KIVI: keys leave the residual window in whole blocks of `residual` tokens
  bool attention_bits = false;    // $.attention.use_attentions may choose its bits (TensorQuant groups)
  bool group_outliers = false;    // $.outliers_ratio applies (TensorQuant groups)
  // Set by a target rate instead of bits (sweep "rates"): writes `rate` into the policy JSON.
  std::function<void(nlohmann::json& policy_json, double rate)> set_rate;

  // ---- Needs ----
  bool needs_queries = false;      // the dump path needs layers.{L}.q (besides attention metrics)
  bool needs_calibration = false;  // replay needs a calibration (text or online) for this method alone
  std::function<bool(const Policy&)> needs_calibration_for;  // the same, depending on the options (FP8 amax scales)
  std::function<bool(const Policy&)> needs_pre_rope_keys;  // dumps must load layers.{L}.k_pre_rope; null = never
  int calibration_tokens_per_head_dim = 0;  // replay warns below this many calibration positions x head_dim

  // ---- Dump path (core/quant/quantize_dump.cpp) ----
  // Refuses a dump/policy pair before any work: throws Error("policy: $.<path>: ...").
  std::function<void(const KvDump&, const Policy&)> check_dump;
  // Fast path on one slice, and a plain reference for tests that must reconstruct the same values
  // (bit-identical or within the record's reference_tolerance) with the same bits.
  std::function<SliceResult(const SliceInput&)> quantize_slice;
  std::function<SliceResult(const SliceInput&)> quantize_slice_reference;
  double reference_tolerance = 0;  // max |fast - reference| allowed, relative to max |x| (0 = identical)
  // Methods whose groups span a layer's heads (SKVQ) quantize all heads of (layer, kind) at once
  // instead: in/out are [kv_heads, tokens, head_dim]; one result per head (bits split exactly).
  using LayerFn = std::function<std::vector<SliceResult>(const KvDump&, const Policy&, int layer, char kind, float* out)>;
  LayerFn quantize_layer, quantize_layer_reference;
  bool entropy_coded = false;  // reports fixed_width_bits_per_element beside the entropy-coded rate

  // ---- Replay (core/replay/quantized_kv_cache.cpp) ----
  // Default (null plan_replay, empty refusal): TensorQuant blocks per head, the cache's own encoder.
  // plan_replay: the method builds each head's plan with its streaming coder (WaterSIC), or a
  // RowCodec (core/quant/row_codec.h) per head: the deployment formats (core/quant/methods/formats_replay.cpp).
  std::function<std::vector<HeadQuantPlan>(const ModelConfig&, const Policy&, const Calibration*, const std::string& where)>
      plan_replay;
  std::string replay_refusal;  // non-empty: replay refuses the method with this reason
  std::string replay_note;     // printed once by `kvscope replay` (how the method is approximated there)

  // ---- Tests (tests/core/quant/test_method_registry.cpp) ----
  // Policy JSON of the method at `bits` bits per element for the registry test's Gaussian data
  // (empty when the method has no such setting, e.g. fp16).
  std::function<std::string(int bits)> test_policy;
};

// ---- The registry ----
// Registered methods in listing order (built-ins first, then register_method's).
const std::vector<const QuantMethod*>& all_methods();
// nullptr when unknown.
const QuantMethod* find_method(const std::string& name);
std::vector<std::string> method_names();
// "fp16, uniform, kivi, kvmix, skvq or watersic" (joined with `last` before the final name).
std::string method_list(const std::string& last = "or");
// Adds a method at run time (a test, a plug-in); the record must outlive every use. Call before
// any thread reads the registry. Throws Error when the name is taken.
void register_method(const QuantMethod& m);
void unregister_method(const std::string& name);  // tests: undo register_method

// ---- Building blocks for per-head methods ----
// quantize_tensor on the slice with its plan (fp16 when plan.quant.full_precision): the shared fast
// path of fp16, uniform, kivi and kvmix; and quantize_tensor_reference + dequantize.
SliceResult quantize_tensor_slice(const SliceInput& in);
SliceResult quantize_tensor_slice_reference(const SliceInput& in);

// The built-in methods, one file each under core/quant/methods/. Registration: one X(name) line.
#define KVSCOPE_METHODS(X) \
  X(fp16) X(uniform) X(kivi) X(kvmix) X(skvq) X(watersic) X(ggml) X(fp8) X(nvfp4) X(turboquant) X(qjl) X(kvquant)
#define KVSCOPE_DECLARE_METHOD(name) const QuantMethod& name##_method();
KVSCOPE_METHODS(KVSCOPE_DECLARE_METHOD)
#undef KVSCOPE_DECLARE_METHOD

}  // namespace kvscope
