// SentencePiece tokenizer.model: the hand-written protobuf parser and the BPE built from it.
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tests/fuzz/tokenizer_exercise.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = kvscope::fuzz::write_scratch(data, size, "tokenizer.model");
  try {
    auto tok = kvscope::load_sentencepiece(path);
    kvscope::fuzz::exercise(*tok);
  } catch (const kvscope::Error&) {
  }
  return 0;
}
