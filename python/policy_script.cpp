#include "python/policy_script.h"

#include <pybind11/numpy.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/quant/method_registry.h"
#include "core/util/content_hash.h"
#include "core/util/error.h"
#include "core/util/file.h"
#include "python/interpreter.h"
#include "python/script_support.h"

namespace kvscope {

namespace {

namespace fs = std::filesystem;
namespace py = pybind11;
using json = nlohmann::json;
using namespace script;

// Hooks of the seed kvscope plans with; the two it has no equivalent for are refused when defined.
const char* const kStaticHooks[] = {"choose_bits",     "choose_axis",      "residual_length",   "calibration_mode",
                                    "quantizer_family", "group_size",      "sink_tokens",       "clip_ratio",
                                    "symmetric",        "outliers_ratio",  "use_attentions",    "bit_range",
                                    "last_n_attentions", "target_quantization_error", "q_norm"};
const char* const kUnsupportedHooks[] = {"quantization_level", "quantization_method"};

json to_json(const std::string& path, const char* name, const py::object& v) {
  try {
    return json::parse(loader().attr("to_json")(v).cast<std::string>());
  } catch (const py::error_already_set& e) {
    fail(path, "{} = {}: not plain JSON data ({})", name, short_repr(v), first_line(py::str(e.value()).cast<std::string>()));
  }
}

// The bits of (layer, head, kind) under a policy's settings, rules and overrides (fp16 = 16).
int effective_bits(const Policy& p, int layer, int head, char kind) {
  TensorQuant q = kind == 'k' ? p.k : p.v;
  for (const auto* list : {&p.rules, &p.overrides})
    for (const auto& o : *list)
      if (override_matches(o, layer, head, kind, p.head_group_size)) q = apply_override(q, o);
  return q.full_precision ? 16 : q.bits;
}

// Hooks called once per (layer, kind) with (layer_id, kv_kind, request_meta) that return one scalar,
// in the order they are called. A Field becomes part of that (layer, kind)'s override rule; a
// PerPolicy / PerKind value is kept once per policy (per kind): all calls must agree.
struct KindHook {
  const char* name;
  enum Type { Int, Float, Bool, Family } type;
  double lo, hi;
  bool lo_open;
  enum Scope { Field, PerPolicy, PerKind } scope;
};
const KindHook kKindHooks[] = {
    {"group_size", KindHook::Int, 0, 1 << 20, false, KindHook::Field},
    {"clip_ratio", KindHook::Float, 0.0, 1.0, true, KindHook::Field},
    {"symmetric", KindHook::Bool, 0, 0, false, KindHook::Field},
    {"quantizer_family", KindHook::Family, 0, 0, false, KindHook::PerPolicy},
    {"sink_tokens", KindHook::Int, 0, 1 << 24, false, KindHook::PerPolicy},
    {"outliers_ratio", KindHook::Float, 0.0, 0.5, false, KindHook::PerKind},
    {"use_attentions", KindHook::Bool, 0, 0, false, KindHook::PerPolicy},
    {"last_n_attentions", KindHook::Int, 1, 1 << 20, false, KindHook::PerPolicy},
    {"target_quantization_error", KindHook::Float, 0.0, 1e30, true, KindHook::PerKind},
    {"q_norm", KindHook::Float, 0.0, 1e30, false, KindHook::PerPolicy},
};

// One value per policy (or per kind) that all calls must agree on.
struct Uniform {
  json value;
  std::string first_call;
  void add(const std::string& path, const char* hook, bool per_kind, const std::string& call_desc, const json& v) {
    if (value.is_null()) {
      value = v;
      first_call = call_desc;
    } else if (value != v) {
      fail(path, "{} returned {} but {} returned {}: kvscope keeps one {} per policy{}", call_desc, v.dump(), first_call,
           value.dump(), hook, per_kind ? " and kind" : "");
    }
  }
};

std::string kind_arg(char kind) { return kind == 'k' ? "'k'" : "'v'"; }

Policy load_base(const std::string& path, const std::string& base_name) {
  try {
    if (fs::path(base_name).extension() != ".json") return load_preset(base_name);
    const fs::path p = fs::path(base_name).is_relative() ? fs::path(path).parent_path() / base_name : fs::path(base_name);
    return load_policy_file(p.string());
  } catch (const Error& e) {
    fail(path, "BASE = '{}': {}", base_name, e.what());
  }
}

// Plans one policy from a script: the base policy's JSON, then the hooks' decisions layer by layer
// as override rules, then the values kept once per policy. Runs with the GIL held.
class Planner {
 public:
  Planner(const std::string& path, const std::string& source, const ScriptTarget& target, py::object module, Hooks& pl)
      : path_(path), source_(source), target_(target), module_(std::move(module)), pl_(pl) {}

