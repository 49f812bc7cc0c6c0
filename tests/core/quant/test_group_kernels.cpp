// Streaming group kernels (core/quant/group_kernels.h): reading F16 / BF16 / F32 matrices, they
// must give exactly what quantize_tensor_reference gives on the same values converted to f32
// (codes, scales, zero points, kept rows), the reconstruction quantize_tensor returns, and the
// error sums of one ErrorSums::add over the whole matrix.
#include <catch2/catch.hpp>
#include <cstring>
#include <random>

#include "core/quant/group_kernels.h"
#include "core/quant/quantized_tensor.h"

using namespace kvscope;

namespace {

// Gaussian values with the features that break group code: an exact zero, a constant group, an
// outlier, a tiny (f16-subnormal) value, a negative zero.
std::vector<float> awkward(int rows, int cols, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0, 2.0f);
  std::vector<float> v(static_cast<size_t>(rows) * cols);
  for (auto& x : v) x = d(g);
  v[5] = 0;
  v[7] = -0.0f;
  v[9] = 3e-6f;
  for (int c = 0; c < cols; ++c) v[static_cast<size_t>(rows / 2) * cols + c] = 1.25f;
  v[123] = 40.0f;
  return v;
}

// The matrix stored as `t` (bytes) and the exact f32 values of what was stored.
struct Stored {
  std::vector<unsigned char> bytes;
  std::vector<float> values;
};

Stored store(const std::vector<float>& v, DType t, size_t misalign = 0) {
  Stored s;
  s.bytes.resize(misalign + v.size() * dtype_size(t));
  convert_from_f32(t, v.data(), v.size(), s.bytes.data() + misalign);
  s.values.resize(v.size());
  convert_to_f32(t, s.bytes.data() + misalign, v.size(), s.values.data());
  return s;
}

bool same_sums(const ErrorSums& a, const ErrorSums& b) {
  return a.err2 == b.err2 && a.ref2 == b.ref2 && a.hat2 == b.hat2 && a.dot == b.dot && a.max_abs == b.max_abs && a.n == b.n;
}

// Everything the kernel returns against quantize_tensor_reference / quantize_tensor / ErrorSums.
void check_same_isa(const StoredMatrix& m, const std::vector<float>& values, const TensorQuant& q, int head, int tail) {
  ErrorSums got_err;
  std::vector<float> got_recon(values.size()), want_recon(values.size());
  QuantizedTensor got = quantize_stored(m, q, head, tail, &got_err, got_recon.data());
  QuantizedTensor ref = quantize_tensor_reference(values.data(), m.rows, m.cols, q, head, tail);
  quantize_tensor(values.data(), m.rows, m.cols, q, head, tail, want_recon.data());
  REQUIRE(got.codes == ref.codes);
  REQUIRE(got.scales == ref.scales);
  REQUIRE(got.zeros == ref.zeros);
  REQUIRE(got.fp16_rows == ref.fp16_rows);
  REQUIRE(got.group_len == ref.group_len);
  REQUIRE(got.total_bits() == ref.total_bits());
  REQUIRE(got_recon == want_recon);
  ErrorSums want_err;
  want_err.add(values.data(), want_recon.data(), values.size());
  REQUIRE(same_sums(got_err, want_err));
  // Without a reconstruction buffer: same codes and sums.
  ErrorSums err2;
  QuantizedTensor again = quantize_stored(m, q, head, tail, &err2);
  REQUIRE(again.codes == got.codes);
  REQUIRE(same_sums(err2, want_err));
  // Asking for the originals in f32 too: exactly the stored values, and nothing else changes.
  ErrorSums err3;
  std::vector<float> orig(values.size(), -7.0f);
  QuantizedTensor third = quantize_stored(m, q, head, tail, &err3, nullptr, orig.data());
  REQUIRE(third.codes == got.codes);
  REQUIRE(third.scales == got.scales);
  REQUIRE(same_sums(err3, want_err));
  REQUIRE(std::memcmp(orig.data(), values.data(), values.size() * sizeof(float)) == 0);
}

// The instruction sets this CPU runs (the kernels' loops exist once per set, all must agree).
std::vector<KernelIsa> isas() {
  std::vector<KernelIsa> out;
  for (KernelIsa i : {KernelIsa::Avx512, KernelIsa::Avx2, KernelIsa::Baseline})
    if (set_group_kernel_isa(i)) out.push_back(i);
  set_group_kernel_isa(KernelIsa::Auto);
  return out;
}

// check_same_isa with the loops of every instruction set the CPU has.
void check_same(const StoredMatrix& m, const std::vector<float>& values, const TensorQuant& q, int head, int tail) {
  static const std::vector<KernelIsa> all = isas();
  for (KernelIsa isa : all) {
    REQUIRE(set_group_kernel_isa(isa));
    INFO("kernel loops " << group_kernel_isa_name());
    check_same_isa(m, values, q, head, tail);
  }
  set_group_kernel_isa(KernelIsa::Auto);
}

}  // namespace

