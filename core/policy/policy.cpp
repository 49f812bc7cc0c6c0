#include "core/policy/policy.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/quant/method_registry.h"
#include "core/quant/quantized_tensor.h"
#include "core/util/error.h"
#include "core/util/json_reader.h"

namespace kvscope {

using json = nlohmann::json;

namespace {

using Reader = JsonReader;

// "uniform, kivi and kvmix": the registered methods with a capability, for error messages.
std::string methods_with(bool QuantMethod::*flag) {
  std::vector<std::string> names;
  for (const QuantMethod* m : all_methods())
    if (m->*flag) names.push_back(m->name);
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return s;
}

// "rotation": {"kind": "hadamard", "seed": S, "kinds": ["k", "v"]} (RotationSpec).
RotationSpec read_rotation(Reader& r, const std::string& where) {
  Reader rr(r.at("rotation"), where, "$.rotation");
  RotationSpec rot;
  if (rr.str("kind", "hadamard") != "hadamard") rr.err("kind", "must be \"hadamard\"");
  if (rr.has("seed")) {
    if (!rr.at("seed").is_number_unsigned()) rr.err("seed", "must be a non-negative integer");
    rot.seed = rr.at("seed").get<uint64_t>();
  }
  if (rr.has("kinds")) {
    const json& ks = rr.at("kinds");
    rot.k = rot.v = false;
    if (!ks.is_array() || ks.empty()) rr.err("kinds", "must be a non-empty array of \"k\" and \"v\"");
    for (const auto& k : ks) {
      if (k == "k") rot.k = true;
      else if (k == "v") rot.v = true;
      else rr.err("kinds", "must be a non-empty array of \"k\" and \"v\"");
    }
  }
  rr.reject_unknown();
  return rot;
}

const char* axis_name(Axis a) {
  switch (a) {
    case Axis::Token: return "token";
    case Axis::Channel: return "channel";
    case Axis::Head: return "head";
  }
  return "?";
}

const char* dtype_key(DType t) { return t == DType::F32 ? "f32" : t == DType::BF16 ? "bf16" : "f16"; }

const std::vector<std::string> kTensorQuantKeys = {"fp16", "bits", "axis", "group_size", "symmetric", "zero_point",
                                                   "clip_ratio", "clip_search", "clip_min", "clip_step",
                                                   "scale_dtype", "inverse_scale"};

// Applies the fields present in `r` on top of `q` (so overrides only change what they name).
void read_tensor_quant(Reader& r, TensorQuant& q) {
  q.full_precision = r.boolean("fp16", q.full_precision);
  q.bits = r.integer("bits", q.bits, 1, 8);
  if (r.has("axis")) {
    std::string a = r.str("axis", "");
    if (a == "token") q.axis = Axis::Token;
    else if (a == "channel") q.axis = Axis::Channel;
    else if (a == "head") q.axis = Axis::Head;
    else r.err("axis", "must be \"token\", \"channel\" or \"head\"");
  }
  q.group_size = r.integer("group_size", q.group_size, 0, 1 << 20);
  q.symmetric = r.boolean("symmetric", q.symmetric);
  if (r.has("zero_point")) {
    std::string z = r.str("zero_point", "");
    if (z == "float") q.integer_zero_point = false;
    else if (z == "integer") q.integer_zero_point = true;
    else r.err("zero_point", "must be \"float\" or \"integer\"");
  }
  q.clip_ratio = r.number("clip_ratio", q.clip_ratio, 0, 1, true);
  q.clip_search = r.boolean("clip_search", q.clip_search);
  q.clip_min = r.number("clip_min", q.clip_min, 0, 1, true);
  q.clip_step = r.number("clip_step", q.clip_step, 0, 0.5, true);
  if (r.has("scale_dtype")) {
    std::string s = r.str("scale_dtype", "");
    if (s == "f16") q.scale_dtype = DType::F16;
    else if (s == "bf16") q.scale_dtype = DType::BF16;
    else if (s == "f32") q.scale_dtype = DType::F32;
    else r.err("scale_dtype", "must be \"f16\", \"bf16\" or \"f32\"");
  }
  q.inverse_scale = r.boolean("inverse_scale", q.inverse_scale);
  std::string problem = check_tensor_quant(q);
  if (!problem.empty()) r.err("", problem);
}

json tensor_quant_json(const TensorQuant& q) {
  if (q.full_precision) return json{{"fp16", true}};
  json j{{"bits", q.bits},           {"axis", axis_name(q.axis)},   {"group_size", q.group_size},
         {"symmetric", q.symmetric}, {"clip_ratio", q.clip_ratio}, {"scale_dtype", dtype_key(q.scale_dtype)}};
  if (!q.symmetric) j["zero_point"] = q.integer_zero_point ? "integer" : "float";
  if (q.clip_search) {
    j["clip_search"] = true;
    j["clip_min"] = q.clip_min;
    j["clip_step"] = q.clip_step;
  }
  if (q.inverse_scale) j["inverse_scale"] = true;
  return j;
}

std::vector<int> int_list(Reader& r, const std::string& key, int hi) {
  std::vector<int> out;
  if (!r.has(key)) return out;
  const json& v = r.at(key);
  if (!v.is_array()) r.err(key, "must be an array of integers");
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number_integer() || v[i].get<int64_t>() < 0 || v[i].get<int64_t>() > hi)
      r.err(key + "[" + std::to_string(i) + "]", fmt::format("must be an integer in 0..{}", hi));
    out.push_back(v[i].get<int>());
  }
  return out;
}

