// Weights at their stored precision (memory-mapped BF16/F16, converted as each product reads
// them) and the streaming capture. References: the same weight values stored as F32 (so any
// difference is the stored-precision path, not rounding), the in-memory capture, hand-made
// position lists.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/dump/kv_dump.h"
#include "core/metrics/attention.h"
#include "core/model/capture.h"
#include "core/model/model.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;
namespace fs = std::filesystem;

namespace {

// Same values through the BF16/F16 and the F32 path: only summation order could differ.
constexpr float kSameValuesTol = 1e-5f;
// Batched prefill (sgemm) vs one token at a time (hand-written mat-vec) on the same weights.
constexpr float kPrefillVsDecodeTol = 1e-4f;

const std::vector<int32_t> kIds = {1, 403, 407, 261, 378, 30, 200, 17, 301, 99, 45, 12, 400, 3, 77, 256, 88, 19, 260, 5};

// Writes stories260K's weights into `out` as `dtype` (values rounded to `round_to` first).
void write_copy(const std::string& out, DType dtype, DType round_to) {
  const std::string src = test::models_dir() + "/stories260K";
  fs::create_directories(out);
  fs::copy_file(src + "/config.json", out + "/config.json", fs::copy_options::overwrite_existing);
  auto f = SafetensorsFile::open(src + "/model.safetensors");
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<TensorView> views;
  bufs.reserve(f->tensors().size());
  for (const auto& t : f->tensors()) {
    std::vector<float> v = f->read_f32(t.name);
    std::vector<unsigned char> r(v.size() * 2);
    if (round_to != DType::F32) {
      convert_from_f32(round_to, v.data(), v.size(), r.data());
      convert_to_f32(round_to, r.data(), v.size(), v.data());
    }
    bufs.emplace_back(v.size() * dtype_size(dtype));
    convert_from_f32(dtype, v.data(), v.size(), bufs.back().data());
    views.push_back({t.name, dtype, t.shape, bufs.back().data()});
  }
  write_safetensors(out + "/model.safetensors", views);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("BF16 and F16 checkpoints compute what the same values stored as F32 compute") {
  TempDir dir;
  for (DType dt : {DType::BF16, DType::F16}) {
    INFO(dtype_name(dt));
    write_copy(dir.path("low"), dt, dt);
    write_copy(dir.path("f32"), DType::F32, dt);
    auto low = Model::load(dir.path("low"));
    auto ref = Model::load(dir.path("f32"));
    CHECK(low->storage_dtype() == std::string(dtype_name(dt)));
    // Resident: the matrices as stored (2 bytes per weight), nothing converted kept.
    CHECK(low->resident_bytes() * 2 < ref->resident_bytes() + 64 * 1024);
    auto c1 = low->new_cache(), c2 = ref->new_cache();
    ForwardOptions all;
    all.all_logits = true;
    CHECK(max_abs_diff(low->forward(kIds, *c1, all), ref->forward(kIds, *c2, all)) <= kSameValuesTol);
    // Decode steps (mat-vec path) too.
    for (int32_t t : {5, 6, 7}) {
      const std::vector<int32_t> one{t};
      CHECK(max_abs_diff(low->forward(one, *c1), ref->forward(one, *c2)) <= kSameValuesTol);
    }
    CHECK(low->generate_greedy(kIds, 8) == ref->generate_greedy(kIds, 8));
  }
}

TEST_CASE("batched prefill and token-by-token decode give the same logits") {
  auto m = Model::load(test::models_dir() + "/tinystories-qwen2-4L");  // F16, q/k/v biases
  auto batched = m->new_cache(), stepped = m->new_cache();
  ForwardOptions all;
  all.all_logits = true;
  const std::vector<float> b = m->forward(kIds, *batched, all);
  const size_t V = static_cast<size_t>(m->config().vocab_size);
  for (size_t i = 0; i < kIds.size(); ++i) {
    const std::vector<float> s = m->forward(std::span<const int32_t>(&kIds[i], 1), *stepped);
    float d = 0;
    for (size_t j = 0; j < V; ++j) d = std::max(d, std::abs(s[j] - b[i * V + j]));
    INFO("position " << i);
    CHECK(d <= kPrefillVsDecodeTol);
  }
}

TEST_CASE("parse_layer_list reads ranges and lists and names bad ones") {
  CHECK(parse_layer_list("0-3,16", 20, "--layers") == std::vector<int>{0, 1, 2, 3, 16});
  CHECK(parse_layer_list("5,1,1", 8, "--layers") == std::vector<int>{1, 5});
  CHECK_THROWS_WITH(parse_layer_list("0-40", 32, "--layers"), Catch::Contains("--layers") && Catch::Contains("layer 40 does not exist"));
  CHECK_THROWS_WITH(parse_layer_list("3-1", 8, "--layers"), Catch::Contains("reversed"));
  CHECK_THROWS_WITH(parse_layer_list("a", 8, "--layers"), Catch::Contains("not a layer list"));
  CHECK_THROWS_WITH(parse_layer_list("1,", 8, "--layers"), Catch::Contains("not a layer list"));
}

TEST_CASE("capture_to_file streams what the in-memory capture holds") {
  TempDir dir;
  auto m = Model::load(test::models_dir() + "/stories260K");
  CaptureOptions co;
  co.chunk_tokens = 7;  // chunks that do not divide the 20 tokens
  const KvDump ref = capture_dump(*m, kIds, co);
  const std::string path = dir.path("d.safetensors");
  capture_to_file(*m, kIds, co, path, DType::F32);
  const KvDump d = load_dump(path);
  REQUIRE(d.shape.layers == ref.shape.layers);
  CHECK(d.meta.token_ids == ref.meta.token_ids);
  CHECK(d.meta.layer_ids.empty());
  CHECK(d.meta.q_positions.empty());
  for (int l = 0; l < d.shape.layers; ++l) {
    CHECK(d.layers[l].k == ref.layers[l].k);
    CHECK(d.layers[l].v == ref.layers[l].v);
    CHECK(d.layers[l].q == ref.layers[l].q);
    CHECK(d.layers[l].k_pre_rope == ref.layers[l].k_pre_rope);
    CHECK(d.layers[l].q_pre_rope == ref.layers[l].q_pre_rope);
  }

  SECTION("a subset of layers and query positions") {
    co.layers = {1, 3};
    co.q_positions = 5;
    co.with_pre_rope = false;
    capture_to_file(*m, kIds, co, path, DType::F32);
    const KvDump s = load_dump(path);
    REQUIRE(s.shape.layers == 2);
    CHECK(s.meta.layer_ids == std::vector<int>{1, 3});
    const std::vector<int> pos = sample_positions(static_cast<int>(kIds.size()), 5);
    CHECK(s.meta.q_positions == pos);
    CHECK_FALSE(s.has_k_pre_rope());
    const size_t D = static_cast<size_t>(s.shape.head_dim), T = kIds.size();
    for (int i = 0; i < 2; ++i) {
      const DumpLayer& a = s.layers[i];
      const DumpLayer& b = ref.layers[co.layers[i]];
      CHECK(a.k == b.k);
      CHECK(a.v == b.v);
      REQUIRE(a.q.size() == b.q.size());
      for (int h = 0; h < s.shape.q_heads; ++h)
        for (size_t t = 0; t < T; ++t) {
          const bool kept = std::count(pos.begin(), pos.end(), static_cast<int>(t)) > 0;
          for (size_t j = 0; j < D; ++j) {
            const size_t e = (h * T + t) * D + j;
            CHECK(a.q[e] == (kept ? b.q[e] : 0.f));
          }
        }
    }
    // The file holds only the kept query rows.
    auto f = SafetensorsFile::open(path);
    CHECK(f->get("layers.3.q").shape == std::vector<int64_t>{s.shape.q_heads, 5, static_cast<int64_t>(D)});
    CHECK(f->find("layers.0.k") == nullptr);
  }

  SECTION("a failed capture leaves no file behind") {
    const std::string bad = dir.path("bad.safetensors");
    co.progress = [](int done, int) {
      if (done >= 7) throw Error("stop");
    };
    CHECK_THROWS_WITH(capture_to_file(*m, kIds, co, bad, DType::F16), "stop");
    for (const auto& e : fs::directory_iterator(dir.dir)) CHECK(e.path().filename().string().rfind("bad", 0) != 0);
  }
}
