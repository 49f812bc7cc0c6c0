#pragma once
// Captures the KV cache of a model on a token sequence: into a KvDump in memory
// (capture_dump), or streamed to a dump file as each chunk of each layer is produced
// (capture_to_file: the path cmd_dump and the GUI use for real-size models).
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"

namespace kvscope {

class Model;

struct CaptureOptions {
  std::string model_id;        // e.g. the folder name or org/name
  std::string prompt;          // the text the ids came from (metadata only)
  std::string workload;        // free-form description (metadata only)
  bool with_q = true;          // post-RoPE queries (attention metrics)
  bool with_pre_rope = true;   // pre-RoPE keys and queries (KVSmooth, SKVQ)
  int chunk_tokens = 256;      // prefill chunk; bounds the activation memory
  std::vector<int> layers;     // model layers to keep, ascending (empty = all); capture_to_file only
  int q_positions = 0;         // keep queries at this many positions spread over the sequence
                               // (sample_positions; 0 = all); capture_to_file only
  std::function<void(int done, int total)> progress;  // called after each chunk
};

// Prefills `ids` (in chunks) and returns every layer's K, V (and Q, pre-RoPE K/Q) in f32.
KvDump capture_dump(const Model& model, std::span<const int32_t> ids, const CaptureOptions& opts = {});

// Prefills `ids` in chunks and writes each chunk of each kept layer to `path` as it is produced
// (the file holds `dtype`: F16, BF16 or F32), with no LM head and no layer after the last kept
// one. Memory: the model, the f32 KV cache of the layers run, one chunk's activations. The file
// appears (renamed from a temporary) only when complete. Returns the file's size in bytes.
uint64_t capture_to_file(const Model& model, std::span<const int32_t> ids, const CaptureOptions& opts,
                         const std::string& path, DType dtype);

// "0-3,16" -> {0, 1, 2, 3, 16} (sorted, unique), each < num_layers; throws Error naming `what`.
std::vector<int> parse_layer_list(const std::string& spec, int num_layers, const std::string& what);

}  // namespace kvscope