// One entry of "rules" or "overrides": which (layers, heads, kind) it selects and the TensorQuant
// fields it changes (validated against the K and V settings it applies to).
PolicyOverride read_override(const json& j, const Policy& p, const std::string& where, const std::string& path) {
  Reader ro(j, where, path);
  PolicyOverride o;
  o.layers = int_list(ro, "layers", 1 << 16);
  o.heads = int_list(ro, "heads", 1 << 16);
  o.head_groups = int_list(ro, "head_groups", 1 << 16);
  if (ro.has("layer_range")) {
    const json& lr = ro.at("layer_range");
    if (!lr.is_array() || lr.size() != 2 || !lr[0].is_number_unsigned() || !lr[1].is_number_unsigned() ||
        lr[0].get<int64_t>() > lr[1].get<int64_t>() || lr[1].get<int64_t>() > (1 << 16))
      ro.err("layer_range", "must be [first, last] layer indices with 0 <= first <= last");
    o.layer_lo = lr[0].get<int>();
    o.layer_hi = lr[1].get<int>();
  }
  std::string kind = ro.str("kind", "kv");
  if (kind != "k" && kind != "v" && kind != "kv") ro.err("kind", "must be \"k\", \"v\" or \"kv\"");
  o.k = kind.find('k') != std::string::npos;
  o.v = kind.find('v') != std::string::npos;
  // An override changes only the fields it names; it applies on top of K's or V's settings.
  for (const TensorQuant* base : {&p.k, &p.v}) {
    if ((base == &p.k && !o.k) || (base == &p.v && !o.v)) continue;
    TensorQuant q = *base;
    Reader rq(j, where, path);
    read_tensor_quant(rq, q);
  }
  o.json = j.dump();
  ro.reject_unknown(kTensorQuantKeys);
  return o;
}

}  // namespace

