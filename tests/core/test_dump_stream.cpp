// Layer-at-a-time dumps: the streaming writer (synth, save_dump) gives the bytes the whole-dump
// path gave, and the streamed reader hands out views holding exactly what load_dump loads.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/dump/dump_reader.h"
#include "core/dump/dump_writer.h"
#include "core/dump/kv_dump.h"
#include "core/quant/group_kernels.h"
#include "core/synth/synth.h"
#include "core/util/error.h"
#include "test_util.h"

using namespace kvscope;

namespace {

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

SynthOptions small_synth() {
  SynthOptions o;
  o.layers = 3;
  o.kv_heads = 2;
  o.q_heads = 6;
  o.head_dim = 16;
  o.tokens = 40;
  o.q_pre_rope = true;
  o.planted = {{1, 0, 50.0f}};
  return o;
}

std::vector<float> as_f32(const StoredMatrix& m) {
  std::vector<float> out(m.elems());
  stored_to_f32(m.dtype, m.data, out.size(), out.data());
  return out;
}

}  // namespace

TEST_CASE("synth written layer by layer: the bytes of save_dump(make_synthetic_dump)", "[dump_stream]") {
  TempDir tmp;
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    for (bool queries : {true, false}) {
      SynthOptions o = small_synth();
      o.queries = queries;
      const std::string whole = tmp.path("whole.safetensors"), streamed = tmp.path("streamed.safetensors");
      save_dump(whole, make_synthetic_dump(o), dt);
      write_synthetic_dump(streamed, o, dt);
      INFO("dtype " << dtype_name(dt) << " queries " << queries);
      const std::string a = bytes_of(whole), b = bytes_of(streamed);
      REQUIRE(a.size() > 40u * 16 * 2 * 2 * 3);
      CHECK(a == b);
    }
  }
  CHECK(std::distance(std::filesystem::directory_iterator(tmp.dir), {}) == 2);  // no temporary files left
}

TEST_CASE("streamed reader: views hold what load_dump loads; load_layer equals it", "[dump_stream]") {
  TempDir tmp;
  const std::string path = tmp.path("d.safetensors");
  KvDump d = make_synthetic_dump(small_synth());
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    save_dump(path, d, dt);
    const KvDump whole = load_dump(path);
    DumpReader r(path);
    CHECK(r.shape().layers == 3);
    CHECK(r.shape().q_heads == 6);
    CHECK(r.meta().model_id == whole.meta.model_id);
    CHECK(r.meta().extra == whole.meta.extra);
    CHECK(r.has_q());
    CHECK(r.has_k_pre_rope());
    const size_t he = whole.head_elems();
    for (int l = 0; l < 3; ++l) {
      r.check_intact(l);
      for (int h = 0; h < 2; ++h) {
        const StoredMatrix k = r.k(l, h);
        CHECK(k.dtype == dt);
        CHECK(k.rows == 40);
        CHECK(k.cols == 16);
        CHECK(as_f32(k) == std::vector<float>(whole.k(l, h), whole.k(l, h) + he));
        // A file's views can be read with pread too (what the kernels and query rows do).
        REQUIRE(k.source != nullptr);
        std::vector<unsigned char> buf;
        const StoredMatrix staged = stage(k, buf);
        CHECK(staged.source == nullptr);
        CHECK(staged.rows == 40);
        CHECK(as_f32(staged) == as_f32(k));
        std::vector<float> row(16);
        row_to_f32(r.q(l, 5), 7, row.data());
        CHECK(row == std::vector<float>(whole.q(l, 5) + 7 * 16, whole.q(l, 5) + 8 * 16));
        CHECK(as_f32(r.v(l, h)) == std::vector<float>(whole.v(l, h), whole.v(l, h) + he));
        const float* kp = whole.layers[l].k_pre_rope.data() + h * he;
        CHECK(as_f32(r.k_pre_rope(l, h)) == std::vector<float>(kp, kp + he));
      }
      for (int h = 0; h < 6; ++h) CHECK(as_f32(r.q(l, h)) == std::vector<float>(whole.q(l, h), whole.q(l, h) + he));
      r.release_layer(l);  // pages leave the resident set; the views read them again
      CHECK(as_f32(r.v(l, 1)) == std::vector<float>(whole.v(l, 1), whole.v(l, 1) + he));
      const DumpLayer L = r.load_layer(l);
      CHECK(L.k == whole.layers[l].k);
      CHECK(L.q_pre_rope == whole.layers[l].q_pre_rope);
    }
    CHECK_THROWS_WITH(r.k(3, 0), Catch::Contains(path) && Catch::Contains("layer 3 out of range"));
    CHECK_THROWS_WITH(r.q(0, 6), Catch::Contains(path) && Catch::Contains("head 6 out of range"));
  }
  DumpReader no_q(path, {.require_q = false, .load_q = false, .load_pre_rope = false});
  CHECK(!no_q.has_q());
  CHECK_THROWS_WITH(no_q.q(0, 0), Catch::Contains("tensor 'layers.0.q' is missing"));
  CHECK_THROWS_WITH(no_q.k_pre_rope(0, 0), Catch::Contains("layers.0.k_pre_rope"));
}

