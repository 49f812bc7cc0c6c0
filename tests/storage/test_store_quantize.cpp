// End to end with the real quantizer: a synthetic dump on disk, quantize_dump, store, load back.
#include <catch2/catch.hpp>

#include "core/dump/kv_dump.h"
#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"
#include "core/synth/synth.h"
#include "core/util/content_hash.h"
#include "storage/export.h"
#include "storage/run_store.h"
#include "test_util.h"
#include "tests/storage/store_fixtures.h"

using namespace kvscope;

TEST_CASE("a quantize_dump report of a real dump round-trips, and its aggregates agree", "[storage][e2e]") {
  TempDir tmp;
  SynthOptions so;
  so.layers = 1;  // one layer: the per-layer export row must reproduce the report's totals
  so.kv_heads = 2;
  so.q_heads = 4;
  so.tokens = 192;
  so.planted = {{0, 1, 90.0f}};
  const std::string dump_path = tmp.path("synth.safetensors");
  save_dump(dump_path, make_synthetic_dump(so));
  QuantizeOptions qo;
  qo.attn_queries = 32;
  QuantizeReport report = quantize_dump(load_dump(dump_path), load_preset("uniform-2"), qo);
  report.dump_path = dump_path;
  REQUIRE(report.per_head.size() == 4);

  RunStore store(tmp.path("runs.sqlite"));
  const int64_t id = store.add_quantize_run(report, {.tags = {"e2e"}});
  const StoredRun run = store.load_run(id);
  test::require_same_report(report, run.report);
  CHECK(run.dump_hash == hash_file(dump_path));

  // The export recovers each head's energy from (mse, nmse); summed over the layer it must give
  // the quantizer's own totals, which were computed from the tensors.
  const Table layer = per_layer_table({run});
  REQUIRE(layer.rows.size() == 1);
  auto col = [&](const char* name) {
    return layer.rows[0][size_t(std::find(layer.header.begin(), layer.header.end(), name) - layer.header.begin())].real;
  };
  CHECK(col("k_bits_per_element") == Approx(report.k_bits_per_element).epsilon(1e-12));
  CHECK(col("v_bits_per_element") == Approx(report.v_bits_per_element).epsilon(1e-12));
  CHECK(col("k_nmse") == Approx(report.k_nmse).epsilon(1e-6));
  CHECK(col("v_nmse") == Approx(report.v_nmse).epsilon(1e-6));
  CHECK(col("attn_cos_min") == Approx(report.attn_cos_min).epsilon(1e-12));
}