Policy parse_policy(const json& j, const std::string& where) {
  Reader r(j, where, "$");
  Policy p;
  p.name = r.str("name", "");
  p.description = r.str("description", "");
  if (!r.has("method")) r.err("method", "is required (" + method_list() + ")");
  const std::string m = r.str("method", "");
  p.method = find_method(m);
  if (!p.method) r.err("method", "unknown method '" + m + "' (expected " + method_list() + ")");
  const QuantMethod& method = *p.method;
  if (method.set_defaults) method.set_defaults(p);  // method defaults, then the file's fields on top
  for (const char* kind : {"k", "v"}) {
    if (!r.has(kind)) continue;
    Reader rk(r.at(kind), where, std::string("$.") + kind);
    read_tensor_quant(rk, kind[0] == 'k' ? p.k : p.v);
    rk.reject_unknown();
  }
  p.residual = r.integer("residual", p.residual, 0, 1 << 24);
  p.residual_layers = int_list(r, "residual_layers", 1 << 24);
  if (r.has("script")) {
    if (!r.at("script").is_object()) r.err("script", "must be an object (a policy script's record)");
    p.script_json = r.at("script").dump();
  }
  p.sink_tokens = r.integer("sink_tokens", p.sink_tokens, 0, 1 << 24);
  if (r.has("outlier_heads")) {
    Reader ro(r.at("outlier_heads"), where, "$.outlier_heads");
    std::string rule = ro.str("rule", "list");
    auto& o = p.outliers;
    if (rule == "none") o.rule = OutlierSelect::Rule::None;
    else if (rule == "list") o.rule = OutlierSelect::Rule::List;
    else if (rule == "mse_over_median") o.rule = OutlierSelect::Rule::MseOverMedian;
    else if (rule == "mse_share") o.rule = OutlierSelect::Rule::MseShare;
    else if (rule == "count") o.rule = OutlierSelect::Rule::Count;
    else ro.err("rule", "must be none, list, mse_over_median, mse_share or count");
    o.ratio = ro.number("ratio", o.ratio, 1, 1e12);
    o.share = ro.number("share", o.share, 0, 1, true);
    o.count = ro.integer("count", o.count, 0, 1 << 20);
    if (ro.has("heads")) {
      const json& hs = ro.at("heads");
      if (!hs.is_array()) ro.err("heads", "must be an array of [layer, head] pairs");
      for (size_t i = 0; i < hs.size(); ++i) {
        const json& h = hs[i];
        if (!h.is_array() || h.size() != 2 || !h[0].is_number_unsigned() || !h[1].is_number_unsigned())
          ro.err("heads[" + std::to_string(i) + "]", "must be a [layer, head] pair of non-negative integers");
        o.heads.emplace_back(h[0].get<int>(), h[1].get<int>());
      }
    }
    if (o.rule == OutlierSelect::Rule::List && o.heads.empty()) ro.err("heads", "rule 'list' needs at least one [layer, head]");
    ro.reject_unknown();
  }
  p.head_group_size = r.integer("head_group_size", p.head_group_size, 1, 1 << 16);
  for (const char* key : {"rules", "overrides"}) {
    if (!r.has(key)) continue;
    const json& ov = r.at(key);
    if (!ov.is_array()) r.err(key, "must be an array");
    for (size_t i = 0; i < ov.size(); ++i)
      (key[0] == 'r' ? p.rules : p.overrides).push_back(read_override(ov[i], p, where, fmt::format("$.{}[{}]", key, i)));
  }
  if (r.has("smooth")) {
    Reader rs(r.at("smooth"), where, "$.smooth");
    SmoothOptions so;
    so.factor = rs.number("factor", so.factor, 0, 1e6, true);
    for (auto* list : {&so.include, &so.exclude}) {
      const char* key = list == &so.include ? "include" : "exclude";
      if (!rs.has(key)) continue;
      const json& v = rs.at(key);
      if (!v.is_array()) rs.err(key, "must be an array of glob patterns");
      list->clear();
      for (size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_string()) rs.err(std::string(key) + "[" + std::to_string(i) + "]", "must be a string");
        list->push_back(v[i].get<std::string>());
      }
    }
    rs.reject_unknown();
    p.smooth = so;
  }
  if (r.has("rotation")) p.rotation = read_rotation(r, where);
  for (const QuantMethod* other : all_methods()) {  // every method's option block; only its own is accepted
    const std::string& key = other->options_key;
    if (key.empty() || !r.has(key)) continue;
    if (other != p.method) r.err(key, "only applies to method '" + other->name + "'");
    Reader ro(r.at(key), where, "$." + key);
    if (method.read_options) {
      method.read_options(ro, p);
    } else {
      p.method_options = r.at(key).dump();  // kept as written; the method reads it when it runs
    }
  }
  if (r.has("calibration")) {
    Reader rc(r.at("calibration"), where, "$.calibration");
    auto& c = p.calibration;
    const std::string mode = rc.str("mode", "none");
    if (mode == "none") c.mode = CalibrationSpec::Mode::None;
    else if (mode == "text") c.mode = CalibrationSpec::Mode::Text;
    else if (mode == "online") c.mode = CalibrationSpec::Mode::Online;
    else rc.err("mode", "must be \"none\", \"text\" or \"online\"");
    c.text = rc.str("text", "");
    c.tokens = rc.integer("tokens", c.tokens, 2, 1 << 20);
    if (c.mode == CalibrationSpec::Mode::Text && c.text.empty()) rc.err("text", "is required with mode \"text\" (a text file)");
    if (c.mode != CalibrationSpec::Mode::Text && !c.text.empty()) rc.err("text", "only applies to mode \"text\"");
    rc.reject_unknown();
  }
  if (r.has("attention")) {
    Reader ra(r.at("attention"), where, "$.attention");
    auto& a = p.attention;
    a.use_attentions = ra.boolean("use_attentions", a.use_attentions);
    a.last_n_attentions = ra.integer("last_n_attentions", a.last_n_attentions, 1, 1 << 20);
    if (ra.has("target_quantization_error")) {
      const json& t = ra.at("target_quantization_error");
      if (t.is_object()) {
        Reader rt(t, where, "$.attention.target_quantization_error");
        a.target_k = rt.number("k", 0, 0, 1e12, true);
        a.target_v = rt.number("v", 0, 0, 1e12, true);
        if (!rt.has("k") || !rt.has("v")) rt.err(rt.has("k") ? "v" : "k", "is required (a number > 0)");
        rt.reject_unknown();
      } else {
        a.target_k = a.target_v = ra.number("target_quantization_error", 0, 0, 1e12, true);
      }
    }
    if (ra.has("q_norm")) {
      const json& qn = ra.at("q_norm");
      if (qn.is_string() && qn.get<std::string>() == "measured") a.q_norm = 0;
      else if (qn.is_number() && qn.get<double>() > 0 && qn.get<double>() < 1e12) a.q_norm = qn.get<double>();
      else ra.err("q_norm", "must be a number > 0 or \"measured\"");
    }
    if (a.use_attentions) {
      if (!(a.target_k > 0 && a.target_v > 0)) ra.err("target_quantization_error", "must be > 0 when use_attentions is true");
      if (p.calibration.mode == CalibrationSpec::Mode::None)
        ra.err("use_attentions", "needs $.calibration.mode \"text\" or \"online\" (the attention is measured there)");
      if (!method.attention_bits) ra.err("use_attentions", "applies to methods " + methods_with(&QuantMethod::attention_bits));
    }
    ra.reject_unknown();
  }
  if (r.has("outliers_ratio")) {
    const json& o = r.at("outliers_ratio");
    if (o.is_object()) {
      Reader ro(o, where, "$.outliers_ratio");
      p.outliers_ratio_k = ro.number("k", 0, 0, 0.5);
      p.outliers_ratio_v = ro.number("v", 0, 0, 0.5);
      ro.reject_unknown();
    } else {
      p.outliers_ratio_k = p.outliers_ratio_v = r.number("outliers_ratio", 0, 0, 0.5);
    }
    if ((p.outliers_ratio_k > 0 || p.outliers_ratio_v > 0) && !method.group_outliers)
      r.err("outliers_ratio", "applies to methods " + methods_with(&QuantMethod::group_outliers));
  }
  if (r.has("budget")) {
    Reader rb(r.at("budget"), where, "$.budget");
    auto& b = p.budget;
    b.max_avg_bits = rb.number("max_avg_bits", b.max_avg_bits, 0, 16, true);
    if (rb.has("bit_range")) {
      const json& br = rb.at("bit_range");
      if (!br.is_array() || br.size() != 2 || !br[0].is_number_integer() || !br[1].is_number_integer() ||
          br[0].get<int64_t>() < 1 || br[1].get<int64_t>() > 16 || br[0].get<int64_t>() > br[1].get<int64_t>())
        rb.err("bit_range", "must be [min, max] integers with 1 <= min <= max <= 16");
      b.min_bits = br[0].get<int>();
      b.max_bits = br[1].get<int>();
    }
    rb.reject_unknown();
    auto check = [&](const TensorQuant& q, const std::string& path) {
      if (!q.full_precision && (q.bits < b.min_bits || q.bits > b.max_bits))
        r.err(path, fmt::format("{} bits is outside budget.bit_range [{}, {}]", q.bits, b.min_bits, b.max_bits));
    };
    check(p.k, "k.bits");
    check(p.v, "v.bits");
    for (const char* key : {"rules", "overrides"}) {
      const auto& list = key[0] == 'r' ? p.rules : p.overrides;
      for (size_t i = 0; i < list.size(); ++i) {
        const auto& o = list[i];
        if (o.k) check(apply_override(p.k, o), fmt::format("{}[{}].bits", key, i));
        if (o.v) check(apply_override(p.v, o), fmt::format("{}[{}].bits", key, i));
      }
    }
  }
  if (method.validate) method.validate(p, r);
  if (p.rotation) {  // a stage around per-head slices: not for layer-wide, Hessian-fitted or smoothed keys
    if (method.quantize_layer || method.needs_queries)
      r.err("rotation", "method '" + method.name + "' does not quantize head by head (rotation applies to per-head methods)");
    if (p.smooth) r.err("rotation", "is not combined with $.smooth");
  }
  r.reject_unknown();
  return p;
}

