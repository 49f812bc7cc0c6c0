#pragma once
// The one capture path of `kvscope dump` and the GUI's Capture, once the text is tokenized: plan
// memory (refuse in one line), load the model, check that the tokenizer fits its vocabulary and
// the context its positions, then stream every layer to the dump file (capture_to_file).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/model/capture.h"
#include "core/tensor/dtype.h"

namespace kvscope {

struct CaptureFileRequest {
  std::string model_dir;
  int tokenizer_vocab = 0;     // the tokenizer's vocabulary size (checked against config.json)
  std::vector<int32_t> ids;    // already tokenized (and cut to the wanted length)
  CaptureOptions capture;      // metadata, Q / pre-RoPE, layers, q_positions, progress; chunk_tokens 0 = planned
  std::string out;
  DType dtype = DType::F16;
  bool refuse_past_max_positions = false;  // true: error; false: a warning through `warn`
  std::function<void(const std::string&)> warn, info;  // one line each (may be empty)
};

// Throws Error naming the model folder, the option or the file. Returns the file's size in bytes.
uint64_t capture_model_to_file(const CaptureFileRequest& r);

// At most `max` bytes of `s` as valid UTF-8 (dump metadata is JSON): cut at a character boundary,
// invalid bytes replaced by U+FFFD.
std::string utf8_prefix(const std::string& s, size_t max);

}  // namespace kvscope
