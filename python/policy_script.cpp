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

namespace kvscope {

namespace {

namespace fs = std::filesystem;
namespace py = pybind11;
using json = nlohmann::json;

// Loads a script as a module of its own: compiled from its text (a SyntaxError surfaces here,
// before anything runs), executed with its folder on sys.path for its own imports.
const char* const kLoader = R"py(
import json, os, sys, types

def load(path, source):
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType("kvscope_policy_script")
    module.__file__ = path
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    try:
        exec(code, module.__dict__)
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module

def to_json(value):
    return json.dumps(value)
)py";

py::object& loader() {
  static py::object* mod = [] {
    auto* m = new py::object(py::module_::import("types").attr("ModuleType")("kvscope_policy_loader"));
    py::dict ns = m->attr("__dict__");
    py::exec(kLoader, ns);
    return m;
  }();
  return *mod;
}

std::string first_line(std::string s) {
  if (const size_t nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

std::string short_repr(py::handle v) {
  std::string s;
  try {
    s = py::repr(v).cast<std::string>();
  } catch (const py::error_already_set&) {
    s = "<unprintable>";
  }
  s = first_line(s);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// "<file>:<line>: <Type>: <message>" for the exception being handled.
std::string describe(const py::error_already_set& e, const std::string& path) {
  const python::ExceptionInfo info = python::exception_info(e, path);
  return first_line(path + (info.line > 0 ? ":" + std::to_string(info.line) : "") + ": " + info.type + ": " + info.message);
}

py::object load_module(const std::string& path, const std::string& source) {
  try {
    return loader().attr("load")(path, source);
  } catch (const py::error_already_set& e) {
    throw Error(describe(e, path));
  }
}

py::object policy_class(const std::string& path, const py::object& module) {
  if (!py::hasattr(module, "AdaptiveQuantPolicy")) fail(path, "defines no class AdaptiveQuantPolicy");
  py::object cls = module.attr("AdaptiveQuantPolicy");
  if (!PyType_Check(cls.ptr())) fail(path, "AdaptiveQuantPolicy is {}, not a class", short_repr(cls));
  return cls;
}

// Hooks of the seed kvscope plans with; the two it has no equivalent for are refused when defined.
const char* const kStaticHooks[] = {"choose_bits",     "choose_axis",      "residual_length",   "calibration_mode",
                                    "quantizer_family", "group_size",      "sink_tokens",       "clip_ratio",
                                    "symmetric",        "outliers_ratio",  "use_attentions",    "bit_range",
                                    "last_n_attentions", "target_quantization_error", "q_norm"};
const char* const kUnsupportedHooks[] = {"quantization_level", "quantization_method"};

class Planner {
 public:
  Planner(std::string path, py::object inst) : path_(std::move(path)), inst_(std::move(inst)) {}

  bool defined(const char* hook) const {
    if (!py::hasattr(inst_, hook)) return false;
    return PyCallable_Check(inst_.attr(hook).ptr()) != 0;
  }

  // Calls a hook; `call` describes it for errors ("choose_bits(layer_id=0, kv_kind='k', ...)").
  template <typename... Args>
  py::object call(const char* hook, const std::string& call_desc, Args&&... args) {
    try {
      return inst_.attr(hook)(std::forward<Args>(args)...);
    } catch (const py::error_already_set& e) {
      throw Error(describe(e, path_) + " (in " + call_desc + ")");
    }
  }

  [[noreturn]] void bad(const std::string& call_desc, py::handle v, const std::string& want) const {
    fail(path_, "{} returned {}: {}", call_desc, short_repr(v), want);
  }

  long long as_int(const std::string& call_desc, py::handle v, long long lo, long long hi) const {
    if (PyBool_Check(v.ptr()) || !PyIndex_Check(v.ptr())) bad(call_desc, v, "must be an int");
    long long x = 0;
    try {
      x = py::int_(py::reinterpret_borrow<py::object>(v)).cast<long long>();
    } catch (const std::exception&) {
      bad(call_desc, v, fmt::format("must be an int in {}..{}", lo, hi));
    }
    if (x < lo || x > hi) bad(call_desc, v, fmt::format("must be an int in {}..{}", lo, hi));
    return x;
  }

  double as_float(const std::string& call_desc, py::handle v, double lo, double hi, bool lo_open) const {
    const bool numpy_number = py::hasattr(v, "dtype") && py::hasattr(v, "__float__");
    if (PyBool_Check(v.ptr()) || !(PyFloat_Check(v.ptr()) || PyLong_Check(v.ptr()) || numpy_number))
      bad(call_desc, v, "must be a float");
    double x = 0;
    try {
      x = py::float_(py::reinterpret_borrow<py::object>(v)).cast<double>();
    } catch (const std::exception&) {
      bad(call_desc, v, "must be a float");
    }
    if (!std::isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi)
      bad(call_desc, v, fmt::format("must be a float in {}{}, {}]", lo_open ? "(" : "[", lo, hi));
    return x;
  }

  std::string as_str(const std::string& call_desc, py::handle v, const std::vector<std::string>& allowed) const {
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "'" : ", '") + a + "'";
    if (!PyUnicode_Check(v.ptr())) bad(call_desc, v, "must be a str, one of " + list);
    const std::string s = v.cast<std::string>();
    for (const auto& a : allowed)
      if (s == a) return s;
    bad(call_desc, v, "must be one of " + list);
  }

  bool as_bool(const std::string& call_desc, py::handle v) const {
    const std::string type = py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>();
    if (!PyBool_Check(v.ptr()) && type != "bool_") bad(call_desc, v, "must be a bool");
    return PyObject_IsTrue(v.ptr()) == 1;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  py::object inst_;
};

json to_json(const std::string& path, const char* name, const py::object& v) {
  try {
    return json::parse(loader().attr("to_json")(v).cast<std::string>());
  } catch (const py::error_already_set& e) {
    fail(path, "{} = {}: not plain JSON data ({})", name, short_repr(v), first_line(py::str(e.value()).cast<std::string>()));
  }
}

// token_stats of heads [h0, h1) of one layer and kind: per-channel absmax, mean, variance (population)
// and the mean L2 norm of a token's vector, over all tokens of the dump.
py::dict token_stats(const KvDump& dump, int layer, bool is_k, int h0, int h1) {
  const int T = dump.shape.tokens, D = dump.shape.head_dim, n = h1 - h0;
  py::array_t<float> absmax({n, D}), mean({n, D}), var({n, D}), norms(n);
  auto a = absmax.mutable_unchecked<2>(), m = mean.mutable_unchecked<2>(), s = var.mutable_unchecked<2>();
  auto nr = norms.mutable_unchecked<1>();
  std::vector<double> sum(D), sum2(D), amax(D);
  for (int i = 0; i < n; ++i) {
    const float* x = is_k ? dump.k(layer, h0 + i) : dump.v(layer, h0 + i);
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(sum2.begin(), sum2.end(), 0.0);
    std::fill(amax.begin(), amax.end(), 0.0);
    double norm_sum = 0;
    for (int t = 0; t < T; ++t) {
      double sq = 0;
      for (int c = 0; c < D; ++c) {
        const double v = x[static_cast<size_t>(t) * D + c];
        sum[c] += v;
        sum2[c] += v * v;
        amax[c] = std::max(amax[c], std::abs(v));
        sq += v * v;
      }
      norm_sum += std::sqrt(sq);
    }
    for (int c = 0; c < D; ++c) {
      const double mu = T > 0 ? sum[c] / T : 0.0;
      a(i, c) = static_cast<float>(amax[c]);
      m(i, c) = static_cast<float>(mu);
      s(i, c) = static_cast<float>(T > 0 ? std::max(0.0, sum2[c] / T - mu * mu) : 0.0);
    }
    nr(i) = static_cast<float>(T > 0 ? norm_sum / T : 0.0);
  }
  py::list heads;
  for (int h = h0; h < h1; ++h) heads.append(h);
  py::dict d;
  d["absmax"] = absmax;
  d["mean"] = mean;
  d["variance"] = var;
  d["head_norms"] = norms;
  d["tokens"] = T;
  d["heads"] = heads;
  return d;
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
    Planner pl(path, inst);
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
        if (pl.defined("choose_bits")) {
          for (int g = 0; g < groups; ++g) {
            const int h0 = g * G, h1 = std::min(H, h0 + G), n = h1 - h0;
            const std::string d = fmt::format("choose_bits(layer_id={}, kv_kind={}, head_group={}, token_stats, budget_state={{bits_spent: {}, entries_done: {}}})",
                                              l, kind_arg(kind), g, spent, done);
            const py::object stats = target.dump ? py::object(token_stats(*target.dump, l, kind == 'k', h0, h1)) : py::object(py::none());
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
              {"bits", bits_record}};
  });
  doc["script"] = record;
  Policy p = parse_policy(doc, path);
  return p;
}

}  // namespace kvscope
