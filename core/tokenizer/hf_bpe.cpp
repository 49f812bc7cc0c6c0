// Hugging Face tokenizer.json byte-level BPE (GPT-2, Qwen2, Llama-3 families).
// Pipeline: added/special tokens are cut out first; the rest is split by the family's
// pre-tokenizer regex (hand-written matchers below), each piece's bytes are mapped to the
// printable byte-to-unicode alphabet, and merged by merge rank (lowest first, leftmost on ties).
#include <algorithm>
#include <clocale>
#include <cstring>
#include <cwctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

#include <locale.h>

namespace kvscope {

namespace {

using json = nlohmann::json;

// ---- UTF-8 ----------------------------------------------------------------------------------
void put_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// Decodes one code point at s[i]; invalid bytes decode as themselves (length 1) so the
// byte-level mapping still round-trips them.
uint32_t next_cp(std::string_view s, size_t i, size_t* len) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    *len = 1;
    return 0xDC00 + c;  // lone surrogate range: never a letter, number or space
  }
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (size_t k = 1; k < n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) {
      *len = 1;
      return 0xDC00 + c;
    }
    cp = (cp << 6) | (cc & 0x3f);
  }
  *len = n;
  return cp;
}

// ---- character classes for the pre-tokenizer regexes (\s, \p{L}, \p{N}) ---------------------
bool is_space(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_number(uint32_t c) {
  if (c >= '0' && c <= '9') return true;
  if (c < 0x80) return false;
  static const uint32_t ranges[][2] = {
      {0xB2, 0xB3}, {0xB9, 0xB9}, {0xBC, 0xBE}, {0x660, 0x669}, {0x6F0, 0x6F9}, {0x7C0, 0x7C9}, {0x966, 0x96F},
      {0x9E6, 0x9EF}, {0xA66, 0xA6F}, {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xBE6, 0xBF2}, {0xC66, 0xC6F}, {0xCE6, 0xCEF},
      {0xD66, 0xD78}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF33}, {0x1040, 0x1049}, {0x17E0, 0x17E9},
      {0x1810, 0x1819}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089}, {0x2150, 0x2189}, {0x2460, 0x249B},
      {0x24EA, 0x24FF}, {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195},
      {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF}, {0xFF10, 0xFF19},
      {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C}};
  for (const auto& r : ranges)
    if (c >= r[0] && c <= r[1]) return true;
  return false;
}

// Unicode letters via glibc's C.UTF-8 classification (covers Latin, Greek, Cyrillic, CJK, ...).
bool is_letter(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (is_number(c) || is_space(c) || (c >= 0xD800 && c <= 0xDFFF)) return false;
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
  if (!loc) return c >= 0xC0;  // no UTF-8 locale: treat non-ASCII as letters
  return iswalpha_l(static_cast<wint_t>(c), loc) != 0;
}

enum class Family { Gpt2, Qwen2, Llama3 };

// Splits text into pre-tokens exactly as the family's regex does (leftmost alternative first).
std::vector<std::string_view> pre_split(std::string_view s, Family fam) {
  std::vector<uint32_t> cps;
  std::vector<size_t> off;
  for (size_t i = 0; i < s.size();) {
    size_t n;
    cps.push_back(next_cp(s, i, &n));
    off.push_back(i);
    i += n;
  }
  off.push_back(s.size());
  const size_t N = cps.size();
  auto letter = [&](size_t i) { return i < N && is_letter(cps[i]); };
  auto number = [&](size_t i) { return i < N && is_number(cps[i]); };
  auto space = [&](size_t i) { return i < N && is_space(cps[i]); };
  auto other = [&](size_t i) { return i < N && !is_space(cps[i]) && !is_letter(cps[i]) && !is_number(cps[i]); };
  auto newline = [&](size_t i) { return i < N && (cps[i] == '\r' || cps[i] == '\n'); };
  const bool icase = fam != Family::Gpt2;
  auto lower = [&](size_t i) -> uint32_t {
    if (i >= N) return 0;
    uint32_t c = cps[i];
    return icase && c >= 'A' && c <= 'Z' ? c + 32 : c;
  };

  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < N) {
    size_t j = i;
    // 's 't 're 've 'm 'll 'd
    if (cps[i] == '\'') {
      const uint32_t a = lower(i + 1), b = lower(i + 2);
      if (a == 's' || a == 't' || a == 'm' || a == 'd') j = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) j = i + 3;
    }
    if (j == i) {
      if (fam == Family::Gpt2) {
        const size_t k = (cps[i] == ' ') ? i + 1 : i;  // optional leading space
        if (letter(k)) {
          j = k;
          while (letter(j)) ++j;
        } else if (number(k)) {
          j = k;
          while (number(j)) ++j;
        } else if (other(k)) {
          j = k;
          while (other(j)) ++j;
        }
      } else {
        if (letter(i)) {
          j = i;
          while (letter(j)) ++j;
        } else if (!newline(i) && !letter(i) && !number(i) && letter(i + 1)) {  // [^\r\n\p{L}\p{N}]?\p{L}+
          j = i + 1;
          while (letter(j)) ++j;
        } else if (number(i)) {
          const size_t max_digits = fam == Family::Llama3 ? 3 : 1;
          j = i;
          while (number(j) && j - i < max_digits) ++j;
        } else {
          const size_t k = (cps[i] == ' ') ? i + 1 : i;  // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
          if (other(k)) {
            j = k;
            while (other(j)) ++j;
            while (newline(j)) ++j;
          }
        }
      }
    }
    if (j == i && space(i)) {
      size_t end = i;
      while (space(end)) ++end;
      size_t last_nl = N;
      if (fam != Family::Gpt2)
        for (size_t k = i; k < end; ++k)
          if (newline(k)) last_nl = k;
      if (last_nl != N) {
        j = last_nl + 1;  // \s*[\r\n]+
      } else if (end == N || end - i == 1) {
        j = end;  // \s+(?!\S) at the end of text, or the lone \s+
      } else {
        j = end - 1;  // \s+(?!\S): leave the last space to prefix the next word
      }
    }
    if (j == i) j = i + 1;  // cannot happen for valid classes; guarantees progress
    out.push_back(s.substr(off[i], off[j] - off[i]));
    i = j;
  }
  return out;
}

