#pragma once
// Thrown by long work (quantization, capture, sweeps) when its cancel flag was set: not an error,
// the caller asked for it. The GUI's job runner marks such a job "cancelled".
#include <exception>

namespace kvscope {

struct Cancelled : std::exception {
  const char* what() const noexcept override { return "cancelled"; }
};

}  // namespace kvscope
