#pragma once
// Policy v1: which method quantizes each (layer, kind, KV head) of a dump, and with which knobs.
// JSON form (every field optional except "method"; see assets/presets/*.json):
// {
//   "name": "kivi-2", "description": "...",
//   "method": "fp16" | "uniform" | "kivi" | "kvmix" | "skvq" | "watersic" | any registered method
//             (core/quant/method_registry.h: its defaults, option block and checks),
//   "k": {"bits": 2, "axis": "token"|"channel"|"head", "group_size": 32, "symmetric": false,
//         "zero_point": "float"|"integer", "clip_ratio": 1.0, "clip_search": false,
//         "scale_dtype": "f16"|"f32"|"bf16", "inverse_scale": false, "fp16": false},
//   "v": { ...same... },
//   "residual": 128,          // most recent tokens kept in fp16 (KIVI streaming rule for "kivi")
//   "residual_layers": [128, 64, ...],  // per layer instead (seed 002's residual_length(layer_id)); one per layer
//   "sink_tokens": 0,         // first tokens kept in fp16
//   "outlier_heads": {"rule": "none"|"list"|"mse_over_median"|"mse_share"|"count",
//                     "heads": [[layer, head], ...], "ratio": 5.0, "share": 0.9, "count": 6},
//   "overrides": [{"layers": [0, 1], "heads": [0], "kind": "k"|"v"|"kv", ...TensorQuant fields}],
//   "head_group_size": 1,     // KV heads per head group (seed 002's head_group): group = head / size
//   "rules": [{"layer_range": [0, 3], "layers": [...], "head_groups": [0], "heads": [...], "kind": "k",
//              ...TensorQuant fields}],   // applied in order before the overrides (overrides win)
//   "calibration": {"mode": "none"|"text"|"online", "text": "calib.txt", "tokens": 512},
//   "attention": {"use_attentions": false, "last_n_attentions": 5, "target_quantization_error": 0.05 | {"k": 1e-4, "v": 0.05},
//                 "q_norm": "measured" | 4.0},   // QAQ-style bits per (layer, kind, head group)
//   "outliers_ratio": 0.01 | {"k": 0.01, "v": 0},   // per-group outliers kept exact (replay)
//   "smooth": {"factor": 1.0, "include": ["*"], "exclude": ["model.layers.0.self_attn"]},  // KVSmooth
//   "skvq": {"reorder": true, "pre_rope": true},
//   "budget": {"max_avg_bits": 4, "bit_range": [2, 8]},  // seed 002's shared cap and per-entry bit range
//   "watersic": {"target_rate": 2.0, "kl_aware": false, "importance_clip": 50, "use_lmmse": true,
//                "n_rescaler_iters": 0, "sample_frac": 0, "sort_columns": true, "seed": 0,
//                "queries": "group"|"same_index", "values": "fp16"|"watersic"},
//   "rotation": {"kind": "hadamard", "seed": 0, "kinds": ["k", "v"]},  // rotation stage (any per-head method)
//   "script": {...}           // a policy script's record (python/policy_script.h): kept, not interpreted
// }
// Validation errors name the JSON path: "policy.json: $.k.bits: must be an integer in 1..8".
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor/dtype.h"

