// Writes small valid inputs for each fuzz target with the project's own writers, so the corpora
// start from files kvscope accepts. Usage: make_seeds <corpus-root>  (creates <root>/<target>/...)
#include <cstring>
#include <fmt/format.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/dump/kv_dump.h"
#include "core/tensor/safetensors.h"
#include "storage/run_store.h"
#include "tests/protobuf_writer.h"

namespace fs = std::filesystem;
using namespace kvscope;
using json = nlohmann::json;

namespace {

void put(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

using namespace test_pb;

// SentencePiece ModelProto with control, byte-fallback, normal and user-defined pieces.
std::string tiny_spm(bool byte_fallback) {
  std::string m = pb_piece("<unk>", 0, 2) + pb_piece("<s>", 0, 3) + pb_piece("</s>", 0, 3);
  if (byte_fallback)
    for (int b = 0; b < 256; ++b) m += pb_piece(fmt::format("<0x{:02X}>", b), 0, 6);
  const std::string sp = "\xe2\x96\x81";
  int i = 0;
  for (const std::string p : {sp, std::string("a"), std::string("b"), std::string("c"), std::string("ab"),
                              std::string("bc"), sp + "a", sp + "ab", std::string("O"), std::string("n")})
    m += pb_piece(p, -10.0f + static_cast<float>(i++), 1);
  m += pb_piece("<sep>", 0, 4);
  m += pb_bytes(2, pb_int(3, 2) + pb_int(35, byte_fallback) + pb_int(40, 0) + pb_int(41, 1) + pb_int(42, 2));
  m += pb_bytes(3, pb_bytes(1, "identity") + pb_int(3, 1) + pb_int(4, 1));
  return m;
}

// llama2.c vocabulary: int max_token_length, then per token: float score, int len, bytes.
std::string tiny_llama2c() {
  std::vector<std::string> pieces = {"<unk>", "\n<s>\n", "\n</s>\n"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  for (const char* p : {" ", "O", "n", "ce", " a", " time", "Once", " upon"}) pieces.push_back(p);
  std::string out;
  auto i32 = [&](int32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  i32(8);
  float score = 0;
  for (const auto& p : pieces) {
    out.append(reinterpret_cast<const char*>(&score), 4);
    i32(static_cast<int32_t>(p.size()));
    out += p;
    score -= 0.5f;
  }
  return out;
}

json byte_level_bpe() {
  json vocab = {{"H", 0}, {"e", 1}, {"l", 2}, {"o", 3}, {"\xc4\xa0", 4}, {"w", 5}, {"r", 6}, {"d", 7},
                {"He", 8}, {"ll", 9}, {"llo", 10}, {"Hello", 11}, {"\xc4\xa0w", 12}, {"or", 13}};
  json merges = {"l l", "H e", "ll o", "He llo", "\xc4\xa0 w", "o r"};
  json added = {{{"id", 14}, {"content", "<|endoftext|>"}, {"special", true}},
                {{"id", 15}, {"content", "<x>"}, {"special", false}}};
  json j;
  j["version"] = "1.0";
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
  j["decoder"] = {{"type", "ByteLevel"}};
  return j;
}

KvDump tiny_dump(bool with_q) {
  KvDump d;
  d.shape = {2, 1, with_q ? 2 : 0, 4, 3};
  d.meta.model_id = "fuzz/tiny";
  d.meta.config_digest = std::string(64, 'a');
  d.meta.token_ids = {1, 400, 2};
  d.meta.prompt = "Once";
  d.meta.kvscope_version = KVSCOPE_VERSION;
  d.meta.extra["note"] = "seed";
  d.layers.resize(2);
  float x = 0.25f;
  for (auto& l : d.layers) {
    for (auto* t : {&l.k, &l.v, &l.k_pre_rope}) {
      t->resize(12);
      for (auto& v : *t) v = (x = -x * 1.5f + 0.125f);
    }
    if (with_q) {
      l.q.resize(24);
      for (auto& v : l.q) v = (x = -x * 0.75f + 0.5f);
    }
  }
  return d;
}

QuantizeReport tiny_report() {
  QuantizeReport r;
  r.method = "kivi";
  r.policy_name = "kivi-2";
  r.policy_json = R"({"method":"kivi","name":"kivi-2"})";
  r.dump_path = "/nonexistent/dump.safetensors";
  r.shape = {1, 2, 2, 4, 3};
  r.model_id = "fuzz/tiny";
  r.bits_per_element = 2.25;
  r.k_nmse = 0.01;
  r.v_nmse = 0.02;
  r.attn_queries = 3;
  for (int h = 0; h < 2; ++h) {
    for (char kind : {'k', 'v'}) {
      HeadMetrics m;
      m.head = h;
      m.kind = kind;
      m.nmse = 0.01 * (h + 1);
      m.bits = 100;
      m.elements = 12;
      r.per_head.push_back(m);
    }
    AttentionMetrics a;
    a.head = h;
    r.attention.push_back(a);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds <corpus-root>\n");
    return 2;
  }
  const fs::path root = argv[1];
  for (const char* t : {"safetensors", "dump", "sentencepiece", "llama2c_vocab", "hf_tokenizer",
                        "checkpoint_index", "run_store", "export", "workload"})
    fs::create_directories(root / t);

  const std::vector<float> f32 = {1.5f, -2.0f, 0.0f, 3.25f, -0.5f, 7.0f};
  const std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x7c00, 0x0001};
  const std::vector<int32_t> i32 = {1, -2, 3};
  const std::vector<int64_t> i64 = {4, 5};
  const std::vector<uint8_t> u8 = {1, 2, 3, 250};
  write_safetensors((root / "safetensors/mixed.safetensors").string(),
                    {{"a.weight", DType::F32, {2, 3}, f32.data()},
                     {"b.half", DType::F16, {4}, f16.data()},
                     {"c.bf16", DType::BF16, {2, 2}, f16.data()},
                     {"d.i32", DType::I32, {3}, i32.data()},
                     {"e.i64", DType::I64, {2}, i64.data()},
                     {"f.u8", DType::U8, {2, 2}, u8.data()},
                     {"g.i8", DType::I8, {4}, u8.data()},
                     {"empty", DType::F32, {0, 5}, f32.data()}},
                    {{"format", "pt"}, {"model_id", "x"}});
  write_safetensors((root / "safetensors/none.safetensors").string(), {});

  save_dump((root / "dump/gqa_f16.safetensors").string(), tiny_dump(true), DType::F16);
  save_dump((root / "dump/noq_f32.safetensors").string(), tiny_dump(false), DType::F32);
  save_dump((root / "dump/gqa_bf16.safetensors").string(), tiny_dump(true), DType::BF16);

  put(root / "sentencepiece/tiny_bytefallback.model", tiny_spm(true));
  put(root / "sentencepiece/tiny.model", tiny_spm(false));
  put(root / "llama2c_vocab/tiny.bin", tiny_llama2c());
  put(root / "hf_tokenizer/tiny_bytelevel.json", byte_level_bpe().dump());
  json split = byte_level_bpe();
  split["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  put(root / "hf_tokenizer/tiny_split_regex.json", split.dump(1));

  json index = {{"metadata", {{"total_size", 136}}},
                {"weight_map",
                 {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
                  {"model.norm.weight", "model-00001-of-00002.safetensors"},
                  {"lm_head.weight", "model-00002-of-00002.safetensors"}}}};
  put(root / "checkpoint_index/index.json", index.dump(2));

  {
    const std::string db = (root / "run_store/one_run.sqlite").string();
    fs::remove(db);
    {
      RunStore store(db);
      RunContext ctx;
      ctx.tags = {"seed", "fuzz"};
      ctx.note = "hand-made";
      ctx.rd_points = {{"kivi", 2.25, "k_nmse", 0.01}};
      ctx.replay_metrics = {{"", "greedy_match_ratio", 0.9}};
      store.add_quantize_run(tiny_report(), ctx);
    }
    // Fold the WAL back so the seed is one self-contained file.
    for (const char* side : {"-wal", "-shm"}) fs::remove(db + side);
  }
  {
    // Export: a quantize run with layers and attention, and a replay run with metrics per slice.
    const std::string db = (root / "export/two_runs.sqlite").string();
    fs::remove(db);
    {
      RunStore store(db);
      RunContext ctx;
      ctx.tags = {"a", "b"};
      ctx.note = "first line\nsecond, \"quoted\" & 100% $x_1$";
      QuantizeReport r = tiny_report();
      r.per_head[1].layer = 1;
      r.attention[1].layer = 1;
      store.add_quantize_run(r, ctx);
      RunContext rep;
      rep.workload = "passkey:len=200,depth=0.5,n=1";
      rep.replay_metrics = {{"passkey_len200_depth0.5", "passkey_accuracy", 1.0}, {"", "ppl", 5.25}};
      store.add_replay_run(r, rep);
    }
    for (const char* side : {"-wal", "-shm"}) fs::remove(db + side);
  }
  // Workloads: the files of one input are separated by a line "%%" (see fuzz_workload.cpp).
  const std::string sep = "\n%%\n";
  const std::string qa =
      R"({"prompt": "Tom had a big dog named Max. They went for a walk in the", "answer": "park.", "max_new": 2})"
      "\n\n"
      R"({"prompt": "The sky is", "answer": "blue."})";
  const std::string text = "Once upon a time, there was a little girl named Lily. She loved to play with her red ball. "
                           "One day, she lost her ball in the park. The grass is green. The sky is blue.\n";
  put(root / "workload/all_kinds.txt",
      "# comment\ntext:b.txt;window=16;n=2\njsonl:a.jsonl;max_new=4\npasskey:len=300,depth=0.5,n=2\n"
      "passkey:len=200,depth=0,n=1,max_new=6,filler=b.txt\nfile:c.workload" + sep + qa + sep + text + sep +
      "passkey:len=100,depth=1,n=1  # nested\n");
  put(root / "workload/passkey_only.txt", "passkey:len=120,depth=0.25,n=1\n");
  put(root / "workload/text_only.txt", "text:b.txt;window=32;n=1" + sep + sep + text);
  put(root / "workload/jsonl_only.txt", "jsonl:a.jsonl" + sep + qa);
  return 0;
}
