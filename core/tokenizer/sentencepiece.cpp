// SentencePiece BPE (tokenizer.model) and llama2.c vocabularies: both are score-ordered BPE
// over characters with byte fallback.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/tokenizer/score_merge.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

using detail::Symbol;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- minimal protobuf wire-format reader (varint, 32-bit, 64-bit, length-delimited) ----------
class ProtoReader {
 public:
  ProtoReader(std::string_view buf, const std::string& where) : buf_(buf), where_(where) {}
  bool done() const { return pos_ >= buf_.size(); }
  // Reads the next field key; returns false at the end.
  bool next(uint32_t* field, uint32_t* wire) {
    if (done()) return false;
    const uint64_t key = varint();
    *field = static_cast<uint32_t>(key >> 3);
    *wire = static_cast<uint32_t>(key & 7);
    if (*field == 0) fail(where_, "corrupt protobuf: field number 0 at byte {}", pos_);
    return true;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= buf_.size()) fail(where_, "truncated protobuf (varint runs past the end)");
      const unsigned char b = static_cast<unsigned char>(buf_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail(where_, "corrupt protobuf: varint longer than 10 bytes");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > buf_.size() - pos_) fail(where_, "truncated protobuf: a {}-byte field runs past the end", n);
    std::string_view s = buf_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  float fixed32_float() {
    if (buf_.size() - pos_ < 4) fail(where_, "truncated protobuf (fixed32)");
    float f;
    std::memcpy(&f, buf_.data() + pos_, 4);  // little-endian host
    pos_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: fail(where_, "corrupt protobuf: unsupported wire type {}", wire);
    }
  }

 private:
  void advance(size_t n) {
    if (buf_.size() - pos_ < n) fail(where_, "truncated protobuf");
    pos_ += n;
  }
  std::string_view buf_;
  const std::string& where_;
  size_t pos_ = 0;
};

// ModelProto.SentencePiece.Type
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