struct PairHash {
  size_t operator()(const std::pair<int32_t, int32_t>& p) const {
    return std::hash<uint64_t>()((static_cast<uint64_t>(static_cast<uint32_t>(p.first)) << 32) |
                                 static_cast<uint32_t>(p.second));
  }
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  HfBpeTokenizer(const std::string& text, const std::string& where) : where_(where) {
    // GPT-2 byte <-> unicode table: printable bytes map to themselves, the rest to 256 + n.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : 256 + n++;
      byte_char_[b].clear();
      put_utf8(byte_char_[b], cp);
      char_byte_[cp] = static_cast<unsigned char>(b);
    }
    parse(text);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      int32_t id;
      size_t len = match_added(text, i, &id);
      if (len == 0) {
        ++i;
        continue;
      }
      encode_plain(text.substr(start, i - start), out);
      out.push_back(id);
      i += len;
      start = i;
    }
    encode_plain(text.substr(start), out);
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id < 0 || id >= static_cast<int32_t>(tokens_.size())) continue;
      if (special_.count(id)) continue;
      if (added_.count(id)) {
        out += tokens_[id];
        continue;
      }
      const std::string& t = tokens_[id];
      for (size_t i = 0; i < t.size();) {
        size_t n;
        const uint32_t cp = next_cp(t, i, &n);
        auto it = char_byte_.find(cp);
        if (it != char_byte_.end()) out.push_back(static_cast<char>(it->second));
        else out.append(t, i, n);  // not a byte-level symbol: keep verbatim
        i += n;
      }
    }
    return out;
  }

  std::string piece(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(tokens_.size()) ? tokens_[id] : "";
  }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  std::string kind() const override { return "byte-level-bpe"; }

 private:
  size_t match_added(std::string_view text, size_t i, int32_t* id) const {
    auto it = added_by_first_.find(static_cast<unsigned char>(text[i]));
    if (it == added_by_first_.end()) return 0;
    for (const auto& [content, tid] : it->second) {  // longest first
      if (text.compare(i, content.size(), content) == 0) {
        *id = tid;
        return content.size();
      }
    }
    return 0;
  }

  void encode_plain(std::string_view text, std::vector<int32_t>& out) const {
    if (text.empty()) return;
    std::string prefixed;
    if (add_prefix_space_ && text[0] != ' ') {
      prefixed = " " + std::string(text);
      text = prefixed;
    }
    for (std::string_view word : pre_split(text, family_)) encode_word(word, out);
  }

  void encode_word(std::string_view word, std::vector<int32_t>& out) const {
    std::string mapped;
    for (unsigned char b : word) mapped += byte_char_[b];
    if (ignore_merges_) {
      auto it = vocab_.find(mapped);
      if (it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(mapped);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    // Symbols start as single mapped bytes; merge the lowest-rank adjacent pair until none is left.
    std::vector<int32_t> syms;
    for (unsigned char b : word) syms.push_back(byte_id_[b]);
    std::vector<int32_t> ids;
    bool bad = false;
    for (int32_t s : syms) bad |= s < 0;
    if (bad) {  // a byte missing from the vocabulary
      for (unsigned char b : word) {
        if (byte_id_[b] >= 0) ids.push_back(byte_id_[b]);
        else if (unk_ >= 0) ids.push_back(unk_);
        else fail(where_, "byte 0x{:02X} has no token and there is no unk_token", b);
      }
    } else {
      for (;;) {
        int best = -1;
        int32_t best_rank = std::numeric_limits<int32_t>::max();
        for (size_t k = 0; k + 1 < syms.size(); ++k) {
          auto it = merges_.find({syms[k], syms[k + 1]});
          if (it != merges_.end() && it->second.first < best_rank) {
            best_rank = it->second.first;
            best = static_cast<int>(k);
          }
        }
        if (best < 0) break;
        const int32_t merged = merges_.at({syms[best], syms[best + 1]}).second;
        // Merge every occurrence of this pair, left to right (same result as one at a time).
        const int32_t a = syms[best], b = syms[best + 1];
        std::vector<int32_t> next;
        for (size_t k = 0; k < syms.size(); ++k) {
          if (k + 1 < syms.size() && syms[k] == a && syms[k + 1] == b) {
            next.push_back(merged);
            ++k;
          } else {
            next.push_back(syms[k]);
          }
        }
        syms.swap(next);
      }
      ids = syms;
    }
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < 200000) cache_.emplace(mapped, std::move(ids));
  }

  // Ids index a dense table: a huge id in a crafted file must not allocate gigabytes.
  static constexpr int32_t kMaxId = (1 << 24) - 1;
  static bool valid_id(const json& v) {
    return v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMaxId;
  }

  void parse(const std::string& text) {
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, or out_of_range for 1e309
      fail(where_, "not valid JSON ({})", e.what());
    }
    // Any value of the wrong type (a string where a number goes, ...) surfaces as a json::exception.
    try {
      build(j);
    } catch (const json::exception& e) {
      fail(where_, "unexpected tokenizer.json structure ({})", e.what());
    }
  }

  void build(json& j) {
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object()) fail(where_, "missing \"model\" object");
    const json& m = j["model"];
    const std::string type = m.value("type", std::string("BPE"));
    if (type != "BPE") fail(where_, "tokenizer model type \"{}\" is not supported (only byte-level BPE)", type);
    if (!m.contains("vocab") || !m["vocab"].is_object()) fail(where_, "model.vocab is missing");
    if (!m.contains("merges") || !m["merges"].is_array()) fail(where_, "model.merges is missing");
    ignore_merges_ = m.value("ignore_merges", false);

    // Pre-tokenizer: ByteLevel (GPT-2 regex built in) or Sequence[Split(regex), ByteLevel].
    bool byte_level = false;
    std::string regex;
    auto visit = [&](const json& p) {
      if (!p.is_object()) return;
      const std::string t = p.value("type", std::string());
      if (t == "ByteLevel") {
        byte_level = true;
        add_prefix_space_ = p.value("add_prefix_space", false);
        if (p.value("use_regex", true) && regex.empty()) regex = "gpt2";
      } else if (t == "Split") {
        if (p.contains("pattern") && p["pattern"].is_object() && p["pattern"].contains("Regex"))
          regex = p["pattern"]["Regex"].get<std::string>();
      } else {
        fail(where_, "pre-tokenizer \"{}\" is not supported (byte-level BPE expects ByteLevel or Split)", t);
      }
    };
    if (j.contains("pre_tokenizer") && j["pre_tokenizer"].is_object()) {
      const json& pt = j["pre_tokenizer"];
      if (pt.value("type", std::string()) == "Sequence") {
        if (!pt.contains("pretokenizers") || !pt["pretokenizers"].is_array())
          fail(where_, "pre_tokenizer Sequence without a \"pretokenizers\" array");
        for (const auto& p : pt["pretokenizers"]) visit(p);
      } else {
        visit(pt);
      }
    }
    if (!byte_level) fail(where_, "not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer)");
    if (regex == "gpt2" || regex.find("?\\p{L}+| ?\\p{N}+") != std::string::npos) family_ = Family::Gpt2;
    else if (regex.find("\\p{N}{1,3}") != std::string::npos) family_ = Family::Llama3;
    else if (regex.find("[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}") != std::string::npos) family_ = Family::Qwen2;
    else fail(where_, "pre-tokenizer regex is not one we know (GPT-2, Qwen2 or Llama-3): {}", regex);
    if (j.contains("normalizer") && j["normalizer"].is_object()) {
      const std::string nt = j["normalizer"].value("type", std::string());
      // NFC leaves already-composed text (nearly all text) unchanged; we do not carry the tables.
      if (nt != "NFC") fail(where_, "normalizer \"{}\" is not supported", nt);
    }

    int32_t max_id = -1;
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      if (!it.value().is_number_integer()) fail(where_, "vocab entry \"{}\" has no integer id", it.key());
      const int32_t id = it.value().get<int32_t>();
      if (!valid_id(it.value())) fail(where_, "vocab entry \"{}\" has id {} outside 0..{}", it.key(), it.value().dump(), kMaxId);
      vocab_[it.key()] = id;
      max_id = std::max(max_id, id);
    }
    std::vector<std::pair<std::string, int32_t>> added;
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const auto& a : j["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !valid_id(a["id"]))
          fail(where_, "added token {} has no id in 0..{}", a.dump(), kMaxId);
        const int32_t id = a.at("id").get<int32_t>();
        const std::string content = a.at("content").get<std::string>();
        if (content.empty()) continue;
        added.emplace_back(content, id);
        added_.insert(id);
        if (a.value("special", false)) special_.insert(id);
        max_id = std::max(max_id, id);
      }
    }
    tokens_.assign(max_id + 1, std::string());
    for (const auto& [t, id] : vocab_) tokens_[id] = t;
    for (const auto& [t, id] : added) {
      tokens_[id] = t;
      added_by_first_[static_cast<unsigned char>(t[0])].emplace_back(t, id);
    }
    for (auto& [first, list] : added_by_first_)
      std::stable_sort(list.begin(), list.end(), [](auto& x, auto& y) { return x.first.size() > y.first.size(); });
    for (int b = 0; b < 256; ++b) {
      auto it = vocab_.find(byte_char_[b]);
      byte_id_[b] = it == vocab_.end() ? -1 : it->second;
    }
    int32_t rank = 0;
    for (const auto& mj : m["merges"]) {
      std::string a, b;
      if (mj.is_string()) {
        const std::string s = mj.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos) fail(where_, "merge \"{}\" is not \"left right\"", s);
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mj.is_array() && mj.size() == 2) {
        a = mj[0].get<std::string>();
        b = mj[1].get<std::string>();
      } else {
        fail(where_, "merge #{} is neither \"a b\" nor [a, b]", rank);
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
        fail(where_, "merge #{} (\"{}\" \"{}\") uses a token missing from the vocabulary", rank, a, b);
      merges_.emplace(std::make_pair(ia->second, ib->second), std::make_pair(rank, iab->second));
      ++rank;
    }
    if (m.contains("unk_token") && m["unk_token"].is_string()) {
      auto it = vocab_.find(m["unk_token"].get<std::string>());
      if (it != vocab_.end()) unk_ = it->second;
    }
    // BOS/EOS: the conventional names of the families we support.
    auto find_added = [&](std::initializer_list<const char*> names) {
      for (const char* name : names)
        for (const auto& [t, id] : added)
          if (t == name) return static_cast<int>(id);
      return -1;
    };
    bos_ = find_added({"<|begin_of_text|>", "<s>"});
    eos_ = find_added({"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"});
  }

  std::string where_;
  std::string byte_char_[256];
  std::unordered_map<uint32_t, unsigned char> char_byte_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;
  std::unordered_map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>, PairHash> merges_;  // -> (rank, id)
  std::map<unsigned char, std::vector<std::pair<std::string, int32_t>>> added_by_first_;
  std::set<int32_t> added_, special_;
  int32_t byte_id_[256];
  Family family_ = Family::Gpt2;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  int bos_ = -1, eos_ = -1, unk_ = -1;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_bpe_from_json(const std::string& json_text, const std::string& where) {
  return std::make_unique<HfBpeTokenizer>(json_text, where);
}

std::unique_ptr<Tokenizer> load_hf_bpe(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_hf_bpe_from_json(ss.str(), path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  if (fs::exists(dir / "tokenizer.model")) return load_sentencepiece((dir / "tokenizer.model").string());
  if (fs::exists(dir / "tokenizer.json")) return load_hf_bpe((dir / "tokenizer.json").string());
  if (fs::exists(dir / "tokenizer.bin")) return load_llama2c_vocab((dir / "tokenizer.bin").string());
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("tok", 0) == 0 && e.path().extension() == ".bin") return load_llama2c_vocab(e.path().string());
  }
  fail(model_dir, "no tokenizer found (expected tokenizer.model, tokenizer.json or a llama2.c tokenizer.bin)");
}

}  // namespace kvscope
