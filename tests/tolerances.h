#pragma once
// Named relative tolerances for Approx(...).epsilon(...): each says why the two numbers compared
// may differ, so a loose bound is never a guess. Add a name here rather than an inline literal.
namespace kvscope::test::tol {

// A value stored as IEEE half (fp16: 10-bit mantissa, relative rounding up to 2^-11 = 4.9e-4)
// compared with the exact value it encodes.
inline constexpr double kFp16 = 1e-3;

// A golden value printed to 5 significant digits (docs' §8 tables, golden.json) recomputed with
// float32 arithmetic: the print's rounding (5e-5) plus float32 sums over the tensor.
inline constexpr double kPrinted = 1e-3;

// Hand-worked undamped values vs a solver that damps its Gram matrix by 1e-4 of the mean diagonal
// (ModelOpt's damp_pct): the factors move by about 1e-4 relative.
inline constexpr double kDamped = 1e-3;

// Mean KL of nearly equal attention rows: a small difference of logs, which the float32 fast path
// keeps to about 3 digits against the float64 reference.
inline constexpr double kKlFloat = 1e-3;

}  // namespace kvscope::test::tol