TEST_CASE("group kernels equal the reference for every configuration and stored dtype", "[group_kernels]") {
  // C = 40: C % 16 = 8 and R % 7, R % 32 leave ragged last groups (the general loops);
  // C = 64: whole 16-element chunks, groups of 16 / 32 / 64 tile the rows (the one-pass loops).
  const int R = 150;
  const int C = GENERATE(40, 64);
  const std::vector<float> raw = awkward(R, C, 9);
  const DType stored_types[] = {DType::F16, DType::BF16, DType::F32};
  const DType scale_types[] = {DType::F16, DType::BF16, DType::F32};
  for (DType st : stored_types) {
    const Stored s = store(raw, st);
    const StoredMatrix m{s.bytes.data(), st, R, C};
    for (int bits = 1; bits <= 8; ++bits)
      for (Axis axis : {Axis::Token, Axis::Channel, Axis::Head})
        for (int group : {0, 7, 16, 32, 48})
          for (int mode = 0; mode < 4; ++mode) {
            TensorQuant q;
            q.bits = bits;
            q.axis = axis;
            q.group_size = group;
            q.symmetric = mode >= 2;
            if (q.symmetric && bits < 2) continue;
            q.integer_zero_point = mode == 1;
            q.inverse_scale = mode == 3;
            q.scale_dtype = scale_types[(bits + mode) % 3];
            q.clip_ratio = bits == 4 ? 0.9 : 1.0;
            q.clip_search = (bits == 3 && group == 7) || (bits == 5 && group == 0);  // the latter: whole-axis fallback
            q.clip_step = 0.05;
            for (auto [head, tail] : {std::pair{0, 0}, std::pair{5, 13}, std::pair{0, 128}}) {
              INFO("cols " << C << " stored " << dtype_name(st) << " bits " << bits << " axis " << int(axis) << " group " << group
                             << " mode " << mode << " fp " << head << "/" << tail);
              check_same(m, s.values, q, head, tail);
            }
          }
  }
}

TEST_CASE("group kernels: long groups (two passes), full precision, unaligned f32, no rows", "[group_kernels]") {
  const int R = 1700;  // 68000 / 217600 elements: whole-axis groups take the range pass + encoding pass
  const int C = GENERATE(40, 128);
  const std::vector<float> raw = awkward(R, C, 3);
  const Stored s = store(raw, DType::F16);
  const StoredMatrix m{s.bytes.data(), DType::F16, R, C};
  for (Axis axis : {Axis::Channel, Axis::Head})
    for (int mode = 0; mode < 4; ++mode) {
      TensorQuant q;
      q.bits = 3 + mode;
      q.axis = axis;
      q.symmetric = mode >= 2;
      q.integer_zero_point = mode == 1;
      q.inverse_scale = mode == 3;
      q.clip_ratio = mode == 2 ? 0.8 : 1.0;
      INFO("axis " << int(axis) << " mode " << mode);
      check_same(m, s.values, q, 3, 100);
    }
  TensorQuant fp;
  fp.full_precision = true;
  check_same(m, s.values, fp, 0, 0);
  TensorQuant kivi;
  kivi.bits = 2;
  kivi.axis = Axis::Channel;
  kivi.group_size = 32;
  check_same(m, s.values, kivi, 0, R);  // every row kept

  const Stored u = store(raw, DType::F32, 2);  // f32 data at an odd address is copied, not cast
  check_same(StoredMatrix{u.bytes.data() + 2, DType::F32, R, C}, u.values, kivi, 0, 100);
}

TEST_CASE("group kernels over many jobs keep job order; bad input is an error", "[group_kernels]") {
  const std::vector<float> raw = awkward(64, 32, 4);
  const Stored s = store(raw, DType::BF16);
  std::vector<StoredJob> jobs;
  for (int bits = 2; bits <= 8; ++bits) {
    StoredJob j;
    j.x = {s.bytes.data(), DType::BF16, 64, 32};
    j.spec.bits = bits;
    j.spec.group_size = 16;
    j.fp_tail = bits;
    jobs.push_back(j);
  }
  auto res = quantize_stored_all(jobs);
  REQUIRE(res.size() == jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    auto one = quantize_tensor(s.values.data(), 64, 32, jobs[i].spec, 0, jobs[i].fp_tail);
    CHECK(res[i].q.codes == one.codes);
    CHECK(res[i].q.spec.bits == jobs[i].spec.bits);
  }
  TensorQuant bad;
  bad.bits = 9;
  CHECK_THROWS_WITH(quantize_stored(jobs[0].x, bad), Catch::Contains("bits must be"));
  CHECK_THROWS_WITH(quantize_stored(StoredMatrix{s.bytes.data(), DType::I32, 8, 8}, jobs[0].spec), Catch::Contains("F16, BF16 or F32"));
  CHECK_THROWS_WITH(quantize_stored(jobs[0].x, jobs[0].spec, 60, 10), Catch::Contains("full-precision row counts"));
}

#include "core/tensor/dtype_branchless.h"

TEST_CASE("branch-free f16 / bf16 rounding of scales equals the scalar conversions", "[group_kernels]") {
  // Every 251st f32 bit pattern (17 M values: every exponent, both signs, NaN payloads, Inf,
  // subnormals) plus the boundaries of the f16 ranges.
  auto check = [](uint32_t u) {
    const float f = f32_from_bits(u);
    const float want = round_to_f16(f), got = round_f16_value(f);
    if (f32_bits(want) != f32_bits(got)) FAIL("round_f16_value " << std::hex << u);
    if (f32_to_f16(f) != f16_bits_of(f)) FAIL("f16_bits_of " << std::hex << u);
    const float wb = bf16_to_f32(f32_to_bf16(f)), gb = round_bf16_value(f);
    if (f32_bits(wb) != f32_bits(gb)) FAIL("round_bf16_value " << std::hex << u);
  };
  for (uint64_t u = 0; u <= 0xffffffffull; u += 251) check(static_cast<uint32_t>(u));
  for (uint32_t edge : {0x38800000u, 0x387fffffu, 0x477ff000u, 0x477fefffu, 0x7f800000u, 0x7f800001u, 0x7fffffffu,
                        0x33000000u, 0x33000001u, 0x32ffffffu, 0x00000001u, 0x80000000u})
    for (uint32_t sign : {0u, 0x80000000u}) check(edge | sign);
}