  json plan() {
    for (const char* hook : kUnsupportedHooks)
      if (pl_.defined(hook))
        fail(path_, "AdaptiveQuantPolicy.{} has no kvscope equivalent yet (express it with choose_axis or quantizer_family)", hook);
    start_doc();
    make_meta();
    if (pl_.defined("calibration_mode")) plan_calibration();
    for (int l = 0; l < target_.layers; ++l) {
      if (pl_.defined("residual_length")) plan_residual(l);
      for (char kind : {'k', 'v'}) plan_kind(l, kind);
    }
    finish_doc();
    return doc_;
  }

 private:
  // The base policy: hooks the class leaves out keep its settings.
  void start_doc() {
    if (py::hasattr(module_, "BASE")) {
      const py::object b = module_.attr("BASE");
      if (!PyUnicode_Check(b.ptr())) fail(path_, "BASE = {}: must be a preset name or a JSON policy file", short_repr(b));
      base_name_ = b.cast<std::string>();
    }
    doc_ = policy_to_json(load_base(path_, base_name_));
    doc_.erase("script");
    doc_["name"] = fs::path(path_).stem().string();
    doc_["description"] = "policy script " + fs::path(path_).filename().string() + " on base " + base_name_;
    if (py::hasattr(module_, "BUDGET")) doc_["budget"] = to_json(path_, "BUDGET", module_.attr("BUDGET"));
    if (py::hasattr(module_, "HEAD_GROUP_SIZE"))
      doc_["head_group_size"] = pl_.as_int("HEAD_GROUP_SIZE", module_.attr("HEAD_GROUP_SIZE"), 1, 1 << 16);
    pre_ = parse_policy(doc_, path_);  // the base with the module's budget: validated
    budget_ = pre_.budget.max_avg_bits;
    entries_ = 2LL * target_.layers * target_.kv_heads;
    if (doc_.contains("overrides")) overrides_ = doc_["overrides"];
    for (const char* hook : kStaticHooks)
      if (pl_.defined(hook)) used_.push_back(hook);
  }

  void make_meta() {
    meta_["model"] = target_.model_id;
    meta_["layers"] = target_.layers;
    meta_["kv_heads"] = target_.kv_heads;
    meta_["head_dim"] = target_.head_dim;
    meta_["tokens"] = target_.tokens;
    meta_["source"] = target_.source;
  }

  py::dict budget_state() const {
    py::dict b;
    b["max_avg_bits"] = budget_;
    b["bits_spent"] = spent_;
    b["entries_done"] = done_;
    b["entries_total"] = entries_;
    b["bits_left"] = budget_ > 0 ? py::object(py::float_(budget_ * static_cast<double>(entries_) - static_cast<double>(spent_)))
                                 : py::object(py::none());
    b["tokens"] = target_.tokens;
    return b;
  }

