#include "core/model/memory_plan.h"

#include <sys/resource.h>

#include <algorithm>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "core/util/error.h"

namespace kvscope {

namespace {

constexpr int64_t kRuntimeBytes = int64_t{300} << 20;  // OpenBLAS buffers (128 MB a thread, lazily) + stacks + slack
constexpr int64_t kScratchBytes = int64_t{32} << 20;   // weight rows converted for one sgemm block

// "Key:   123 kB" from a /proc file, in bytes; -1 when absent.
int64_t proc_kb(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream ss(line.substr(key.size() + 1));
      int64_t kb = -1;
      ss >> kb;
      return kb < 0 ? -1 : kb * 1024;
    }
  return -1;
}

int64_t read_number(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  if (!(in >> s) || s == "max") return -1;
  try {
    return std::stoll(s);
  } catch (const std::exception&) {
    return -1;
  }
}

// Limit minus usage of this process's cgroup (v2 unified, else v1 memory controller); -1 if none.
int64_t cgroup_available() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), rel = line.substr(b + 1);
    std::string limit_file, usage_file;
    if (controllers.empty()) {
      limit_file = "/sys/fs/cgroup" + rel + "/memory.max";
      usage_file = "/sys/fs/cgroup" + rel + "/memory.current";
    } else if (controllers.find("memory") != std::string::npos) {
      limit_file = "/sys/fs/cgroup/memory" + rel + "/memory.limit_in_bytes";
      usage_file = "/sys/fs/cgroup/memory" + rel + "/memory.usage_in_bytes";
    } else {
      continue;
    }
    const int64_t limit = read_number(limit_file);
    if (limit <= 0 || limit >= (int64_t{1} << 60)) continue;  // "max" or v1's unlimited
    const int64_t usage = std::max<int64_t>(0, read_number(usage_file));
    return std::max<int64_t>(0, limit - usage);
  }
  return -1;
}

std::string gb(int64_t b) { return fmt::format("{:.2f} GB", static_cast<double>(b) / 1e9); }

std::mutex g_context_mutex;
std::string g_context;

}  // namespace

MemoryAvailable available_memory() {
  if (const char* env = std::getenv("KVSCOPE_MEM_AVAILABLE_BYTES"); env && *env) {
    try {
      return {std::stoll(env), "KVSCOPE_MEM_AVAILABLE_BYTES"};
    } catch (const std::exception&) {
      fail("KVSCOPE_MEM_AVAILABLE_BYTES", "\"{}\" is not a number of bytes", env);
    }
  }
  MemoryAvailable m{proc_kb("/proc/meminfo", "MemAvailable"), "MemAvailable"};
  if (m.bytes < 0) m = {int64_t{1} << 62, "unknown"};
  if (const int64_t cg = cgroup_available(); cg >= 0 && cg < m.bytes) m = {cg, "cgroup memory limit"};
  rlimit rl{};
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    // Address space, not RSS: what is already mapped (libraries, thread stacks) is gone.
    const int64_t used = std::max<int64_t>(0, proc_kb("/proc/self/status", "VmSize"));
    const int64_t left = std::max<int64_t>(0, static_cast<int64_t>(rl.rlim_cur) - used);
    if (left < m.bytes) m = {left, "RLIMIT_AS (ulimit -v / prlimit --as)"};
  }
  return m;
}

int64_t checkpoint_file_bytes(const std::string& dir) {
  int64_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("model", 0) == 0 && e.path().extension() == ".safetensors") n += static_cast<int64_t>(e.file_size(ec));
  }
  return n;
}

MemoryNeed estimate_memory(const ModelConfig& c, int64_t weight_bytes, int chunk, int context, int layers_run,
                           int logits_rows) {
  const int64_t n = std::max(1, std::min(chunk, context)), T = std::max(1, context);
  const int64_t hid = c.hidden_size, inter = c.intermediate_size, d = c.head_dim;
  const int64_t qd = int64_t{c.num_heads} * d, kvd = int64_t{c.num_kv_heads} * d;
  const int64_t L = layers_run > 0 ? layers_run : c.num_layers;
  MemoryNeed m;
  // Layers after the last one run are never touched (a capture of the first layers).
  const double per_param = static_cast<double>(weight_bytes) / std::max<int64_t>(1, c.param_count());
  const int64_t layer_params = (int64_t{2} * qd + 2 * kvd) * hid + 3 * hid * inter;
  m.weights = L < c.num_layers ? static_cast<int64_t>(per_param * (int64_t{c.vocab_size} * hid + L * layer_params))
                               : weight_bytes;
  // Model::forward's buffers (x, h, qkv, q/k/v and their pre-RoPE copies, attn, gate|up, act),
  // the attention probabilities of one 256-row block, logits, and the conversion scratch.
  const int64_t floats = n * (2 * hid + (qd + 2 * kvd) + 2 * (qd + 2 * kvd) + qd + 3 * inter) +
                         std::min<int64_t>(n, 256) * T + int64_t{logits_rows} * c.vocab_size;
  m.activations = floats * 4 + kScratchBytes;
  m.kv_cache = L * 2 * kvd * T * 4;
  m.runtime = kRuntimeBytes;
  return m;
}

void require_memory(const std::string& model, const MemoryNeed& need, const std::string& how_to_lower) {
  const MemoryAvailable a = available_memory();
  note_memory_context(fmt::format("{} (planned {})", model, gb(need.total())));
  if (need.total() <= a.bytes) return;
  const std::string lower = need.weights + need.runtime > a.bytes
                                ? fmt::format("the weights ({} as stored) and the runtime alone need {}: use a smaller model or a machine with more memory", gb(need.weights), gb(need.weights + need.runtime))
                                : how_to_lower;
  fail(model, "needs {} of memory (weights {} as stored, activations {}, KV cache {}, runtime {}) but {} are available ({}); {}",
       gb(need.total()), gb(need.weights), gb(need.activations), gb(need.kv_cache), gb(need.runtime), gb(a.bytes),
       a.source, lower);
}

int default_chunk(const ModelConfig& c, int64_t weight_bytes, int context, int layers_run) {
  const int64_t avail = available_memory().bytes;
  int best = 16;
  for (int chunk = 16; chunk <= 2048; chunk *= 2) {
    if (estimate_memory(c, weight_bytes, chunk, context, layers_run, 0).total() > avail) break;
    best = chunk;
    if (chunk >= context) break;
  }
  return std::min(best, std::max(1, context));
}

void note_memory_context(const std::string& what) {
  std::lock_guard<std::mutex> lock(g_context_mutex);
  g_context = what;
}

std::string out_of_memory_message() {
  std::lock_guard<std::mutex> lock(g_context_mutex);
  const MemoryAvailable a = available_memory();
  return fmt::format("out of memory{}{}; {} available ({}); try a smaller --chunk, fewer --layers or fewer tokens",
                     g_context.empty() ? "" : " while running ", g_context, gb(a.bytes), a.source);
}

}  // namespace kvscope
