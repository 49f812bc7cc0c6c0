// Hugging Face tokenizer.json (byte-level BPE): vocab, merges, added tokens, pre-tokenizer regexes.
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tests/fuzz/tokenizer_exercise.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto tok = kvscope::load_hf_bpe_from_json(text, "tokenizer.json");
    kvscope::fuzz::exercise(*tok);
  } catch (const kvscope::Error&) {
  }
  return 0;
}
