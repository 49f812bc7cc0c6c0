// Head drill-down numbers on a hand-built 1-layer dump.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/metrics/head_profile.h"
#include "core/util/error.h"

using namespace kvscope;

namespace {
// 1 layer, 2 KV heads, 3 tokens, 4 channels. Head 1 has channel 2 at magnitude 50.
KvDump tiny_dump() {
  KvDump d;
  d.shape = {1, 2, 0, 4, 3};
  d.layers.resize(1);
  auto& L = d.layers[0];
  L.k.assign(2 * 3 * 4, 1.0f);
  L.v.assign(2 * 3 * 4, 0.5f);
  float* k1 = L.k.data() + 12;
  k1[0 * 4 + 2] = -50.0f;  // token 0, channel 2
  k1[2 * 4 + 1] = 3.0f;    // token 2, channel 1
  L.k_pre_rope = L.k;
  L.k_pre_rope[12 + 0 * 4 + 2] = 7.0f;
  return d;
}
}  // namespace

TEST_CASE("channel maxima, pre-RoPE maxima and outlier channels") {
  KvDump d = tiny_dump();
  HeadProfile p = profile_head(d, 0, 1, 'k', nullptr);
  CHECK(p.channel_max_abs == std::vector<float>{1, 3, 50, 1});
  CHECK(p.channel_max_abs_pre_rope == std::vector<float>{1, 3, 7, 1});
  CHECK(p.token_error.empty());
  // median of {1, 1, 3, 50} = 2; ratio 4 -> >= 8: channel 2 only; ratio 1.5 -> >= 3: channels 2, 1.
  CHECK(p.outlier_channels == std::vector<int>{2});
  CHECK(outlier_channels(p.channel_max_abs, 1.5) == std::vector<int>{2, 1});
  HeadProfile v = profile_head(d, 0, 0, 'v', nullptr);
  CHECK(v.channel_max_abs_pre_rope.empty());
  CHECK(v.outlier_channels.empty());
}

TEST_CASE("per-token relative error") {
  KvDump d = tiny_dump();
  std::vector<float> deq(d.k(0, 0), d.k(0, 0) + 12);
  deq[1 * 4 + 0] = 0.0f;   // token 1: err 1 over ||x||^2 = 4 -> 0.25
  deq[2 * 4 + 3] = 3.0f;   // token 2: err 4 over 4 -> 1
  HeadProfile p = profile_head(d, 0, 0, 'k', deq.data());
  REQUIRE(p.token_error.size() == 3);
  CHECK(p.token_error[0] == 0.0f);
  CHECK(p.token_error[1] == Approx(0.25));
  CHECK(p.token_error[2] == Approx(1.0));
}

TEST_CASE("out-of-range heads are an error, not a crash") {
  KvDump d = tiny_dump();
  CHECK_THROWS_AS(profile_head(d, 1, 0, 'k', nullptr), Error);
  CHECK_THROWS_AS(profile_head(d, 0, 2, 'k', nullptr), Error);
  CHECK_THROWS_AS(profile_head(d, 0, 0, 'q', nullptr), Error);
}
