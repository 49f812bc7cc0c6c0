#pragma once
// Internal to python/: what policy planning (policy_script.cpp) and replay's per-block hook
// (policy_blocks.cpp) share — loading a script as a module, one-line errors, checked hook calls
// and token_stats. Includes pybind11; call everything with the GIL held.
#include <pybind11/pybind11.h>

#include <cstddef>
#include <string>
#include <vector>

#include "core/util/error.h"

namespace kvscope::script {

namespace py = pybind11;

py::object& loader();  // the helper module (load, to_json)
std::string first_line(std::string s);
std::string short_repr(py::handle v);  // repr cut to one line of at most 80 characters
// "<file>:<line>: <Type>: <message>" for the exception being handled.
std::string describe(const py::error_already_set& e, const std::string& path);
// Compiles and executes the script as a module of its own (Error on a SyntaxError or an exception).
py::object load_module(const std::string& path, const std::string& source);
py::object policy_class(const std::string& path, const py::object& module);
// Loads the script and makes an AdaptiveQuantPolicy instance (Error naming the file on failure).
py::object policy_instance(const std::string& path, const std::string& source);

// token_stats of heads [h0, h1): head i's T tokens of D channels at rows + i * head_stride (row-major):
// per-channel absmax, mean, population variance [n, D] and the mean L2 norm of a token's vector [n]
// (numpy float32), "tokens" and "heads" (the KV head indices).
py::dict token_stats(const float* rows, size_t head_stride, int T, int D, int h0, int h1);

// Calls hooks of an AdaptiveQuantPolicy instance and checks what they return; every error names the
// script, the call (its description, e.g. "choose_bits(layer_id=0, kv_kind='k', ...)") and the value.
class Hooks {
 public:
  Hooks(std::string path, py::object inst) : path_(std::move(path)), inst_(std::move(inst)) {}

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

}  // namespace kvscope::script