TensorQuant apply_override(const TensorQuant& base, const PolicyOverride& o) {
  TensorQuant q = base;
  const json patch = json::parse(o.json);  // the Reader keeps a reference: must outlive it
  Reader r(patch, "override", "$");
  read_tensor_quant(r, q);
  return q;
}

bool override_matches(const PolicyOverride& o, int layer, int head, char kind, int head_group_size) {
  const auto in = [](const std::vector<int>& v, int x) { return v.empty() || std::find(v.begin(), v.end(), x) != v.end(); };
  const bool range_ok = o.layer_lo < 0 || (layer >= o.layer_lo && layer <= o.layer_hi);
  return in(o.layers, layer) && range_ok && in(o.heads, head) && in(o.head_groups, head / std::max(1, head_group_size)) &&
         (kind == 'k' ? o.k : o.v);
}

int residual_of(const Policy& p, int layer) {
  return layer >= 0 && layer < static_cast<int>(p.residual_layers.size()) ? p.residual_layers[layer] : p.residual;
}

void check_residual_layers(const Policy& p, int layers) {
  if (!p.residual_layers.empty() && static_cast<int>(p.residual_layers.size()) != layers)
    fail("policy", "$.residual_layers: has {} entries, the model has {} layers", p.residual_layers.size(), layers);
}