  void plan_calibration() {
    const std::string d = "calibration_mode(workload_meta, budget_state)";
    const std::string mode = pl_.as_str(d, pl_.call("calibration_mode", d, meta_, budget_state()), {"none", "text", "online"});
    decisions_.push_back({{"hook", "calibration_mode"}, {"value", mode}});
    if (mode == "none") doc_.erase("calibration");
    else doc_["calibration"]["mode"] = mode;
  }

  void plan_residual(int l) {
    const std::string d = fmt::format("residual_length(layer_id={}, request_meta)", l);
    const int r = static_cast<int>(pl_.as_int(d, pl_.call("residual_length", d, l, meta_), 0, 1 << 24));
    residuals_.push_back(r);
    decisions_.push_back({{"hook", "residual_length"}, {"layer", l}, {"value", r}});
  }

  void plan_kind(int l, char kind) {
    const std::string kv(1, kind);
    auto record = [&](const char* hook, const json& v) {
      decisions_.push_back({{"hook", hook}, {"layer", l}, {"kind", kv}, {"value", v}});
    };
    json fields = json::object();
    if (pl_.defined("choose_axis")) {
      const std::string d = fmt::format("choose_axis(layer_id={}, kv_kind={})", l, kind_arg(kind));
      const std::string axis = pl_.as_str(d, pl_.call("choose_axis", d, l, kv), {"token", "channel", "head"});
      fields["axis"] = axis;
      record("choose_axis", axis);
    }
    for (const KindHook& h : kKindHooks) {
      if (!pl_.defined(h.name)) continue;
      const std::string d = fmt::format("{}(layer_id={}, kv_kind={}, request_meta)", h.name, l, kind_arg(kind));
      const json v = kind_hook_value(h, d, pl_.call(h.name, d, l, kv, meta_));
      if (h.scope == KindHook::Field) fields[h.name] = v;
      else uniform_[h.scope == KindHook::PerKind ? std::string(h.name) + "/" + kv : h.name].add(path_, h.name, h.scope == KindHook::PerKind, d, v);
      record(h.name, v);
    }
    const auto [lo, hi] = bit_range(l, kind, record);
    json layer_bits = json::array();
    for (int h = 0; h < target_.kv_heads; ++h) layer_bits.push_back(effective_bits(pre_, l, h, kind));
    // Replay asks choose_bits per block as tokens leave the window (python/policy_blocks.h), not here.
    if (pl_.defined("choose_bits") && target_.source != "replay") {
      choose_bits(l, kind, fields, lo, hi, layer_bits);
    } else {
      if (!fields.empty()) {
        json rule = fields;
        rule["layers"] = {l};
        rule["kind"] = kv;
        overrides_.push_back(rule);
      }
      for (const json& b : layer_bits) spent_ += b.get<int>();
      done_ += target_.kv_heads;
    }
    bits_record_[kv].push_back(layer_bits);
  }

  json kind_hook_value(const KindHook& h, const std::string& d, const py::object& v) const {
    switch (h.type) {
      case KindHook::Int: return pl_.as_int(d, v, static_cast<long long>(h.lo), static_cast<long long>(h.hi));
      case KindHook::Float: return pl_.as_float(d, v, h.lo, h.hi, h.lo_open);
      case KindHook::Bool: return pl_.as_bool(d, v);
      case KindHook::Family: {
        std::vector<std::string> families;  // the method registry's names
        for (const QuantMethod* m : all_methods()) families.push_back(m->name);
        return pl_.as_str(d, v, families);
      }
    }
    return json();
  }

