#include "python/script_support.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cmath>

#include "python/interpreter.h"

namespace kvscope::script {

namespace {
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

}  // namespace

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


py::object policy_instance(const std::string& path, const std::string& source) {
  py::object cls = policy_class(path, load_module(path, source));
  try {
    return cls();
  } catch (const py::error_already_set& e) {
    throw Error(describe(e, path) + " (in AdaptiveQuantPolicy())");
  }
}

py::dict token_stats(const float* rows, size_t head_stride, int T, int D, int h0, int h1) {
  const int n = h1 - h0;
  py::array_t<float> absmax({n, D}), mean({n, D}), var({n, D}), norms(n);
  auto a = absmax.mutable_unchecked<2>(), m = mean.mutable_unchecked<2>(), s = var.mutable_unchecked<2>();
  auto nr = norms.mutable_unchecked<1>();
  std::vector<double> sum(D), sum2(D), amax(D);
  for (int i = 0; i < n; ++i) {
    const float* x = rows + static_cast<size_t>(i) * head_stride;
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


}  // namespace kvscope::script