bool needs_calibration(const Policy& p) {
  const auto rule = p.outliers.rule;
  return (rule != OutlierSelect::Rule::None && rule != OutlierSelect::Rule::List) || p.smooth.has_value() ||
         p.attention.use_attentions || p.method->needs_calibration ||  // e.g. WaterSIC: the key Hessian
         (p.method->needs_calibration_for && p.method->needs_calibration_for(p));  // e.g. FP8 amax scales
}

Policy load_policy_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, "cannot open policy file");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e309
    fail(path, "not valid JSON ({})", e.what());
  }
  Policy p = parse_policy(j, path);
  if (p.name.empty()) p.name = std::filesystem::path(path).stem().string();
  auto& text = p.calibration.text;  // relative to the policy file, like workload files
  if (!text.empty() && std::filesystem::path(text).is_relative())
    text = (std::filesystem::path(path).parent_path() / text).lexically_normal().string();
  return p;
}

json policy_to_json(const Policy& p) {
  json j{{"name", p.name}, {"method", method_name(p.method)}, {"k", tensor_quant_json(p.k)}, {"v", tensor_quant_json(p.v)},
         {"residual", p.residual}, {"sink_tokens", p.sink_tokens}};
  if (!p.description.empty()) j["description"] = p.description;
  const auto& o = p.outliers;
  if (o.rule != OutlierSelect::Rule::None) {
    json oj;
    switch (o.rule) {
      case OutlierSelect::Rule::List: {
        oj["rule"] = "list";
        json hs = json::array();
        for (auto [l, h] : o.heads) hs.push_back({l, h});
        oj["heads"] = hs;
        break;
      }
      case OutlierSelect::Rule::MseOverMedian: oj = {{"rule", "mse_over_median"}, {"ratio", o.ratio}}; break;
      case OutlierSelect::Rule::MseShare: oj = {{"rule", "mse_share"}, {"share", o.share}}; break;
      case OutlierSelect::Rule::Count: oj = {{"rule", "count"}, {"count", o.count}}; break;
      default: break;
    }
    j["outlier_heads"] = oj;
  }
  if (p.rotation)
    j["rotation"] = {{"kind", "hadamard"}, {"seed", p.rotation->seed},
                     {"kinds", p.rotation->k && p.rotation->v ? json{"k", "v"} : json{p.rotation->k ? "k" : "v"}}};
  if (p.smooth) j["smooth"] = {{"factor", p.smooth->factor}, {"include", p.smooth->include}, {"exclude", p.smooth->exclude}};
  if (const QuantMethod& m = *p.method; !m.options_key.empty()) {
    if (m.options_json) j[m.options_key] = m.options_json(p);
    else if (!p.method_options.empty()) j[m.options_key] = json::parse(p.method_options);
  }
  if (!p.budget.empty())
    j["budget"] = {{"max_avg_bits", p.budget.max_avg_bits}, {"bit_range", {p.budget.min_bits, p.budget.max_bits}}};
  for (const char* key : {"rules", "overrides"}) {
    const auto& list = key[0] == 'r' ? p.rules : p.overrides;
    if (list.empty()) continue;
    json arr = json::array();
    for (auto& ov : list) arr.push_back(json::parse(ov.json));
    j[key] = arr;
  }
  if (p.head_group_size != 1) j["head_group_size"] = p.head_group_size;
  if (!p.residual_layers.empty()) j["residual_layers"] = p.residual_layers;
  if (!p.script_json.empty()) j["script"] = json::parse(p.script_json);
  if (p.outliers_ratio_k > 0 || p.outliers_ratio_v > 0)
    j["outliers_ratio"] = p.outliers_ratio_k == p.outliers_ratio_v ? json(p.outliers_ratio_k)
                                                                   : json{{"k", p.outliers_ratio_k}, {"v", p.outliers_ratio_v}};
  if (p.calibration.mode != CalibrationSpec::Mode::None) {
    const auto& c = p.calibration;
    j["calibration"] = {{"mode", c.mode == CalibrationSpec::Mode::Text ? "text" : "online"}, {"tokens", c.tokens}};
    if (!c.text.empty()) j["calibration"]["text"] = c.text;
  }
  const auto& a = p.attention;
  if (a.use_attentions) {
    j["attention"] = {{"use_attentions", true}, {"last_n_attentions", a.last_n_attentions},
                      {"target_quantization_error", a.target_k == a.target_v ? json(a.target_k)
                                                                           : json{{"k", a.target_k}, {"v", a.target_v}}}};
    if (a.q_norm > 0) j["attention"]["q_norm"] = a.q_norm;
    else j["attention"]["q_norm"] = "measured";
  }
  return j;
}

