#include "python/policy_script.h"

#include <pybind11/numpy.h>

#include <cmath>
#include <filesystem>
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

// One value per (layer, kind) that kvscope keeps once per policy (or per kind): all calls must agree.
struct Uniform {
  json value;
  std::string first_call;
  void add(const std::string& path, const char* hook, const std::string& call_desc, const json& v) {
    if (value.is_null()) {
      value = v;
      first_call = call_desc;
    } else if (value != v) {
      fail(path, "{} returned {} but {} returned {}: kvscope keeps one {} per policy{}", call_desc, v.dump(),
           first_call, value.dump(), hook, std::string(hook) == "outliers_ratio" ? " and kind" : "");
    }
  }
};

std::string kind_arg(char kind) { return kind == 'k' ? "'k'" : "'v'"; }

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
  const int L = target.layers, H = target.kv_heads;
  if (L <= 0 || H <= 0) fail(path, "nothing to plan for ({} layers x {} KV heads)", L, H);
  json doc, record;
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
    for (const char* hook : kUnsupportedHooks)
      if (pl.defined(hook))
        fail(path, "AdaptiveQuantPolicy.{} has no kvscope equivalent yet (express it with choose_axis or quantizer_family)", hook);

    // The base policy: hooks the class leaves out keep its settings.
    std::string base_name = "kivi-2";
    if (py::hasattr(module, "BASE")) {
      const py::object b = module.attr("BASE");
      if (!PyUnicode_Check(b.ptr())) fail(path, "BASE = {}: must be a preset name or a JSON policy file", short_repr(b));
      base_name = b.cast<std::string>();
    }
    Policy base;
    try {
      if (fs::path(base_name).extension() == ".json") {
        const fs::path p = fs::path(base_name).is_relative() ? fs::path(path).parent_path() / base_name : fs::path(base_name);
        base = load_policy_file(p.string());
      } else {
        base = load_preset(base_name);
      }
    } catch (const Error& e) {
      fail(path, "BASE = '{}': {}", base_name, e.what());
    }
    doc = policy_to_json(base);
    doc.erase("script");
    doc["name"] = fs::path(path).stem().string();
    doc["description"] = "policy script " + fs::path(path).filename().string() + " on base " + base_name;
    if (py::hasattr(module, "BUDGET")) doc["budget"] = to_json(path, "BUDGET", module.attr("BUDGET"));
    if (py::hasattr(module, "HEAD_GROUP_SIZE"))
      doc["head_group_size"] = pl.as_int("HEAD_GROUP_SIZE", module.attr("HEAD_GROUP_SIZE"), 1, 1 << 16);
    const Policy pre = parse_policy(doc, path);  // the base with the module's budget: validated
    const int G = pre.head_group_size, groups = (H + G - 1) / G;
    const double B = pre.budget.max_avg_bits;
    const long long entries = 2LL * L * H;

    py::dict meta;
    meta["model"] = target.model_id;
    meta["layers"] = L;
    meta["kv_heads"] = H;
    meta["head_dim"] = target.head_dim;
    meta["tokens"] = target.tokens;
    meta["source"] = target.source;
    long long spent = 0, done = 0;
    auto budget_state = [&] {
      py::dict b;
      b["max_avg_bits"] = B;
      b["bits_spent"] = spent;
      b["entries_done"] = done;
      b["entries_total"] = entries;
      b["bits_left"] = B > 0 ? py::object(py::float_(B * static_cast<double>(entries) - static_cast<double>(spent)))
                             : py::object(py::none());
      b["tokens"] = target.tokens;
      return b;
    };
    const std::string meta_desc = "request_meta";
    // Replay asks choose_bits per block as tokens leave the window (python/policy_blocks.h), not here.
    const bool per_block = target.source == "replay";

    json decisions = json::array(), overrides = doc.contains("overrides") ? doc["overrides"] : json::array();
    json bits_record = {{"k", json::array()}, {"v", json::array()}};
    std::vector<int> residuals;
    Uniform family, sinks, use_attn, last_n, qnorm, ratio[2], target_err[2];
    std::vector<std::string> used;
    for (const char* hook : kStaticHooks)
      if (pl.defined(hook)) used.push_back(hook);

    if (pl.defined("calibration_mode")) {
      const std::string d = "calibration_mode(workload_meta, budget_state)";
      const std::string mode = pl.as_str(d, pl.call("calibration_mode", d, meta, budget_state()), {"none", "text", "online"});
      decisions.push_back({{"hook", "calibration_mode"}, {"value", mode}});
      if (mode == "none") doc.erase("calibration");
      else doc["calibration"]["mode"] = mode;
    }
    for (int l = 0; l < L; ++l) {
      if (pl.defined("residual_length")) {
        const std::string d = fmt::format("residual_length(layer_id={}, request_meta)", l);
        const int r = static_cast<int>(pl.as_int(d, pl.call("residual_length", d, l, meta), 0, 1 << 24));
        residuals.push_back(r);
        decisions.push_back({{"hook", "residual_length"}, {"layer", l}, {"value", r}});
      }
      for (char kind : {'k', 'v'}) {
        const std::string kv(1, kind);
        const int ki = kind == 'k' ? 0 : 1;
        auto args3 = [&](const char* hook) { return fmt::format("{}(layer_id={}, kv_kind={}, {})", hook, l, kind_arg(kind), meta_desc); };
        auto record_decision = [&](const char* hook, const json& v) {
          decisions.push_back({{"hook", hook}, {"layer", l}, {"kind", kv}, {"value", v}});
        };
        json fields = json::object();
        if (pl.defined("choose_axis")) {
          const std::string d = fmt::format("choose_axis(layer_id={}, kv_kind={})", l, kind_arg(kind));
          const std::string axis = pl.as_str(d, pl.call("choose_axis", d, l, kv), {"token", "channel", "head"});
          fields["axis"] = axis;
          record_decision("choose_axis", axis);
        }
        if (pl.defined("group_size")) {
          const std::string d = args3("group_size");
          const long long g = pl.as_int(d, pl.call("group_size", d, l, kv, meta), 0, 1 << 20);
          fields["group_size"] = g;
          record_decision("group_size", g);
        }
        if (pl.defined("clip_ratio")) {
          const std::string d = args3("clip_ratio");
          const double c = pl.as_float(d, pl.call("clip_ratio", d, l, kv, meta), 0.0, 1.0, true);
          fields["clip_ratio"] = c;
          record_decision("clip_ratio", c);
        }
        if (pl.defined("symmetric")) {
          const std::string d = args3("symmetric");
          const bool s = pl.as_bool(d, pl.call("symmetric", d, l, kv, meta));
          fields["symmetric"] = s;
          record_decision("symmetric", s);
        }
        if (pl.defined("quantizer_family")) {
          const std::string d = args3("quantizer_family");
          std::vector<std::string> families;  // the method registry's names
          for (const QuantMethod* m : all_methods()) families.push_back(m->name);
          const std::string f = pl.as_str(d, pl.call("quantizer_family", d, l, kv, meta), families);
          family.add(path, "quantizer_family", d, f);
          record_decision("quantizer_family", f);
        }
        if (pl.defined("sink_tokens")) {
          const std::string d = args3("sink_tokens");
          const long long s = pl.as_int(d, pl.call("sink_tokens", d, l, kv, meta), 0, 1 << 24);
          sinks.add(path, "sink_tokens", d, s);
          record_decision("sink_tokens", s);
        }
        if (pl.defined("outliers_ratio")) {
          const std::string d = args3("outliers_ratio");
          const double r = pl.as_float(d, pl.call("outliers_ratio", d, l, kv, meta), 0.0, 0.5, false);
          ratio[ki].add(path, "outliers_ratio", d, r);
          record_decision("outliers_ratio", r);
        }
        if (pl.defined("use_attentions")) {
          const std::string d = args3("use_attentions");
          const bool u = pl.as_bool(d, pl.call("use_attentions", d, l, kv, meta));
          use_attn.add(path, "use_attentions", d, u);
          record_decision("use_attentions", u);
        }
        if (pl.defined("last_n_attentions")) {
          const std::string d = args3("last_n_attentions");
          const long long n = pl.as_int(d, pl.call("last_n_attentions", d, l, kv, meta), 1, 1 << 20);
          last_n.add(path, "last_n_attentions", d, n);
          record_decision("last_n_attentions", n);
        }
        if (pl.defined("target_quantization_error")) {
          const std::string d = args3("target_quantization_error");
          const double t = pl.as_float(d, pl.call("target_quantization_error", d, l, kv, meta), 0.0, 1e30, true);
          target_err[ki].add(path, "target_quantization_error", d, t);
          record_decision("target_quantization_error", t);
        }
        if (pl.defined("q_norm")) {
          const std::string d = args3("q_norm");
          const double q = pl.as_float(d, pl.call("q_norm", d, l, kv, meta), 0.0, 1e30, false);
          qnorm.add(path, "q_norm", d, q);
          record_decision("q_norm", q);
        }
        int lo = pre.budget.min_bits, hi = pre.budget.max_bits;
        if (pl.defined("bit_range")) {
          const std::string d = fmt::format("bit_range(layer_id={}, kv_kind={}, request_meta, budget_state)", l, kind_arg(kind));
          const py::object v = pl.call("bit_range", d, l, kv, meta, budget_state());
          if (!(PyTuple_Check(v.ptr()) || PyList_Check(v.ptr())) || py::len(v) != 2)
            pl.bad(d, v, "must be a tuple (min_bits, max_bits)");
          const py::sequence seq = py::reinterpret_borrow<py::sequence>(v);
          const int a = static_cast<int>(pl.as_int(d, seq[0], 1, 16)), b = static_cast<int>(pl.as_int(d, seq[1], 1, 16));
          if (a > b) pl.bad(d, v, "min_bits must be <= max_bits");
          if (a < pre.budget.min_bits || b > pre.budget.max_bits)
            pl.bad(d, v, fmt::format("outside the budget's bit_range [{}, {}]", pre.budget.min_bits, pre.budget.max_bits));
          lo = a;
          hi = b;
          record_decision("bit_range", json::array({a, b}));
        }
        json layer_bits = json::array();
        for (int h = 0; h < H; ++h) layer_bits.push_back(effective_bits(pre, l, h, kind));
        if (pl.defined("choose_bits") && !per_block) {
          for (int g = 0; g < groups; ++g) {
            const int h0 = g * G, h1 = std::min(H, h0 + G), n = h1 - h0;
            const std::string d = fmt::format("choose_bits(layer_id={}, kv_kind={}, head_group={}, token_stats, budget_state={{bits_spent: {}, entries_done: {}}})",
                                              l, kind_arg(kind), g, spent, done);
            const py::object stats = target.dump ? py::object(token_stats(kind == 'k' ? target.dump->k(l, h0) : target.dump->v(l, h0), target.dump->head_elems(),
                                                                         target.dump->shape.tokens, target.dump->shape.head_dim, h0, h1)) : py::object(py::none());
            const py::object v = pl.call("choose_bits", d, l, kv, g, stats, budget_state());
            const int b = static_cast<int>(pl.as_int(d, v, 1, 16));
            if (b != 16 && (b < lo || b > hi || b > 8))
              pl.bad(d, v, fmt::format("outside the bit range [{}, {}] (at most 8; 16 keeps fp16)", lo, std::min(hi, 8)));
            if (b == 16 && hi < 16) pl.bad(d, v, fmt::format("16 (fp16) is outside the bit range [{}, {}]", lo, hi));
            const long long after = spent + static_cast<long long>(b) * n, left = entries - done - n;
            if (B > 0 && static_cast<double>(after + left * pre.budget.min_bits) > B * static_cast<double>(entries) + 1e-9)
              pl.bad(d, v, fmt::format("overspends the budget of {:g} bits per KV entry ({} of {:g} bits would be spent with "
                                       "{} entries left, which need at least {} bits each)",
                                       B, after, B * static_cast<double>(entries), left, pre.budget.min_bits));
            spent = after;
            done += n;
            json rule = fields;
            rule["layers"] = {l};
            rule["head_groups"] = {g};
            rule["kind"] = kv;
            if (b == 16) {
              rule["fp16"] = true;
            } else {
              rule["bits"] = b;
              rule["fp16"] = false;
            }
            overrides.push_back(rule);
            for (int h = h0; h < h1; ++h) layer_bits[h] = b;
            decisions.push_back({{"hook", "choose_bits"}, {"layer", l}, {"kind", kv}, {"head_group", g}, {"value", b}});
          }
        } else {
          if (!fields.empty()) {
            json rule = fields;
            rule["layers"] = {l};
            rule["kind"] = kv;
            overrides.push_back(rule);
          }
          for (int h = 0; h < H; ++h) spent += layer_bits[h].get<int>();
          done += H;
        }
        bits_record[kv].push_back(layer_bits);
      }
    }
    if (!residuals.empty()) {
      doc.erase("residual_layers");
      if (std::all_of(residuals.begin(), residuals.end(), [&](int r) { return r == residuals[0]; }))
        doc["residual"] = residuals[0];
      else
        doc["residual_layers"] = residuals;
    }
    if (!family.value.is_null()) doc["method"] = family.value;
    if (!sinks.value.is_null()) doc["sink_tokens"] = sinks.value;
    if (!ratio[0].value.is_null() || !ratio[1].value.is_null())
      doc["outliers_ratio"] = {{"k", ratio[0].value.is_null() ? json(pre.outliers_ratio_k) : ratio[0].value},
                               {"v", ratio[1].value.is_null() ? json(pre.outliers_ratio_v) : ratio[1].value}};
    if (!use_attn.value.is_null()) doc["attention"]["use_attentions"] = use_attn.value;
    if (!last_n.value.is_null()) doc["attention"]["last_n_attentions"] = last_n.value;
    if (!qnorm.value.is_null()) doc["attention"]["q_norm"] = qnorm.value.get<double>() == 0 ? json("measured") : qnorm.value;
    if (!target_err[0].value.is_null() || !target_err[1].value.is_null())
      doc["attention"]["target_quantization_error"] = {
          {"k", target_err[0].value.is_null() ? json(pre.attention.target_k) : target_err[0].value},
          {"v", target_err[1].value.is_null() ? json(pre.attention.target_v) : target_err[1].value}};
    if (!overrides.empty()) doc["overrides"] = overrides;
    if (B > 0 && static_cast<double>(spent) > B * static_cast<double>(entries) + 1e-9)
      fail(path, "the planned bits average {:.4g} per KV entry, over BUDGET's {:g} (hooks left out keep the base's bits)",
           static_cast<double>(spent) / static_cast<double>(entries), B);
    record = {{"path", fs::absolute(path).lexically_normal().string()},
              {"hash", hash_text(source)},
              {"source", source},
              {"base", base_name},
              {"hooks", used},
              {"decisions", decisions},
              {"choose_bits", !pl.defined("choose_bits") ? "not defined" : per_block ? "per block" : "planned"},
              {"bits", bits_record}};
  });
  doc["script"] = record;
  Policy p = parse_policy(doc, path);
  return p;
}

}  // namespace kvscope
