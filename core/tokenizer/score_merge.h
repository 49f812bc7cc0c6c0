#pragma once
// Score-ordered BPE as SentencePiece (bpe_model.cc) and llama2.c's encode() do it: start from
// single symbols, repeatedly merge the adjacent pair whose concatenation is in the vocabulary
// with the highest score, the leftmost pair on ties. Internal to core/tokenizer.
#include <cstdint>
#include <queue>
#include <string_view>
#include <vector>

namespace kvscope::detail {

struct Symbol {
  uint32_t begin = 0, len = 0;
  bool frozen = false;  // a user-defined piece: never merged with its neighbours
};

// `score(piece, &s)` returns true and sets s when `piece` may be produced by a merge.
template <typename ScoreFn>
std::vector<Symbol> score_merge(std::string_view text, const std::vector<Symbol>& initial, ScoreFn score) {
  struct Node {
    uint32_t begin, len;
    int prev, next;
    bool frozen;
  };
  struct Pair {
    float score;
    int left;
    uint32_t left_len, right_len;
    bool operator<(const Pair& o) const {  // max-heap: higher score first, then leftmost
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::vector<Node> nodes(initial.size());
  for (size_t i = 0; i < initial.size(); ++i)
    nodes[i] = {initial[i].begin, initial[i].len, static_cast<int>(i) - 1,
                i + 1 < initial.size() ? static_cast<int>(i) + 1 : -1, initial[i].frozen};
  std::priority_queue<Pair> queue;
  auto try_pair = [&](int left) {
    if (left < 0 || nodes[left].next < 0) return;
    const Node& a = nodes[left];
    const Node& b = nodes[a.next];
    if (a.frozen || b.frozen) return;
    float s;
    if (score(text.substr(a.begin, a.len + b.len), &s)) queue.push({s, left, a.len, b.len});
  };
  for (size_t i = 0; i + 1 < nodes.size(); ++i) try_pair(static_cast<int>(i));
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Node& a = nodes[p.left];
    if (a.len != p.left_len || a.next < 0 || nodes[a.next].len != p.right_len) continue;  // stale
    const int right = a.next;
    a.len += nodes[right].len;
    a.next = nodes[right].next;
    if (a.next >= 0) nodes[a.next].prev = p.left;
    nodes[right].len = 0;  // dead
    try_pair(a.prev);
    try_pair(p.left);
  }
  std::vector<Symbol> out;
  for (int i = nodes.empty() ? -1 : 0; i >= 0; i = nodes[i].next) out.push_back({nodes[i].begin, nodes[i].len});
  return out;
}

// Splits UTF-8 text into characters (invalid bytes become single-byte symbols).
inline std::vector<Symbol> utf8_chars(std::string_view s, uint32_t from = 0, uint32_t to = UINT32_MAX) {
  std::vector<Symbol> out;
  if (to > s.size()) to = static_cast<uint32_t>(s.size());
  for (uint32_t i = from; i < to;) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
    if (i + n > to) n = 1;
    for (uint32_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) n = 1;
    out.push_back({i, n});
    i += n;
  }
  return out;
}

}  // namespace kvscope::detail
