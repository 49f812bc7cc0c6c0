// safetensors header, tensor table and data block: open (mmap + validation) then read every
// tensor through the f32 conversion, so any offset the validation let through is dereferenced.
#include "core/tensor/safetensors.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "input.safetensors");
  try {
    auto f = kvscope::SafetensorsFile::open(path);
    for (const auto& t : f->tensors()) {
      if (t.numel() > (1 << 20)) continue;  // the size check already matched nbytes; keep executions fast
      auto v = f->read_f32(t.name);
      kvscope::fuzz::consume(v);
      if (f->find(t.name) != &f->get(t.name)) __builtin_trap();
    }
    kvscope::fuzz::consume(f->metadata());
  } catch (const kvscope::Error&) {
  }
  return 0;
}