  template <typename Record>
  std::pair<int, int> bit_range(int l, char kind, const Record& record) {
    if (!pl_.defined("bit_range")) return {pre_.budget.min_bits, pre_.budget.max_bits};
    const std::string d = fmt::format("bit_range(layer_id={}, kv_kind={}, request_meta, budget_state)", l, kind_arg(kind));
    const py::object v = pl_.call("bit_range", d, l, std::string(1, kind), meta_, budget_state());
    if (!(PyTuple_Check(v.ptr()) || PyList_Check(v.ptr())) || py::len(v) != 2) pl_.bad(d, v, "must be a tuple (min_bits, max_bits)");
    const py::sequence seq = py::reinterpret_borrow<py::sequence>(v);
    const int a = static_cast<int>(pl_.as_int(d, seq[0], 1, 16)), b = static_cast<int>(pl_.as_int(d, seq[1], 1, 16));
    if (a > b) pl_.bad(d, v, "min_bits must be <= max_bits");
    if (a < pre_.budget.min_bits || b > pre_.budget.max_bits)
      pl_.bad(d, v, fmt::format("outside the budget's bit_range [{}, {}]", pre_.budget.min_bits, pre_.budget.max_bits));
    record("bit_range", json::array({a, b}));
    return {a, b};
  }

  // choose_bits once per head group of (layer, kind), checked against the bit range and the budget.
  void choose_bits(int l, char kind, const json& fields, int lo, int hi, json& layer_bits) {
    const std::string kv(1, kind);
    const int H = target_.kv_heads, G = pre_.head_group_size, groups = (H + G - 1) / G;
    for (int g = 0; g < groups; ++g) {
      const int h0 = g * G, h1 = std::min(H, h0 + G), n = h1 - h0;
      const std::string d = fmt::format(
          "choose_bits(layer_id={}, kv_kind={}, head_group={}, token_stats, budget_state={{bits_spent: {}, entries_done: {}}})", l,
          kind_arg(kind), g, spent_, done_);
      const KvDump* dump = target_.dump;
      const py::object stats = dump ? py::object(token_stats(kind == 'k' ? dump->k(l, h0) : dump->v(l, h0), dump->head_elems(),
                                                             dump->shape.tokens, dump->shape.head_dim, h0, h1))
                                    : py::object(py::none());
      const py::object v = pl_.call("choose_bits", d, l, kv, g, stats, budget_state());
      const int b = static_cast<int>(pl_.as_int(d, v, 1, 16));
      if (b != 16 && (b < lo || b > hi || b > 8))
        pl_.bad(d, v, fmt::format("outside the bit range [{}, {}] (at most 8; 16 keeps fp16)", lo, std::min(hi, 8)));
      if (b == 16 && hi < 16) pl_.bad(d, v, fmt::format("16 (fp16) is outside the bit range [{}, {}]", lo, hi));
      const long long after = spent_ + static_cast<long long>(b) * n, left = entries_ - done_ - n;
      const double total = budget_ * static_cast<double>(entries_);
      if (budget_ > 0 && static_cast<double>(after + left * pre_.budget.min_bits) > total + 1e-9)
        pl_.bad(d, v, fmt::format("overspends the budget of {:g} bits per KV entry ({} of {:g} bits would be spent with "
                                  "{} entries left, which need at least {} bits each)",
                                  budget_, after, total, left, pre_.budget.min_bits));
      spent_ = after;
      done_ += n;
      json rule = fields;
      rule["layers"] = {l};
      rule["head_groups"] = {g};
      rule["kind"] = kv;
      if (b != 16) rule["bits"] = b;
      rule["fp16"] = b == 16;
      overrides_.push_back(rule);
      for (int h = h0; h < h1; ++h) layer_bits[h] = b;
      decisions_.push_back({{"hook", "choose_bits"}, {"layer", l}, {"kind", kv}, {"head_group", g}, {"value", b}});
    }
  }

  const json& kept(const std::string& key) { return uniform_[key].value; }

