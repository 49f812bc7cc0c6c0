// KV dump loader: tensor names/shapes, GQA shape checks and the __metadata__ fields (token_ids
// JSON, integers, rope settings), with and without optional tensors.
#include "core/dump/kv_dump.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "dump.safetensors");
  for (int variant = 0; variant < 2; ++variant) {
    try {
      kvscope::DumpLoadOptions opts;
      opts.require_q = variant == 1;
      opts.load_pre_rope = variant == 0;
      kvscope::KvDump d = kvscope::load_dump(path, opts);
      // Whatever load_dump accepts must be internally consistent.
      kvscope::validate_dump(d, path);
      for (int l = 0; l < d.shape.layers; ++l)
        for (int h = 0; h < d.shape.kv_heads; ++h) kvscope::fuzz::consume(*d.k(l, h));
    } catch (const kvscope::Error&) {
    }
  }
  return 0;
}