namespace kvscope {

struct QuantMethod;                 // core/quant/method_registry.h: one record per method family
const QuantMethod& default_method();  // fp16
enum class Axis { Token, Channel, Head };  // groups along a token's channels / a channel's tokens / whole head

// How one K or V head matrix [tokens, head_dim] is quantized.
struct TensorQuant {
  bool full_precision = false;  // keep fp16, no quantization
  int bits = 4;                 // 1..8 (symmetric needs >= 2)
  Axis axis = Axis::Token;
  int group_size = 0;           // elements per group along the axis; 0 = the whole axis
  bool symmetric = false;
  bool integer_zero_point = false;  // asymmetric with an integer zero point (PyTorch style) instead of float min
  double clip_ratio = 1.0;      // alpha in (0, 1]
  bool clip_search = false;     // per-group MSE search over alpha in {1, 1-step, ..., clip_min}
  double clip_min = 0.5;
  double clip_step = 0.01;
  DType scale_dtype = DType::F16;  // how scales / float zero points are stored (F16, BF16, F32)
  bool inverse_scale = false;   // kvmix: q = rint(x * (qmax/amax)), x^ = q / inv
};

struct OutlierSelect {
  enum class Rule { None, List, MseOverMedian, MseShare, Count };
  Rule rule = Rule::None;
  std::vector<std::pair<int, int>> heads;  // (layer, kv head) for Rule::List
  double ratio = 5.0;   // MseOverMedian: strat1 K MSE >= ratio * median over all K heads
  double share = 0.9;   // MseShare: smallest top set holding >= share of summed K MSE
  int count = 0;        // Count: the top `count` K heads by strat1 MSE
};

struct PolicyOverride {
  std::vector<int> layers;  // empty = all layers
  int layer_lo = -1, layer_hi = -1;  // "layer_range" [lo, hi] inclusive; -1 = no range
  std::vector<int> heads;   // empty = all KV heads
  std::vector<int> head_groups;  // empty = all head groups (group = head / head_group_size)
  bool k = true, v = true;  // which kinds it applies to
  TensorQuant quant;        // the base K or V settings with the override's fields applied
  std::string json;         // the override as written (for round trips)
};

// KVSmooth preconditioning of keys (ALGORITHMS.md §4), combinable with any per-head method.
struct SmoothOptions {
  double factor = 1.0;
  std::vector<std::string> include = {"*"};   // glob patterns on model.layers.N.self_attn
  std::vector<std::string> exclude;           // exclude wins
};

// SKVQ specifics (§3): bits, group size and clip ratio come from k / v, the window from
// `residual`, the sinks from `sink_tokens`.
struct SkvqOptions {
  bool reorder = true;   // k-means channel reordering calibrated on the dump
  bool pre_rope = true;  // quantize pre-RoPE keys (needs layers.{L}.k_pre_rope in the dump)
};

// WaterSIC specifics (§5, ModelOpt's watersic_kv defaults); the Hessian comes from the dump's
// own queries (all query heads of the group), in replay from the calibration's queries (streaming
// coder; residual and sink_tokens then apply, docs/REPLAY.md).
struct WatersicPolicy {
  double target_rate = 2.0;
  bool kl_aware = false;
  double importance_clip = 50.0;
  bool use_lmmse = true;
  int n_rescaler_iters = 0;
  double sample_frac = 0;       // 0 = auto min(0.1, 1000 / tokens)
  bool sort_columns = true;
  uint64_t seed = 0;
  bool modelopt_queries = false;  // ModelOpt's query head h instead of the whole group (parity only)
  bool values_fp16 = true;        // V kept fp16 as ModelOpt does; false = §5.10 fallback at the same rate
};

// Bit budget (policies v2, seed 002's budget_state / bit_range hooks). bit_range bounds the bits of
// every quantized K/V setting (k, v, overrides) and is checked when parsing; max_avg_bits caps the
// nominal bits per KV entry averaged over every (layer, KV head, kind) of a model (fp16 heads count
// 16) and is checked when the policy meets a model (replay).
struct BitBudget {
  double max_avg_bits = 0;  // 0 = no cap
  int min_bits = 1, max_bits = 16;
  bool empty() const { return max_avg_bits == 0 && min_bits == 1 && max_bits == 16; }
};

// Where the statistics of data-dependent decisions come from (seed 002's calibration_mode hook):
// ranked outlier heads, KVSmooth scales and attention-guided bits. docs/REPLAY.md.
struct CalibrationSpec {
  enum class Mode { None, Text, Online };
  Mode mode = Mode::None;
  std::string text;    // mode text: the calibration text file (relative paths: to the policy file)
  int tokens = 512;    // calibration tokens: the first N of the text (BOS included) or of each prompt
};

// QAQ-style attention-guided bit choice (seed 002's use_attentions, last_n_attentions,
// target_quantization_error, q_norm hooks); bits bounded by budget.bit_range and max_avg_bits.
struct AttentionGuided {
  bool use_attentions = false;
  int last_n_attentions = 5;             // query rows (the last of the calibration) whose attention is used
  // sigma of QAQ's bounds for K and V (the hook takes kv_kind; the two bounds differ in scale); > 0 when
  // use_attentions. JSON: one number for both, or {"k": sigma_k, "v": sigma_v}.
  double target_k = 0, target_v = 0;
  double q_norm = 0;                     // QAQ's q_norm for the key bound; 0 = measured (max |q|^2 / head_dim)
};

// Rotation before quantization, a stage around any per-head method (docs/FORMATS.md "Rotation"):
// each K / V head vector is multiplied by a randomized Walsh-Hadamard matrix R (core/quant/formats/
// hadamard.h; K with `seed`, V with seed + 1) before the method quantizes it, and the reconstruction
// by R^T: q.(R^T k^) = (Rq).k^ (queries rotated identically) and sum p R^T v^ = R^T (sum p v^) (the
// attention output rotated back), so every metric is in the original basis. Keys post-RoPE.
struct RotationSpec {
  uint64_t seed = 0;
  bool k = true, v = true;
  bool applies(char kind) const { return kind == 'k' ? k : v; }
  uint64_t seed_of(char kind) const { return seed + (kind == 'v' ? 1 : 0); }
};

struct Policy {
  std::string name;
  std::string description;
  const QuantMethod* method = &default_method();  // never null; a registry record (copies share it)
  TensorQuant k, v;
  int residual = 0;
  int sink_tokens = 0;
  OutlierSelect outliers;   // K heads kept in fp16
  std::vector<PolicyOverride> overrides;
  int head_group_size = 1;
  std::vector<PolicyOverride> rules;  // like overrides, applied before them
  CalibrationSpec calibration;
  AttentionGuided attention;
  // Seed 002's outliers_ratio (QAQ): per quantization group, the ceil(ratio/2 * n) smallest and largest
  // elements are kept exactly (fp16 + position) and the group is quantized without them. Replay only.
  double outliers_ratio_k = 0, outliers_ratio_v = 0;
  std::optional<SmoothOptions> smooth;
  std::optional<RotationSpec> rotation;
  SkvqOptions skvq;
  WatersicPolicy watersic;
  // The method's option object (QuantMethod::options_key) as JSON text, for methods that keep no typed
  // struct here (read and written back by the registry's defaults). Empty = none given.
  std::string method_options;
  BitBudget budget;
  std::vector<int> residual_layers;  // per layer; empty = `residual` for every layer
  // A policy planned by a script (python/policy_script.h): its path, source, hash and every hook
  // decision, as canonical JSON; stored with the run (policy JSON, so the policy hash covers the
  // script). "" for JSON policies.
  std::string script_json;
};

// The residual window of one layer: residual_layers[layer], else residual.
int residual_of(const Policy& p, int layer);
// Error ("policy: $.residual_layers: ...") unless residual_layers is empty or has one entry per layer.
void check_residual_layers(const Policy& p, int layers);

std::string method_name(const QuantMethod* m);  // the record's name

// Parses and validates; errors are Error("<where>: $.path: problem").
Policy parse_policy(const nlohmann::json& j, const std::string& where);
Policy load_policy_file(const std::string& path);
nlohmann::json policy_to_json(const Policy& p);
// K or V settings with an override's fields applied on top.
TensorQuant apply_override(const TensorQuant& base, const PolicyOverride& o);
// Whether a rule / override applies to (layer, KV head, kind 'k' or 'v').
bool override_matches(const PolicyOverride& o, int layer, int head, char kind, int head_group_size);
// Outlier rules that rank heads, KVSmooth, attention-guided bits or method watersic: replay needs calibration.
bool needs_calibration(const Policy& p);
std::string canonical_policy_json(const Policy& p);  // sorted keys, no whitespace: hashed by the run store

struct PresetInfo {
  std::string name;
  std::string description;
};
std::vector<PresetInfo> list_presets();
Policy load_preset(const std::string& name);  // Error listing the known presets when unknown
std::string presets_dir();                    // $KVSCOPE_ASSETS or the source tree's assets/presets

}  // namespace kvscope