TEST_CASE("streamed reader: same errors as load_dump; a truncated file is an error naming it", "[dump_stream]") {
  TempDir tmp;
  const std::string path = tmp.path("d.safetensors");
  save_dump(path, make_synthetic_dump(small_synth()));
  CHECK_THROWS_WITH(DumpReader(tmp.path("nope.safetensors")), Catch::Contains("nope.safetensors"));
  DumpReader r(path);
  REQUIRE(truncate(path.c_str(), 4096) == 0);
  CHECK_THROWS_WITH(r.check_intact(2), Catch::Contains(path) && Catch::Contains("shrank to 4096 bytes"));
  CHECK_THROWS_WITH(r.load_layer(2), Catch::Contains(path) && Catch::Contains("truncated by another process"));
  // Views read with pread (the kernels, query rows): the same error, not SIGBUS.
  const StoredMatrix k = r.k(2, 1);
  CHECK_THROWS_WITH(quantize_stored(k, TensorQuant{}), Catch::Contains(path) && Catch::Contains("shrank to 4096 bytes"));
  std::vector<float> row(16);
  CHECK_THROWS_WITH(row_to_f32(r.q(2, 0), 39, row.data()), Catch::Contains(path) && Catch::Contains("shrank to 4096 bytes"));
  CHECK_THROWS_WITH(DumpReader(path), Catch::Contains(path));
}

TEST_CASE("tensors of 1 MB and more are read with pread a chunk at a time: the mapping's values", "[dump_stream]") {
  TempDir tmp;
  const std::string path = tmp.path("big.safetensors");
  SynthOptions o = small_synth();
  o.layers = 2;
  o.tokens = 2500;  // K and V of a layer: 2 heads x 2500 x 16 x 4 bytes = 320 KB; Q (6 heads) 960 KB
  o.head_dim = 64;  // ... with head_dim 64: 1.28 MB and 3.84 MB, several 1 MB chunks and a ragged last one
  save_dump(path, make_synthetic_dump(o), DType::F32);
  DumpReader r(path);
  const DumpLayer L = r.load_layer(1);
  const size_t he = static_cast<size_t>(o.tokens) * o.head_dim;
  for (int h = 0; h < 2; ++h) {
    CHECK(std::vector<float>(L.k.begin() + h * he, L.k.begin() + (h + 1) * he) == as_f32(r.k(1, h)));
    CHECK(std::vector<float>(L.v.begin() + h * he, L.v.begin() + (h + 1) * he) == as_f32(r.v(1, h)));
  }
  CHECK(std::vector<float>(L.q.begin() + 5 * he, L.q.begin() + 6 * he) == as_f32(r.q(1, 5)));
  REQUIRE(truncate(path.c_str(), 8 << 20) == 0);  // layer 1 is gone
  CHECK_THROWS_WITH(r.load_layer(1), Catch::Contains(path) && Catch::Contains("shrank to 8388608 bytes"));
}

TEST_CASE("dump writer: layers in order, all of them, or no file", "[dump_stream]") {
  TempDir tmp;
  const std::string path = tmp.path("w.safetensors");
  KvDump d = make_synthetic_dump(small_synth());
  const std::vector<DumpLayerTensors> layout(3, DumpLayerTensors{true, true, true});
  {
    DumpWriter w(path, d.shape, d.meta, DType::F16, layout);
    CHECK_THROWS_WITH(w.write_layer(1, d.layers[1]), Catch::Contains(path) && Catch::Contains("out of order"));
    w.write_layer(0, d.layers[0]);
    CHECK_THROWS_WITH(w.finish(), Catch::Contains("only 1 of 3 layers"));
  }  // abandoned: its temporary file goes
  CHECK(std::filesystem::is_empty(tmp.dir));
  DumpLayer short_layer = d.layers[0];
  short_layer.v.pop_back();
  DumpWriter w(path, d.shape, d.meta, DType::F16, layout);
  CHECK_THROWS_WITH(w.write_layer(0, short_layer), Catch::Contains("layer 0: v has"));
  CHECK_THROWS_WITH(DumpWriter(path, d.shape, d.meta, DType::I8, layout), Catch::Contains("F16, BF16 or F32"));
}
