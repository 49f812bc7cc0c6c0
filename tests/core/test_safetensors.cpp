#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/tensor/safetensors.h"
#include "core/tensor/safetensors_writer.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

TEST_CASE("f16 and bf16 conversions round to nearest even") {
  // Exactly representable values survive.
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f /*min normal*/, 5.9604644775390625e-08f /*min subnormal*/})
    CHECK(f16_to_f32(f32_to_f16(f)) == f);
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  // 1 + 2^-11 lies exactly between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  CHECK(f32_to_f16(1.0f + 0.00048828125f) == 0x3c00);
  // 1 + 3*2^-11 lies between 1+2^-10 (odd) and 1+2^-9 (even): goes up to even.
  CHECK(f32_to_f16(1.0f + 3 * 0.00048828125f) == 0x3c02);
  CHECK(f32_to_f16(70000.0f) == 0x7c00);  // overflow to +inf
  CHECK(f32_to_f16(65519.0f) == 0x7bff);  // below the halfway point to 65536 stays finite
  CHECK(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(bf16_to_f32(f32_to_bf16(3.0f)) == 3.0f);
  // bf16 tie: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> even (1.0).
  CHECK(f32_to_bf16(1.0f + 0.00390625f) == 0x3f80);
}

TEST_CASE("safetensors write/read round trip for every dtype") {
  TempDir dir;
  std::string path = dir.path("rt.safetensors");
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -8.5f};
  std::vector<uint16_t> f16(6), bf16(6);
  convert_from_f32(DType::F16, f32.data(), 6, f16.data());
  convert_from_f32(DType::BF16, f32.data(), 6, bf16.data());
  std::vector<int8_t> i8 = {-128, -1, 0, 1, 127, 5};
  std::vector<uint8_t> u8 = {0, 1, 2, 3, 254, 255};
  std::vector<int32_t> i32 = {-100000, 0, 1, 2, 3, 100000};
  std::vector<int64_t> i64 = {-(int64_t(1) << 40), 0, 1, 2, 3, int64_t(1) << 40};
  write_safetensors(path,
                    {{"a", DType::F32, {2, 3}, f32.data()},
                     {"b", DType::F16, {6}, f16.data()},
                     {"c", DType::BF16, {3, 2}, bf16.data()},
                     {"d", DType::I8, {6}, i8.data()},
                     {"e", DType::U8, {6}, u8.data()},
                     {"f", DType::I32, {6}, i32.data()},
                     {"g", DType::I64, {1, 6}, i64.data()}},
                    {{"hello", "world"}});
  auto f = SafetensorsFile::open(path);
  CHECK(f->metadata().at("hello") == "world");
  CHECK(f->tensors().size() == 7);
  CHECK(f->read_f32("a", {2, 3}) == f32);
  CHECK(f->read_f32("b") == f32);
  CHECK(f->read_f32("c") == f32);
  CHECK(f->read_f32("d") == std::vector<float>{-128, -1, 0, 1, 127, 5});
  CHECK(f->read_f32("e") == std::vector<float>{0, 1, 2, 3, 254, 255});
  CHECK(f->read_f32("f")[0] == -100000.0f);
  CHECK(f->read_f32("g")[5] == float(int64_t(1) << 40));
  CHECK_THROWS_WITH(f->read_f32("a", {3, 2}), Catch::Contains("shape [2, 3], expected [3, 2]"));
  CHECK_THROWS_WITH(f->get("zzz"), Catch::Contains("'zzz' is missing"));
  // The data block is 8-byte aligned.
  CHECK(reinterpret_cast<uintptr_t>(f->data(f->get("a"))) % 8 == 0);
}

// Writes a raw safetensors file with the given JSON header and data bytes.
static void write_raw(const std::string& path, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream o(path, std::ios::binary);
  uint64_t n = claimed_len >= 0 ? uint64_t(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) o.put(char((n >> (8 * i)) & 0xff));
  o << header;
  for (size_t i = 0; i < data_bytes; ++i) o.put('\0');
}

TEST_CASE("safetensors rejects corrupt files with a message naming the file and the problem") {
  TempDir dir;
  std::string p = dir.path("bad.safetensors");
  auto expect_error = [&](const std::string& needle) {
    try {
      SafetensorsFile::open(p);
      FAIL("no error for " << needle);
    } catch (const Error& e) {
      std::string msg = e.what();
      CHECK_THAT(msg, Catch::StartsWith(p + ": "));
      CHECK_THAT(msg, Catch::Contains(needle));
    }
  };
  { std::ofstream o(p, std::ios::binary); o << "abc"; }
  expect_error("truncated");
  write_raw(p, "{}", 0, int64_t(1) << 40);
  expect_error("exceeds");
  write_raw(p, "{\"a\":{}}", 0, 100);
  expect_error("truncated: header length 100");
  write_raw(p, "{not json", 0);
  expect_error("not valid JSON");
  write_raw(p, "[1,2]", 0);
  expect_error("not a JSON object");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
  expect_error("run past the end");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  expect_error("needs 12 bytes but data_offsets span 8");
  write_raw(p, R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8);
  expect_error("unsupported dtype 'Q4'");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  expect_error("overlap");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
  expect_error("negative");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8);
  expect_error("reversed");
  write_raw(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8);
  expect_error("overflows");
  write_raw(p, R"({"__metadata__":{"x":1}})", 0);
  expect_error("__metadata__.x is not a string");
  CHECK_THROWS_WITH(SafetensorsFile::open(dir.path("missing.safetensors")), Catch::Contains("cannot open"));
}

TEST_CASE("write_safetensors leaves no partial file when the directory is not writable") {
  std::vector<float> x(4, 1.0f);
  CHECK_THROWS_WITH(write_safetensors("/nonexistent-dir/x.safetensors", {{"a", DType::F32, {4}, x.data()}}),
                    Catch::Contains("/nonexistent-dir/x.safetensors: cannot create"));
}

TEST_CASE("SafetensorsWriter: pieces at offsets give the same file as whole tensors; an incomplete file is refused") {
  TempDir dir;
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-1, -2};
  const std::vector<TensorDecl> decl = {{"a", DType::F32, {2, 3}}, {"b", DType::F32, {2}}};
  {
    SafetensorsWriter w(dir.path("whole.safetensors"), decl, {{"k", "v"}});
    w.write("a", a.data());
    w.write("b", b.data());
    w.finish();
  }
  {
    SafetensorsWriter w(dir.path("pieces.safetensors"), decl, {{"k", "v"}});
    w.write_at(1, 0, b.data(), 8);
    w.write_at(0, 12, a.data() + 3, 12);  // second row first
    w.write_at(0, 0, a.data(), 12);
    CHECK(w.file_bytes() == std::filesystem::file_size(dir.path("whole.safetensors")));
    w.finish();
  }
  CHECK(test::slurp(dir.path("whole.safetensors")) == test::slurp(dir.path("pieces.safetensors")));
  {
    SafetensorsWriter w(dir.path("short.safetensors"), decl);
    w.write_at(0, 0, a.data(), 24);
    CHECK_THROWS_WITH(w.write_at(1, 4, b.data(), 8), Catch::Contains("outside tensor 1"));
    w.write_at(1, 0, b.data(), 4);
    CHECK_THROWS_WITH(w.finish(), Catch::Contains("tensor 'b': 4 of 8 bytes written"));
  }
  CHECK_FALSE(std::filesystem::exists(dir.path("short.safetensors")));
  for (const auto& e : std::filesystem::directory_iterator(dir.dir))  // no temporary file left
    CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
}
