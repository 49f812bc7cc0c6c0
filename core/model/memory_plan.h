#pragma once
// Memory is planned, not discovered: before a command loads a model it estimates what it will
// need (weights as stored, one chunk's activations, KV cache, dump buffers) and compares it with
// what this process may use (MemAvailable, the cgroup limit, RLIMIT_AS); when it does not fit it
// refuses with one line naming the model, the GB needed and available, and the option that
// lowers the need.
#include <cstdint>
#include <string>

#include "core/model/config.h"

namespace kvscope {

struct MemoryAvailable {
  int64_t bytes = 0;
  std::string source;  // "MemAvailable", "cgroup memory.max", "RLIMIT_AS", "KVSCOPE_MEM_AVAILABLE_BYTES"
};
// The smallest of: /proc/meminfo MemAvailable, the cgroup (v2 memory.max or v1 limit_in_bytes)
// minus its usage, RLIMIT_AS minus the address space in use. KVSCOPE_MEM_AVAILABLE_BYTES
// overrides the reading (tests).
MemoryAvailable available_memory();

struct MemoryNeed {
  int64_t weights = 0;      // checkpoint tensors as stored (memory-mapped)
  int64_t activations = 0;  // one forward call of `chunk` tokens, incl. weight conversion scratch
  int64_t kv_cache = 0;     // f32 K and V of the layers run, for the whole context
  int64_t runtime = 0;      // libraries, thread stacks, allocator slack
  int64_t total() const { return weights + activations + kv_cache + runtime; }
};

// Bytes of the model's weight files (model*.safetensors) as stored, without opening them.
int64_t checkpoint_file_bytes(const std::string& dir);

// What a forward over `context` tokens in chunks of `chunk` needs. `layers_run` layers (0 = all);
// `logits_rows` rows of logits (0 for a capture).
MemoryNeed estimate_memory(const ModelConfig& c, int64_t weight_bytes, int chunk, int context, int layers_run = 0,
                           int logits_rows = 1);

// Throws Error "<model>: needs X GB (...) but Y GB are available (source); <how to lower>" when
// need.total() exceeds what is available.
void require_memory(const std::string& model, const MemoryNeed& need, const std::string& how_to_lower);

// The largest chunk (power of two, 16..2048, at most `context`) whose need fits in what is
// available; 16 when nothing fits (require_memory then reports it).
int default_chunk(const ModelConfig& c, int64_t weight_bytes, int context, int layers_run = 0);

// One line for an allocation that failed anyway (bad_alloc, c10 "can't allocate memory"): the
// command names what it was doing with note_memory_context() before its heavy work.
void note_memory_context(const std::string& what);
std::string out_of_memory_message();

}  // namespace kvscope
