#pragma once
// Tokenizers written here (no libsentencepiece: its bundled protobuf crashes beside libtorch):
//  - SentencePiece BPE read from tokenizer.model (protobuf parsed by hand),
//  - Hugging Face tokenizer.json byte-level BPE (GPT-2 / Qwen2 / Llama-3 family),
//  - llama2.c vocabulary files (tokenizer.bin, tok512.bin).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvscope {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids; `add_bos` prepends the BOS id when the vocabulary has one.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const = 0;
  // Text that spells special tokens (a rendered chat template: "<|im_start|>user\n..."): each
  // special token written in it becomes its one id, never split; the text between is encoded as by
  // encode() without BOS (the template writes its own, as Transformers tokenizes it with
  // add_special_tokens=False). Byte-level BPE: the added_tokens of tokenizer.json (encode already
  // cuts them out); SentencePiece: control and unknown pieces (<s>, </s>, <unk>) and user-defined
  // pieces, each plain segment normalized on its own (a dummy-prefix space after "<s>", as
  // Transformers' Llama tokenizers do).
  virtual std::vector<int32_t> encode_special(std::string_view text) const { return encode(text, false); }
  // Ids -> text. Control tokens (BOS/EOS/...) decode to nothing; bytes are reassembled.
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  // The vocabulary entry of one id, as stored (for display).
  virtual std::string piece(int32_t id) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 when absent
  virtual int eos_id() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "byte-level-bpe", "llama2c"
};

// SentencePiece BPE model (tokenizer.model). Throws Error naming the file.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path);
// Hugging Face tokenizer.json with a byte-level BPE model.
std::unique_ptr<Tokenizer> load_hf_bpe(const std::string& path);
std::unique_ptr<Tokenizer> load_hf_bpe_from_json(const std::string& json_text, const std::string& where);
// llama2.c vocabulary (int max_token_length; per token: float score, int len, bytes). bos/eos 1/2.
std::unique_ptr<Tokenizer> load_llama2c_vocab(const std::string& path);

// Picks what the model folder has: tokenizer.model, else tokenizer.json, else a llama2.c
// vocabulary (tokenizer.bin or tok*.bin). Throws Error naming the folder when none is found.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir);

}  // namespace kvscope