// The byte value of a byte-fallback piece "<0xHH>", or -1 when the text has another form.
int byte_piece_value(const std::string& text) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  if (text.size() != 6 || text.compare(0, 3, "<0x") != 0 || text[5] != '>') return -1;
  const int hi = hex(text[3]), lo = hex(text[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

const std::string kSpace = "\xe2\x96\x81";  // U+2581 '▁', SentencePiece's visible space

// Score-ordered BPE shared by both vocabularies.
struct ScoredVocab {
  std::vector<Piece> pieces;
  std::unordered_map<std::string, int32_t> id_of;  // mergeable pieces only
  int byte_id[256];
  int unk = 0, bos = 1, eos = 2;

  void index(bool mergeable_all) {
    std::fill(std::begin(byte_id), std::end(byte_id), -1);
    for (int32_t i = 0; i < static_cast<int32_t>(pieces.size()); ++i) {
      const Piece& p = pieces[i];
      if (const int b = p.type == kByte ? byte_piece_value(p.text) : -1; b >= 0) {
        byte_id[b] = i;
        if (!mergeable_all) continue;
      }
      if (mergeable_all || p.type == kNormal || p.type == kUserDefined) id_of.emplace(p.text, i);
    }
  }

  // Merges `s` (split at characters), then maps symbols to ids; unknown symbols go to bytes.
  void encode_into(std::string_view s, bool byte_fallback, std::vector<int32_t>& out,
                   int byte_offset_if_no_byte_pieces = -1, const std::vector<std::string>* user_defined = nullptr) const {
    auto score = [&](std::string_view piece, float* sc) {
      auto it = id_of.find(std::string(piece));
      if (it == id_of.end()) return false;
      *sc = pieces[it->second].score;
      return true;
    };
    std::vector<Symbol> initial;
    if (user_defined && !user_defined->empty()) {
      // User-defined pieces are cut out whole (longest first) and frozen, as SentencePiece does.
      uint32_t plain = 0;
      for (uint32_t i = 0; i < s.size();) {
        const std::string* hit = nullptr;
        for (const auto& u : *user_defined)
          if (s.compare(i, u.size(), u) == 0) {
            hit = &u;
            break;
          }
        if (!hit) {
          ++i;
          continue;
        }
        auto chars = detail::utf8_chars(s, plain, i);
        initial.insert(initial.end(), chars.begin(), chars.end());
        initial.push_back({i, static_cast<uint32_t>(hit->size()), true});
        i += static_cast<uint32_t>(hit->size());
        plain = i;
      }
      auto chars = detail::utf8_chars(s, plain);
      initial.insert(initial.end(), chars.begin(), chars.end());
    } else {
      initial = detail::utf8_chars(s);
    }
    for (const Symbol& sym : detail::score_merge(s, initial, score)) {
      auto it = id_of.find(std::string(s.substr(sym.begin, sym.len)));
      if (it != id_of.end()) {
        out.push_back(it->second);
        continue;
      }
      for (uint32_t i = 0; i < sym.len; ++i) {
        const unsigned char b = static_cast<unsigned char>(s[sym.begin + i]);
        if (byte_offset_if_no_byte_pieces >= 0) {
          out.push_back(b + byte_offset_if_no_byte_pieces);
        } else if (byte_fallback && byte_id[b] >= 0) {
          out.push_back(byte_id[b]);
        } else {
          out.push_back(unk);
          break;  // one <unk> per unknown symbol, as SentencePiece
        }
      }
    }
  }
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path) : path_(path) { parse(read_file(path)); }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos && v_.bos >= 0) out.push_back(v_.bos);
    std::string norm = normalize(text);
    if (norm.empty()) return out;
    v_.encode_into(norm, byte_fallback_, out, -1, &user_defined_);
    return out;
  }

  std::vector<int32_t> encode_special(std::string_view text) const override {
    std::vector<int32_t> out;
    auto plain = [&](std::string_view segment) {
      const std::string norm = normalize(segment);
      if (!norm.empty()) v_.encode_into(norm, byte_fallback_, out, -1, &user_defined_);
    };
    size_t start = 0;
    for (size_t i = 0; i < text.size();) {
      const std::pair<std::string, int32_t>* hit = nullptr;
      for (const auto& c : controls_)  // longest first
        if (text.compare(i, c.first.size(), c.first) == 0) {
          hit = &c;
          break;
        }
      if (!hit) {
        ++i;
        continue;
      }
      plain(text.substr(start, i - start));
      out.push_back(hit->second);
      i += hit->first.size();
      start = i;
    }
    plain(text.substr(start));
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    bool first = true;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      const Piece& p = v_.pieces[id];
      if (p.type == kControl || p.type == kUnused) continue;
      if (p.type == kByte) {
        out.push_back(static_cast<char>(byte_piece_value(p.text)));  // checked at load
      } else if (p.type == kUnknown) {
        out += " \xe2\x81\x87 ";  // SentencePiece's unk surface " ⁇ "
      } else {
        std::string t;
        for (size_t pos = 0; pos < p.text.size();) {
          if (p.text.compare(pos, kSpace.size(), kSpace) == 0) {
            t.push_back(' ');
            pos += kSpace.size();
          } else {
            t.push_back(p.text[pos++]);
          }
        }
        if (first && add_dummy_prefix_ && !t.empty() && t[0] == ' ') t.erase(0, 1);
        out += t;
      }
      first = false;
    }
    return out;
  }

  std::string piece(int32_t id) const override { return id >= 0 && id < vocab_size() ? v_.pieces[id].text : ""; }
  int vocab_size() const override { return static_cast<int>(v_.pieces.size()); }
  int bos_id() const override { return v_.bos; }
  int eos_id() const override { return v_.eos; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  std::string normalize(std::string_view text) const {
    std::string s(text);
    if (remove_extra_whitespaces_) {
      std::string t;
      bool space = true;  // drops leading spaces
      for (char ch : s) {
        if (ch == ' ') {
          if (!space) t.push_back(' ');
          space = true;
        } else {
          t.push_back(ch);
          space = false;
        }
      }
      while (!t.empty() && t.back() == ' ') t.pop_back();
      s = t;
    }
    if (s.empty()) return s;
    std::string out;
    if (add_dummy_prefix_) out += kSpace;
    for (char ch : s) {
      if (ch == ' ') out += kSpace;
      else out.push_back(ch);
    }
    return out;
  }

  void parse(const std::string& buf) {
    ProtoReader r(buf, path_);
    uint32_t field, wire;
    int model_type = 1;  // proto default UNIGRAM
    std::string normalizer = "";
    while (r.next(&field, &wire)) {
      if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
        ProtoReader pr(r.bytes(), path_);
        Piece p;
        uint32_t f2, w2;
        while (pr.next(&f2, &w2)) {
          if (f2 == 1 && w2 == 2) p.text = std::string(pr.bytes());
          else if (f2 == 2 && w2 == 5) p.score = pr.fixed32_float();
          else if (f2 == 3 && w2 == 0) p.type = static_cast<int>(pr.varint());
          else pr.skip(w2);
        }
        v_.pieces.push_back(std::move(p));
      } else if (field == 2 && wire == 2) {  // TrainerSpec
        ProtoReader tr(r.bytes(), path_);
        uint32_t f2, w2;
        while (tr.next(&f2, &w2)) {
          if (w2 != 0) {
            tr.skip(w2);
            continue;
          }
          const auto v = static_cast<int64_t>(tr.varint());
          if (f2 == 3) model_type = static_cast<int>(v);
          else if (f2 == 35) byte_fallback_ = v != 0;
          else if (f2 == 40) v_.unk = static_cast<int>(static_cast<int32_t>(v));
          else if (f2 == 41) v_.bos = static_cast<int>(static_cast<int32_t>(v));
          else if (f2 == 42) v_.eos = static_cast<int>(static_cast<int32_t>(v));
        }
      } else if (field == 3 && wire == 2) {  // NormalizerSpec
        ProtoReader nr(r.bytes(), path_);
        uint32_t f2, w2;
        while (nr.next(&f2, &w2)) {
          if (f2 == 1 && w2 == 2) normalizer = std::string(nr.bytes());
          else if (f2 == 3 && w2 == 0) add_dummy_prefix_ = nr.varint() != 0;
          else if (f2 == 4 && w2 == 0) remove_extra_whitespaces_ = nr.varint() != 0;
          else if (f2 == 5 && w2 == 0) escape_whitespaces_ = nr.varint() != 0;
          else nr.skip(w2);
        }
      } else {
        r.skip(wire);
      }
    }
    if (v_.pieces.empty()) fail(path_, "not a SentencePiece model (no pieces found)");
    if (model_type != 2)
      fail(path_, "SentencePiece model type {} is not supported (only BPE, type 2)", model_type);
    if (!normalizer.empty() && normalizer != "identity")
      fail(path_, "SentencePiece normalizer \"{}\" is not supported (only identity)", normalizer);
    if (!escape_whitespaces_) fail(path_, "SentencePiece escape_whitespaces = false is not supported");
    const int n = static_cast<int>(v_.pieces.size());
    if (v_.unk < 0 || v_.unk >= n || v_.bos >= n || v_.eos >= n) fail(path_, "unk/bos/eos id outside the {} pieces", n);
    for (int i = 0; i < n; ++i)
      if (v_.pieces[i].type == kByte && byte_piece_value(v_.pieces[i].text) < 0)
        fail(path_, "byte piece {} is \"{}\", expected the form <0xHH>", i, v_.pieces[i].text);
    v_.index(false);
    for (const auto& p : v_.pieces)
      if (p.type == kUserDefined && !p.text.empty()) user_defined_.push_back(p.text);
    std::stable_sort(user_defined_.begin(), user_defined_.end(),
                     [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (int32_t i = 0; i < n; ++i) {
      const Piece& p = v_.pieces[i];
      if ((p.type == kControl || p.type == kUnknown) && !p.text.empty()) controls_.emplace_back(p.text, i);
    }
    std::stable_sort(controls_.begin(), controls_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  std::string path_;
  ScoredVocab v_;
  std::vector<std::string> user_defined_;  // longest first
  std::vector<std::pair<std::string, int32_t>> controls_;  // control and unknown pieces, longest first
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
};

// llama2.c's tokenizer: every vocabulary entry can be a merge result; a dummy-prefix " " starts
// the text; characters not in the vocabulary become byte tokens id = byte + 3.
class Llama2cTokenizer final : public Tokenizer {
 public:
  explicit Llama2cTokenizer(const std::string& path) {
    const std::string buf = read_file(path);
    if (buf.size() < 4) fail(path, "truncated llama2.c vocabulary ({} bytes)", buf.size());
    size_t pos = 4;  // max_token_length, not needed
    while (pos < buf.size()) {
      if (buf.size() - pos < 8) fail(path, "truncated llama2.c vocabulary at entry {}", v_.pieces.size());
      Piece p;
      int32_t len;
      std::memcpy(&p.score, buf.data() + pos, 4);
      std::memcpy(&len, buf.data() + pos + 4, 4);
      pos += 8;
      if (len < 0 || static_cast<size_t>(len) > buf.size() - pos)
        fail(path, "corrupt llama2.c vocabulary: entry {} has length {}", v_.pieces.size(), len);
      p.text.assign(buf.data() + pos, len);
      pos += len;
      v_.pieces.push_back(std::move(p));
    }
    if (v_.pieces.size() < 259) fail(path, "llama2.c vocabulary has only {} entries (need >= 259)", v_.pieces.size());
    v_.index(true);
    // The first occurrence wins, as llama2.c's lookup of unique pieces.
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> out;
    if (add_bos) out.push_back(v_.bos);
    if (text.empty()) return out;
    std::string s = " ";  // dummy prefix
    s += text;
    v_.encode_into(s, true, out, /*byte offset*/ 3);
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    int32_t prev = -1;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size() || id == v_.bos || id == v_.eos) {
        prev = id;
        continue;
      }
      std::string_view p = v_.pieces[id].text;
      if ((prev == v_.bos || prev == -1) && !p.empty() && p[0] == ' ') p.remove_prefix(1);
      unsigned int byte;
      if (p.size() == 6 && std::sscanf(std::string(p).c_str(), "<0x%02X>", &byte) == 1) out.push_back(static_cast<char>(byte));
      else out += p;
      prev = id;
    }
    return out;
  }

  std::string piece(int32_t id) const override { return id >= 0 && id < vocab_size() ? v_.pieces[id].text : ""; }
  int vocab_size() const override { return static_cast<int>(v_.pieces.size()); }
  int bos_id() const override { return v_.bos; }
  int eos_id() const override { return v_.eos; }
  std::string kind() const override { return "llama2c"; }

 private:
  ScoredVocab v_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<Tokenizer> load_llama2c_vocab(const std::string& path) {
  return std::make_unique<Llama2cTokenizer>(path);
}

}  // namespace kvscope
