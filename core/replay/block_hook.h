#pragma once
// Per-block decisions in replay: QuantizedKvCache asks a BlockBitsHook for the bits of each block of
// tokens of one (layer, kind, head group) when the block's first token leaves the residual window
// (a policy script's choose_bits with token_stats, python/policy_blocks.h). The cache records every
// choice (BlockChoice) and replay stores them per item, so a run can be reproduced.
//
// Blocks, counted from the first token after the sinks (S), per (layer, kind, head group):
//   per-channel keys/values (KIVI keys, uniform per-channel): the quantization block itself
//       (the residual R for KIVI keys, the group size otherwise);
//   per-token groups: R tokens (1 when R = 0). Token t leaves the window once R tokens follow it,
//       so when a block's first token leaves, the whole block (R tokens) is already cached: its
//       statistics are complete although its tokens are quantized one by one afterwards.
// Decisions change only the bits; when tokens are quantized is the plan's, so a hook returning the
// plan's bits reproduces the plan exactly. Bits 16 keep the block's tokens fp16 (counted as such).
// Heads planned fp16 stay fp16 and ask nothing; a per-head-global scale (axis head) and methods with
// their own coder (WaterSIC, the formats' row codecs) cannot change bits per block and are refused.
#include <cstddef>
#include <string>
#include <vector>

namespace kvscope {

struct KvBlock {
  int layer = 0;
  char kind = 'k';
  int head_group = 0;
  int h0 = 0, h1 = 0;          // the group's KV heads [h0, h1)
  int index = 0;               // block number since the sinks
  int first = 0, tokens = 0;   // token positions [first, first + tokens)
  int cached = 0;              // tokens of this layer cached now
  int head_dim = 0;
  // Token t of head h (fp16-rounded, not yet quantized): rows + (h - h0) * head_stride + (t - first) * head_dim.
  const float* rows = nullptr;
  size_t head_stride = 0;
  int planned_bits = 0;        // the plan's bits for the group's first quantized head (16 = fp16)
};

class BlockBitsHook {
 public:
  virtual ~BlockBitsHook() = default;
  // Bits for the block: 1..8, or 16 to keep it fp16. Throws Error to stop the replay.
  virtual int choose_bits(const KvBlock& block) = 0;
  // A new cache starts (each item's teacher-forced pass, and a free-running greedy rerun): budgets
  // that the hook keeps per request restart here.
  virtual void begin_cache() {}
};

// One decision as recorded by the cache.
struct BlockChoice {
  int layer = 0;
  char kind = 'k';
  int head_group = 0, index = 0, first = 0, tokens = 0, bits = 0;
  bool operator==(const BlockChoice&) const = default;
};

// {"columns": ["layer","kind","head_group","block","first","tokens","bits"], "rows": [[0,"k",0,0,4,128,3], ...]}
// plus "greedy_rows" (same columns) when `greedy` is not empty. "" when both are empty.
std::string block_choices_json(const std::vector<BlockChoice>& choices, const std::vector<BlockChoice>& greedy = {});
// The "rows" (or "greedy_rows") of such a text; Error naming `where` when malformed.
std::vector<BlockChoice> parse_block_choices(const std::string& json_text, const std::string& where, bool greedy = false);

// Replays recorded choices: returns the bits stored for each block; Error for a block not recorded.
class RecordedBlockBits : public BlockBitsHook {
 public:
  explicit RecordedBlockBits(std::vector<BlockChoice> choices) : choices_(std::move(choices)) {}
  int choose_bits(const KvBlock& block) override;

 private:
  std::vector<BlockChoice> choices_;
};

}  // namespace kvscope
