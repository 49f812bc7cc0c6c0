#pragma once
// A few lines of protobuf wire format, enough to hand-write SentencePiece tokenizer.model files for
// the tokenizer tests and the fuzz seeds (varints, length-delimited fields, fixed32 floats).
#include <cstdint>
#include <cstring>
#include <string>

namespace kvscope::test_pb {

inline std::string pb_varint(uint64_t v) {
  std::string s;
  do {
    unsigned char b = v & 0x7f;
    v >>= 7;
    s.push_back(static_cast<char>(v ? b | 0x80 : b));
  } while (v);
  return s;
}
inline std::string pb_bytes(int field, const std::string& s) { return pb_varint(field << 3 | 2) + pb_varint(s.size()) + s; }
inline std::string pb_int(int field, uint64_t v) { return pb_varint(field << 3) + pb_varint(v); }
inline std::string pb_float(int field, float f) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &f, 4);
  return pb_varint(field << 3 | 5) + s;
}
// A ModelProto.SentencePiece: piece (1), score (2), type (3).
inline std::string pb_piece(const std::string& text, float score, int type) {
  return pb_bytes(1, pb_bytes(1, text) + pb_float(2, score) + pb_int(3, type));
}

}  // namespace kvscope::test_pb
