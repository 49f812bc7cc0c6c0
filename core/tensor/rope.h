#pragma once
// Rotary position embedding on [tokens, head_dim] matrices, in place. Rotate-half pairs (j, j + D/2)
// as HF Llama/Qwen, or interleaved pairs (2j, 2j + 1) as GPT-J / Meta's original code.
namespace kvscope {

// Row t is at position first_pos + t; inverse rotates by -angle (post-RoPE -> pre-RoPE).
void apply_rope(float* x, int tokens, int head_dim, double theta, int first_pos = 0, bool inverse = false,
                bool interleaved = false);

}  // namespace kvscope
