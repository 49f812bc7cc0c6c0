// Replay workloads: spec strings (text:, jsonl:, passkey:, file:) and the files they name.
// The input is up to four files separated by a line "%%": w.workload, a.jsonl, b.txt and
// c.workload, written to the scratch directory; load_workloads reads "file:<scratch>/w.workload"
// (relative paths in it resolve to the scratch directory) and the passkey specs of its lines
// directly. Inputs with '/' are skipped: only the scratch files can be named (no /dev/zero,
// /dev/stdin or the repository's files).
// Checked beyond "only kvscope::Error": every item fits in max_positions, as load_workloads promises.
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/replay/workload.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

constexpr int kMaxPositions = 512;

// GPT-2 byte-to-unicode alphabet: every byte is a token, so any text encodes (as real models do).
std::string byte_symbol(int b) {
  static std::vector<int> map = [] {
    std::vector<int> m(256, -1);
    int extra = 0;
    for (int c = 0; c < 256; ++c)
      m[c] = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174) ? c : 256 + extra++;
    return m;
  }();
  const int cp = map[b];
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else {
    s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
  return s;
}

// A small byte-level BPE: 256 byte tokens and a few merges for the passkey filler's words.
const kvscope::Tokenizer& tokenizer() {
  static const kvscope::Tokenizer* tok = [] {
    nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
    for (int b = 0; b < 256; ++b) vocab[byte_symbol(b)] = b;
    const std::string sp = byte_symbol(' ');
    const std::vector<std::pair<std::string, std::string>> pairs = {
        {"T", "h"}, {"Th", "e"}, {sp, "i"}, {sp + "i", "s"}, {"e", "e"}, {"r", "ee"}, {"g", "ree"}, {sp, "gree"},
        {sp + "gree", "n"}, {sp, "t"}, {sp + "t", "h"}, {sp + "th", "e"}, {sp, "p"}, {sp + "p", "a"}, {"s", "s"},
        {sp + "pa", "ss"}, {sp, "k"}, {sp + "k", "e"}, {sp + "ke", "y"}};
    int id = 256;
    for (const auto& [a, b] : pairs) {
      merges.push_back(a + " " + b);
      vocab[a + b] = id++;
    }
    vocab["<|endoftext|>"] = id;
    nlohmann::json j;
    j["added_tokens"] = {{{"id", id}, {"content", "<|endoftext|>"}, {"special", true}}};
    j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}};
    j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
    j["decoder"] = {{"type", "ByteLevel"}};
    return kvscope::load_hf_bpe_from_json(j.dump(), "fuzz tokenizer").release();
  }();
  return *tok;
}

// n=17..10000 passkey prompts are valid but cost ~50 ms each here (a binary search over filler
// lengths, tokenizing each candidate): skipped so that one input stays far below the timeout.
// The option syntax allows blanks and '+' after '=' and leading zeros (std::stoi).
bool too_much_work(const std::string& in) {
  for (size_t i = in.find("n="); i != std::string::npos; i = in.find("n=", i + 1)) {
    if (i > 0 && !std::strchr(",; \t:\n\r", in[i - 1])) continue;  // "len=", "window=" are other keys
    size_t j = i + 2;
    while (j < in.size() && std::strchr(" \t+", in[j]) && in[j]) ++j;
    while (j < in.size() && in[j] == '0') ++j;
    size_t digits = 0;
    long v = 0;
    for (; j < in.size() && in[j] >= '0' && in[j] <= '9' && digits < 6; ++j, ++digits) v = v * 10 + (in[j] - '0');
    if (v > 16 && v <= 10000 && !(j < in.size() && in[j] >= '0' && in[j] <= '9')) return true;
  }
  return false;
}

void check(const std::vector<kvscope::WorkloadSlice>& slices) {
  for (const auto& s : slices) {
    for (const auto& it : s.items) {
      const size_t used = it.prompt.size() + (s.kind == kvscope::WorkloadKind::Text ? it.target.size() : it.max_new);
      if (it.prompt.empty() || used > static_cast<size_t>(kMaxPositions)) {
        std::fprintf(stderr, "%s: item of %zu prompt tokens + %zu needs %zu > %d positions\n", s.name.c_str(),
                     it.prompt.size(), used - it.prompt.size(), used, kMaxPositions);
        __builtin_trap();
      }
      const std::string out = tokenizer().decode(it.prompt);
      kvscope::fuzz::consume(kvscope::answer_exact_match(out, it.answer));
      kvscope::fuzz::consume(kvscope::answer_contains(out, it.answer));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  if (input.find('/') != std::string::npos || too_much_work(input)) return 0;
  static const char* kNames[] = {"w.workload", "a.jsonl", "b.txt", "c.workload"};
  std::vector<std::string> parts;
  for (size_t pos = 0;;) {
    const size_t sep = input.find("\n%%\n", pos);
    parts.push_back(input.substr(pos, sep == std::string::npos ? std::string::npos : sep - pos));
    if (sep == std::string::npos || parts.size() == 4) break;
    pos = sep + 4;
  }
  for (const char* name : kNames) std::remove((kvscope::fuzz::scratch_dir() + "/" + name).c_str());
  for (size_t i = 0; i < parts.size(); ++i)
    kvscope::fuzz::write_scratch(reinterpret_cast<const uint8_t*>(parts[i].data()), parts[i].size(), kNames[i]);

  try {
    check(kvscope::load_workloads({"file:" + kvscope::fuzz::scratch_dir() + "/w.workload"}, tokenizer(), kMaxPositions));
  } catch (const kvscope::Error&) {
  }
  // The same spec strings as given on the command line (passkey only: the others name files).
  size_t start = 0;
  for (int lines = 0; start < parts[0].size() && lines < 8; ++lines) {
    size_t end = parts[0].find('\n', start);
    if (end == std::string::npos) end = parts[0].size();
    const std::string line = parts[0].substr(start, end - start);
    start = end + 1;
    if (line.rfind("passkey:", 0) != 0 || line.find("filler") != std::string::npos) continue;
    try {
      check(kvscope::load_workloads({line}, tokenizer(), kMaxPositions));
    } catch (const kvscope::Error&) {
    }
  }
  return 0;
}
