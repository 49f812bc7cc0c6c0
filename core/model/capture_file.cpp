#include "core/model/capture_file.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/model/config.h"
#include "core/model/memory_plan.h"
#include "core/model/model.h"
#include "core/util/error.h"

namespace kvscope {

uint64_t capture_model_to_file(const CaptureFileRequest& r) {
  const std::string& dir = r.model_dir;
  if (r.ids.empty()) fail("dump", "the text encodes to no tokens");
  const ModelConfig cfg = load_config(dir);
  const int T = static_cast<int>(r.ids.size());
  const int max_pos = cfg.max_position_embeddings;
  if (max_pos > 0 && T > max_pos) {
    if (r.refuse_past_max_positions) fail(dir, "{} tokens exceed the model's max_position_embeddings {}", T, max_pos);
    if (r.warn) r.warn(fmt::format("{} tokens exceed max_position_embeddings {} of {}", T, max_pos, dir));
  }
  // Plan memory before mapping anything: weights as stored, one chunk, the KV cache of the layers run.
  const std::vector<int>& layers = r.capture.layers;
  const int layers_run = layers.empty() ? 0 : layers.back() + 1;
  const int64_t weights = checkpoint_file_bytes(dir);
  CaptureOptions co = r.capture;
  co.chunk_tokens = co.chunk_tokens > 0 ? std::min(co.chunk_tokens, T) : default_chunk(cfg, weights, T, layers_run);
  require_memory(dir, estimate_memory(cfg, weights, co.chunk_tokens, T, layers_run, 0),
                 fmt::format("lower it with --chunk (now {}), --layers or --tokens (now {})", co.chunk_tokens, T));
  auto model = Model::load(dir);  // validates the checkpoint (errors name its file) before the tokenizer check
  if (r.tokenizer_vocab > cfg.vocab_size)
    fail(dir, "tokenizer has {} tokens but config.json vocab_size is {}", r.tokenizer_vocab, cfg.vocab_size);
  if (r.info)
    r.info(fmt::format("{} ({}, {} layers, {} weights) on {} tokens, chunk {}", dir, arch_name(model->config().arch),
                       model->config().num_layers, model->storage_dtype(), T, co.chunk_tokens));
  return capture_to_file(*model, r.ids, co, r.out, r.dtype);
}

std::string utf8_prefix(const std::string& s, size_t max) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    const std::string ch = ok ? s.substr(i, n) : std::string("\xef\xbf\xbd");
    if (out.size() + ch.size() > max) break;
    out += ch;
    i += ok ? n : 1;
  }
  return out;
}

}  // namespace kvscope
