#pragma once
// What every fuzzed tokenizer that loaded must survive: encoding text that reaches merges, byte
// fallback and special tokens, decoding its own output and every piece, and decoding ids that
// are out of range (which may throw kvscope::Error but never read out of bounds).
#include <string>
#include <vector>

#include "core/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvscope::fuzz {

inline void exercise(const Tokenizer& tok) {
  static const char* kTexts[] = {
      "Once upon a time, there was a little girl named Lily.",
      "  two  spaces\n\nand\ttabs 2024 I'M <s></s><|endoftext|><unk>",
      "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x96\x81 \xff\xfe invalid utf-8 \xc3",
      "",
  };
  for (const char* text : kTexts)
    for (bool bos : {false, true}) {
      std::vector<int32_t> ids = tok.encode(text, bos);
      consume(tok.decode(ids));
    }
  const int n = tok.vocab_size();
  for (int i = 0; i < n && i < 512; ++i) consume(tok.piece(i));
  consume(tok.bos_id());
  consume(tok.eos_id());
  for (int32_t id : {-1, n, n + 1000}) {
    try {
      consume(tok.decode(std::vector<int32_t>{id}));
    } catch (const Error&) {
    }
    try {
      consume(tok.piece(id));
    } catch (const Error&) {
    }
  }
}

}  // namespace kvscope::fuzz
