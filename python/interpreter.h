#pragma once
// The process's one embedded CPython interpreter (internal to python/: this header includes
// pybind11; the public headers of python/ do not).
//
// Started on first use, from whichever thread needs it first (the CLI's main thread, a GUI job),
// and never finalized: C++ statics holding Python objects would otherwise outlive it, and a GUI
// worker may still be inside a call at exit. Between calls no thread holds the GIL, so every entry
// point takes it with `with_gil`. Python's own signal handlers are not installed (kvscope's SIGINT
// handler, core/util/interrupt, stays in charge).
#include <pybind11/embed.h>

#include <string>

namespace kvscope::python {

namespace py = pybind11;

// Starts the interpreter once (thread-safe). Error when CPython cannot start.
void ensure_started();

// Runs fn() with the interpreter started and the GIL held by this thread.
template <class F>
auto with_gil(F&& fn) {
  ensure_started();
  py::gil_scoped_acquire gil;
  return fn();
}

// A Python exception on one line: "<file>:<line>: <Type>: <message>" where the line is that of the
// deepest traceback frame whose file name is `file` (the user's script or template, not library
// code); a SyntaxError reports its own line. Without such a frame: "<Type>: <message>".
// Call with the GIL held.
struct ExceptionInfo {
  std::string type;     // e.g. "ZeroDivisionError"
  std::string message;  // str(exception)
  int line = 0;         // 0 = no frame in `file`
  std::string tail;     // the traceback's last frames, one "file:line in function" per line
};
ExceptionInfo exception_info(const py::error_already_set& e, const std::string& file);

}  // namespace kvscope::python
