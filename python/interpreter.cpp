#include "python/interpreter.h"

#include <mutex>

#include "core/util/error.h"

#ifndef KVSCOPE_PYTHON_EXECUTABLE
#define KVSCOPE_PYTHON_EXECUTABLE "python3"
#endif

namespace kvscope::python {

void ensure_started() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (Py_IsInitialized()) return;  // a host program (a Python extension test) started it
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.isolated = 0;
    config.use_environment = 1;          // PYTHONPATH reaches a policy script's own imports
    config.user_site_directory = 0;      // no ~/.local packages: the same run on every account
    config.install_signal_handlers = 0;  // Ctrl-C stays kvscope's
    config.write_bytecode = 0;           // policy scripts are exec'd from text; nothing to cache
    // Path computation as if this were the interpreter we built against (Debian's /usr/bin/python3,
    // whose site adds /usr/lib/python3/dist-packages: jinja2, numpy), not whatever "python3" is first
    // on PATH.
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, KVSCOPE_PYTHON_EXECUTABLE);
    if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
      throw Error(std::string("embedded Python: cannot start (") + (st.err_msg ? st.err_msg : "unknown error") + ")");
    PyEval_SaveThread();  // release the GIL: callers take it with with_gil, from any thread
  });
}

ExceptionInfo exception_info(const py::error_already_set& e, const std::string& file) {
  ExceptionInfo info;
  py::object type = e.type(), value = e.value();
  info.type = type ? py::str(type.attr("__name__")).cast<std::string>() : "Exception";
  try {
    info.message = value ? py::str(value).cast<std::string>() : "";
  } catch (const py::error_already_set&) {
    info.message = "(the exception cannot be printed)";
  }
  // A SyntaxError's location is in the exception, not the traceback.
  if (value && PyErr_GivenExceptionMatches(type.ptr(), PyExc_SyntaxError)) {
    const py::object fn = value.attr("filename"), ln = value.attr("lineno"), msg = value.attr("msg");
    if (!fn.is_none() && py::str(fn).cast<std::string>() == file && !ln.is_none()) info.line = ln.cast<int>();
    if (!msg.is_none()) info.message = py::str(msg).cast<std::string>();
  }
  std::vector<std::string> frames;
  for (py::handle tb = e.trace(); tb && !tb.is_none(); tb = tb.attr("tb_next")) {
    const py::handle frame = tb.attr("tb_frame");
    const std::string name = py::str(frame.attr("f_code").attr("co_filename")).cast<std::string>();
    const int line = tb.attr("tb_lineno").cast<int>();
    frames.push_back(name + ":" + std::to_string(line) + " in " +
                     py::str(frame.attr("f_code").attr("co_name")).cast<std::string>());
    if (name == file) info.line = line;  // the deepest frame in the user's file wins
  }
  const size_t first = frames.size() > 6 ? frames.size() - 6 : 0;
  for (size_t i = first; i < frames.size(); ++i) info.tail += (i > first ? "\n" : "") + frames[i];
  return info;
}

}  // namespace kvscope::python
