// llama.cpp KV block types against ggml's own output: shared/data/ggml_kv_types_golden.json holds
// 8 blocks of input, and for each type the packed bytes and dequantized floats that ggml's
// reference C functions produced (README beside it). Bytes and floats must be EQUAL, not close.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/quant/formats/ggml_blocks.h"
#include "core/tensor/dtype.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
using namespace kvscope::formats;
using nlohmann::json;

namespace {

std::string golden_path() {
  const char* env = std::getenv("KVSCOPE_TEST_DATA");
  const std::string dir = env && *env ? env : kvscope::test::models_dir() + "/../data";
  return dir + "/ggml_kv_types_golden.json";
}

json load_golden() {
  const std::string path = golden_path();
  INFO("golden file " << path);
  REQUIRE(std::filesystem::is_regular_file(path));  // missing file: the test fails, never skips
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::vector<uint8_t> from_hex(const std::string& s) {
  REQUIRE(s.size() % 2 == 0);
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

// The JSON prints floats with 9 significant digits, which round-trips every float exactly.
std::vector<float> floats(const json& a) {
  std::vector<float> v;
  for (const auto& x : a) v.push_back(static_cast<float>(x.get<double>()));
  return v;
}

}  // namespace

TEST_CASE("ggml block types: bytes and dequantized values equal ggml's reference functions", "[formats][ggml]") {
  const json g = load_golden();
  const std::vector<float> input = floats(g.at("input"));
  REQUIRE(g.at("block_size").get<int>() == kGgmlBlock);
  REQUIRE(input.size() == size_t(g.at("blocks").get<int>()) * kGgmlBlock);
  const size_t n = input.size();
  std::set<std::string> seen;
  for (const auto& t : g.at("types")) {
    const std::string name = t.at("type").get<std::string>();
    INFO("type " << name);
    GgmlType type;
    REQUIRE(parse_ggml_type(name, &type));
    seen.insert(name);
    CHECK(ggml_type_info(type).block_bytes == t.at("block_bytes").get<int>());
    const std::vector<uint8_t> want = from_hex(t.at("bytes_hex").get<std::string>());
    const std::vector<float> want_y = floats(t.at("dequantized"));
    REQUIRE(want.size() == ggml_row_bytes(type, n));
    REQUIRE(want_y.size() == n);

    std::vector<uint8_t> got(ggml_row_bytes(type, n));
    ggml_quantize_row(type, input.data(), n, got.data());
    for (size_t b = 0; b < got.size(); ++b) {
      INFO("byte " << b << " (block " << b / ggml_type_info(type).block_bytes << ")");
      CHECK(int(got[b]) == int(want[b]));
    }
    // Dequantize ggml's bytes (the decoder on its own) and ours; both must equal ggml's floats bit for bit.
    std::vector<float> y_golden(n), y_ours(n);
    ggml_dequantize_row(type, want.data(), n, y_golden.data());
    ggml_dequantize_row(type, got.data(), n, y_ours.data());
    int mismatches = 0;
    for (size_t i = 0; i < n; ++i) mismatches += (y_golden[i] != want_y[i]) + (y_ours[i] != want_y[i]);
    CHECK(mismatches == 0);
  }
  CHECK(seen == std::set<std::string>{"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"});
}

TEST_CASE("ggml block types: hand-worked q4_0 and q8_0 blocks", "[formats][ggml]") {
  // x = -8, -7, ..., 7, then 16 zeros: max = -8, d = 1, q = x + 8 (0..15), zeros -> 8.
  std::vector<float> x(32, 0.0f);
  for (int j = 0; j < 16; ++j) x[j] = float(j - 8);
  std::vector<uint8_t> b(18);
  ggml_quantize_row(GgmlType::Q4_0, x.data(), 32, b.data());
  CHECK(f16_to_f32(uint16_t(b[0] | (b[1] << 8))) == 1.0f);
  for (int j = 0; j < 16; ++j) CHECK(int(b[2 + j]) == (j | (8 << 4)));
  std::vector<float> y(32);
  ggml_dequantize_row(GgmlType::Q4_0, b.data(), 32, y.data());
  CHECK(y == x);
  // q8_0: amax 127 -> d = 1 exactly; 2.5 rounds away from zero (roundf) to 3, -0.5 to -1.
  x.assign(32, 0.0f);
  x[0] = 127, x[1] = 2.5f, x[2] = -0.5f;
  std::vector<uint8_t> c(34);
  ggml_quantize_row(GgmlType::Q8_0, x.data(), 32, c.data());
  CHECK(int(int8_t(c[2])) == 127);
  CHECK(int(int8_t(c[3])) == 3);
  CHECK(int(int8_t(c[4])) == -1);
}

TEST_CASE("ggml block types: bits per element and a row that is not whole blocks", "[formats][ggml]") {
  CHECK(ggml_bits_per_element(GgmlType::Q8_0) == 8.5);
  CHECK(ggml_bits_per_element(GgmlType::Q4_0) == 4.5);
  CHECK(ggml_bits_per_element(GgmlType::Q4_1) == 5.0);
  CHECK(ggml_bits_per_element(GgmlType::Q5_0) == 5.5);
  CHECK(ggml_bits_per_element(GgmlType::Q5_1) == 6.0);
  CHECK(ggml_bits_per_element(GgmlType::IQ4_NL) == 4.5);
  std::vector<float> x(48, 1.0f);
  std::vector<uint8_t> out(64);
  CHECK_THROWS_AS(ggml_quantize_row(GgmlType::Q4_0, x.data(), 48, out.data()), Error);
  GgmlType t;
  CHECK_FALSE(parse_ggml_type("q4_k", &t));
}
