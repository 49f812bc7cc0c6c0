#pragma once
// Captures the KV cache of a model on a token sequence into a KvDump (core/dump/kv_dump.h).
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "core/dump/kv_dump.h"

namespace kvscope {

class Model;

struct CaptureOptions {
  std::string model_id;        // e.g. the folder name or org/name
  std::string prompt;          // the text the ids came from (metadata only)
  std::string workload;        // free-form description (metadata only)
  bool with_q = true;          // post-RoPE queries (attention metrics)
  bool with_pre_rope = true;   // pre-RoPE keys and queries (KVSmooth, SKVQ)
  int chunk_tokens = 256;      // prefill chunk; bounds the attention-score memory
  std::function<void(int done, int total)> progress;  // called after each chunk
};

// Prefills `ids` (in chunks) and returns every layer's K, V (and Q, pre-RoPE K/Q) in f32.
KvDump capture_dump(const Model& model, std::span<const int32_t> ids, const CaptureOptions& opts = {});

}  // namespace kvscope
