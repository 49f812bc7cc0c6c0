// llama2.c vocabulary (tokenizer.bin / tok512.bin): max length, then per token score, length, bytes.
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tests/fuzz/tokenizer_exercise.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "tokenizer.bin");
  try {
    auto tok = kvscope::load_llama2c_vocab(path);
    kvscope::fuzz::exercise(*tok);
  } catch (const kvscope::Error&) {
  }
  return 0;
}
