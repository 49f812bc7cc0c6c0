#pragma once
// WaterSIC / ZSIC key-cache quantization (ALGORITHMS.md §5): ModelOpt's `watersic_kv`, with the lab
// fixes of §5 (all G query heads of a KV head, causal per-sequence importance, stored row factors,
// search refined on all rows to meet the rate) and a ModelOpt-compatible mode for parity tests.
//
// Per (layer, KV head): W = K_h [a tokens, n = head_dim], Σ = Σ_g Q_gᵀQ_g [n, n]. The ZSIC pass
// rounds W in the Cholesky-whitened domain column by column (n-1 down to 0) with one global step c,
// so that ||(W - Ŵ)Qᵀ||² is small; c is searched so that the entropy rate of the codes hits the
// target. Reconstruction: K̂[r, j] = row_scale[r] · Z[r, j] · column_scale[j]. All math in double.
#include <cstdint>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"

namespace kvscope {

enum class WaterSicQueries {
  Group,      // [lab] A stacks all G query heads hG..hG+G-1 of KV head h
  SameIndex,  // ModelOpt: query head h only (wrong group for h >= 1 under GQA; parity tests only)
};

struct WaterSicOptions {
  double target_rate = 2.0;        // bits per element incl. side info (§5.6), > 0
  bool use_lmmse = true;           // LMMSE shrinkage gains γ (§5.4)
  bool sort_columns = true;        // perm = argsort(diag Σ) ascending (§5.2)
  int n_rescaler_iters = 0;        // ModelOpt's alternating diagonal rescaler (§5.5)
  double sample_frac = 0;          // rows used by the bisection, in (0, 1]; 0 = auto min(0.1, 1000/a)
  uint64_t seed = 0;               // row subsample RNG (ModelOpt's is unseeded)
  bool refine_on_all_rows = true;  // [lab] after the subsample search, re-search c on all rows
  double rate_tolerance = 0.05;    // [lab] refinement stops when |achieved - target| <= this
  bool kl_aware = false;           // weight rows by attention mass (§5.7)
  double importance_clip = 50.0;   // w clipped to [1/clip, clip] after normalizing to mean 1
  bool causal_importance = true;   // [lab] causal, per sequence; false = ModelOpt (no mask)
  int sequence_length = 0;         // tokens per calibration sequence for causal importance; 0 = one sequence
  WaterSicQueries queries = WaterSicQueries::Group;
  // [lab, §0.3] the per-column product α_jγ_j and the per-row factors are what the 16/a + 16/n of
  // the rate pays for: round them to fp16 and let the SIC loop use the rounded values, so that the
  // decoder reproduces exactly what the encoder compensated for. Off = ModelOpt (all float64).
  bool fp16_side_info = true;
};

// ModelOpt `watersic_kv` behaviour: query head h only, unmasked importance, subsample search only,
// float64 side info.
WaterSicOptions watersic_modelopt_options();

// Empty when valid, else the problem ("target_rate must be a positive number, got 0"). The
// quantize functions throw Error("watersic: <problem>") for the same cases.
std::string check_watersic_options(const WaterSicOptions& options);

struct WaterSicState {
  int rows = 0, cols = 0;               // a, n
  std::vector<int32_t> codes;           // Z [rows, cols], original column order
  std::vector<double> alpha;            // [cols] step sizes c / L_jj, original order
  std::vector<double> gamma;            // [cols] LMMSE gains (rescaled ones when the rescaler ran)
  std::vector<double> column_scale;     // [cols] α_jγ_j as stored (fp16 values when fp16_side_info;
                                        //        0 for an all-zero code column)
  std::vector<double> row_scale;        // [rows] t_r / sqrt(w_r) as stored; empty = all 1
  std::vector<int32_t> perm;            // [cols] coding order: position k holds original column perm[k];
                                        //        empty = identity (sort_columns off)
  double c = 0;                         // global step in the whitened domain
  double damping = 0;                   // δ added to diag Σ (incl. a Cholesky retry)
  double entropy = 0;                   // H(Z), bits per code, all codes pooled
  double rate = 0;                      // achieved entropy rate: H + 16/a + 16/n (never the target)
  int code_width = 0;                   // ceil(log2(max Z - min Z + 1))
  double fixed_width_rate = 0;          // code_width + 16/a + 16/n
  double target_rate = 0;
  bool rate_met = false;                // |rate - target| <= rate_tolerance
  int search_rows = 0;                  // rows of the bisection subsample
  int passes = 0;                       // ZSIC passes run (search + refinement + final)
  double seconds = 0;                   // wall time of Hessian/importance + search + final pass