std::string canonical_policy_json(const Policy& p) { return policy_to_json(p).dump(); }  // nlohmann sorts keys

std::string presets_dir() {
  if (const char* env = std::getenv("KVSCOPE_ASSETS"); env && *env) return std::string(env) + "/presets";
  // Next to the executable's install prefix first, else the source tree the binary was built from.
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto installed = exe.parent_path().parent_path() / "share" / "kvscope" / "presets";
    if (std::filesystem::is_directory(installed)) return installed.string();
  }
  return std::string(KVSCOPE_ASSETS_DIR) + "/presets";
}

std::vector<PresetInfo> list_presets() {
  std::vector<PresetInfo> out;
  std::string dir = presets_dir();
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".json") continue;
    Policy p = load_policy_file(e.path().string());
    out.push_back({e.path().stem().string(), p.description});
  }
  if (ec) fail(dir, "cannot list presets: {}", ec.message());
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

Policy load_preset(const std::string& name) {
  std::string path = presets_dir() + "/" + name + ".json";
  if (name.find('/') != std::string::npos || !std::filesystem::exists(path)) {
    std::string known;
    for (auto& p : list_presets()) known += (known.empty() ? "" : ", ") + p.name;
    fail(name, "unknown preset (known: {})", known);
  }
  Policy p = load_policy_file(path);
  p.name = name;
  return p;
}

}  // namespace kvscope