  // The values kept once per policy, the overrides, the budget check and the script record.
  void finish_doc() {
    if (!residuals_.empty()) {
      doc_.erase("residual_layers");
      if (std::all_of(residuals_.begin(), residuals_.end(), [&](int r) { return r == residuals_[0]; }))
        doc_["residual"] = residuals_[0];
      else
        doc_["residual_layers"] = residuals_;
    }
    auto per_kind = [&](const char* hook, double k, double v) {
      const json &a = kept(std::string(hook) + "/k"), &b = kept(std::string(hook) + "/v");
      return a.is_null() && b.is_null() ? json() : json{{"k", a.is_null() ? json(k) : a}, {"v", b.is_null() ? json(v) : b}};
    };
    if (!kept("quantizer_family").is_null()) doc_["method"] = kept("quantizer_family");
    if (!kept("sink_tokens").is_null()) doc_["sink_tokens"] = kept("sink_tokens");
    if (json r = per_kind("outliers_ratio", pre_.outliers_ratio_k, pre_.outliers_ratio_v); !r.is_null()) doc_["outliers_ratio"] = r;
    if (!kept("use_attentions").is_null()) doc_["attention"]["use_attentions"] = kept("use_attentions");
    if (!kept("last_n_attentions").is_null()) doc_["attention"]["last_n_attentions"] = kept("last_n_attentions");
    if (const json& q = kept("q_norm"); !q.is_null()) doc_["attention"]["q_norm"] = q.get<double>() == 0 ? json("measured") : q;
    if (json t = per_kind("target_quantization_error", pre_.attention.target_k, pre_.attention.target_v); !t.is_null())
      doc_["attention"]["target_quantization_error"] = t;
    if (!overrides_.empty()) doc_["overrides"] = overrides_;
    if (budget_ > 0 && static_cast<double>(spent_) > budget_ * static_cast<double>(entries_) + 1e-9)
      fail(path_, "the planned bits average {:.4g} per KV entry, over BUDGET's {:g} (hooks left out keep the base's bits)",
           static_cast<double>(spent_) / static_cast<double>(entries_), budget_);
    const bool per_block = target_.source == "replay";
    doc_["script"] = {{"path", fs::absolute(path_).lexically_normal().string()},
                      {"hash", hash_text(source_)},
                      {"source", source_},
                      {"base", base_name_},
                      {"hooks", used_},
                      {"decisions", decisions_},
                      {"choose_bits", !pl_.defined("choose_bits") ? "not defined" : per_block ? "per block" : "planned"},
                      {"bits", bits_record_}};
  }

  const std::string& path_;
  const std::string& source_;
  const ScriptTarget& target_;
  py::object module_;
  Hooks& pl_;
  std::string base_name_ = "kivi-2";
  json doc_, decisions_ = json::array(), overrides_ = json::array();
  json bits_record_ = {{"k", json::array()}, {"v", json::array()}};
  Policy pre_;
  double budget_ = 0;
  long long entries_ = 0, spent_ = 0, done_ = 0;
  py::dict meta_;
  std::vector<int> residuals_;
  std::map<std::string, Uniform> uniform_;
  std::vector<std::string> used_;
};

}  // namespace

bool is_policy_script(const std::string& path) { return fs::path(path).extension() == ".py"; }

std::string check_policy_script(const std::string& path) {
  const std::string source = read_file(path, "policy script");
  python::with_gil([&] {
    py::object module = load_module(path, source);
    policy_class(path, module);
  });
  return source;
}

Policy plan_policy_script(const std::string& path, const ScriptTarget& target) {
  const std::string source = read_file(path, "policy script");
  if (target.layers <= 0 || target.kv_heads <= 0) fail(path, "nothing to plan for ({} layers x {} KV heads)", target.layers, target.kv_heads);
  json doc;
  python::with_gil([&] {
    py::object module = load_module(path, source);
    py::object cls = policy_class(path, module);
    py::object inst;
    try {
      inst = cls();
    } catch (const py::error_already_set& e) {
      throw Error(describe(e, path) + " (in AdaptiveQuantPolicy())");
    }
    Hooks pl(path, inst);
    doc = Planner(path, source, target, module, pl).plan();
  });
  return parse_policy(doc, path);
}

}  // namespace kvscope