  // Exact accounting (§0.4, §5.6): codes at the entropy rate or packed fixed width, plus one
  // 16-bit number per column and per row. entropy_code_bits() = a·n·H(Z).
  double entropy_code_bits() const;
  uint64_t fixed_width_code_bits() const;
  uint64_t side_bits() const { return 16ull * static_cast<uint64_t>(rows + cols); }
  double entropy_bits() const { return entropy_code_bits() + static_cast<double>(side_bits()); }
  uint64_t fixed_width_bits() const { return fixed_width_code_bits() + side_bits(); }
  // Static per-head metadata not in the rate formula (ModelOpt does not charge it): n·ceil(log2 n).
  uint64_t perm_bits() const;
};

// K̂ [rows, cols] row-major.
std::vector<double> reconstruct(const WaterSicState& state);

// [lab] Streaming ZSIC (ALGORITHMS.md §5.4 end, §5.10; replay): perm, L, the steps α and the gains γ
// are fixed by one calibration pass, and each new row is coded on its own, the way the batch pass
// codes a row: y = X w_perm (X = L^{-1} Σ_p, i.e. y = w Σ L^{-T}, ModelOpt's Y), then for i = n-1..0
// z_i = rint(y_i / (α_i L_ii)), y_j -= α_iγ_i z_i L[i, j] (j < i); K̂[perm[i]] = z_i · α_iγ_i. The
// whitening, rounding and interference steps are the batch pass's own functions, so coding a
// calibration row reproduces its batch codes exactly.
// Fixed-width storage (lab decision): codes are stored at the calibration codes' width w, in
// [code_lo, code_lo + 2^w - 1] (the calibration range with the spare values split around it); a
// new code outside is clamped to the range, counted, and the clamped value is what the remaining
// columns' interference update uses (it is the value the decoder sees).
struct WaterSicCoder {
  int n = 0;
  int code_width = 0;                 // w = the calibration state's code_width
  int32_t code_lo = 0, code_hi = 0;   // representable codes
  bool sorted = false;                // a column permutation is stored (sort_columns)
  std::vector<int32_t> order;         // [n] coding position k -> original column
  std::vector<double> x;              // [n, n] L^{-1} Σ_p (coding order)
  std::vector<double> L;              // [n, n] Cholesky factor of Σ_p + δI (coding order)
  std::vector<double> step;           // [n] coding order: α_k L_kk, the rounding step
  std::vector<double> scale;          // [n] coding order: α_kγ_k as stored (0 for an all-zero column)
  std::vector<double> column_scale;   // [n] original order: the same, for decoding

  // Codes one row (original column order) into z (original order); returns the codes clamped.
  int code_row(const double* row, int32_t* z) const;
  // out[j] = z[j] · column_scale[j].
  void decode_row(const int32_t* z, double* out) const;
  // Stored once per head: 16 bits per column scale, the permutation (n·ceil(log2 n) when sorted,
  // as the dump path counts it) and two 16-bit numbers for code_lo and the width.
  uint64_t side_bits() const;
};

// Σ = Σ_g Q_gᵀQ_g [n, n] row-major, from `queries` (each [tokens, n] row-major), summed in double.
std::vector<double> query_gram(const std::vector<const float*>& queries, int tokens, int n);

// Attention mass received by each key row (§5.7), normalized to mean 1 and clipped.
// Causal (options.causal_importance) requires tokens == a: query i sees keys of its own sequence
// up to position i. Returns w [a].
std::vector<double> key_importance(const double* k, int a, int n, const std::vector<const float*>& queries,
                                   int tokens, const WaterSicOptions& options);

// One ZSIC pass at a fixed step c on all rows (no search): W [a, n] row-major, sigma [n, n].
// target_rate only sets the damping (§5.3); ignores sample_frac and kl_aware; runs the rescaler if
// n_rescaler_iters > 0.
// `coder` (optional) receives the streaming coder of the final pass (Error with kl_aware or the
// rescaler: their per-row factors need the whole matrix).
WaterSicState zsic_fixed_step(const double* w, int a, int n, const double* sigma, double c,
                              const WaterSicOptions& options, WaterSicCoder* coder = nullptr);

// Search c to options.target_rate and quantize W with Hessian sigma. `row_weight` (optional, [a]):
// importance w; rows are coded as sqrt(w_r)·W_r and the state's row_scale undoes it.
WaterSicState watersic_quantize(const double* w, int a, int n, const double* sigma, const WaterSicOptions& options,
                                const double* row_weight = nullptr, WaterSicCoder* coder = nullptr);

// Keys of one head with its queries: builds Σ (and the importance when kl_aware), then searches.
WaterSicState watersic_quantize_keys(const double* k, int a, int n, const std::vector<const float*>& queries,
                                     int tokens, const WaterSicOptions& options, WaterSicCoder* coder = nullptr);

// The same on a dump's (layer, KV head), picking query heads per options.queries.
// Throws Error when the dump has no queries.
WaterSicState watersic_quantize_key_head(const KvDump& dump, int layer, int kv_head, const WaterSicOptions& options);

// §5.10 V fallback [reconstructed: ModelOpt leaves V unquantized]: A = I, i.e. entropy-coded
// uniform rounding with step c (no damping, no permutation), LMMSE per-column gains if use_lmmse,
// c searched to the target rate like the keys; the same state and accounting.
WaterSicState watersic_quantize_values(const double* v, int a, int n, const WaterSicOptions& options,
                                       WaterSicCoder* coder = nullptr);

// The options a policy's "watersic" block asks for (ModelOpt's options when queries is same_index).
WaterSicOptions watersic_options_of(const WatersicPolicy& policy);

}  // namespace kvscope
