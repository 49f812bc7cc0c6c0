#include "core/model/kvsmooth_fold.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/model/checkpoint.h"
#include "core/quant/kvsmooth.h"
#include "core/tensor/safetensors.h"
#include "core/util/error.h"

namespace kvscope {

namespace fs = std::filesystem;

KvSmoothFold kvsmooth_calibrate(const Model& model, std::span<const int32_t> ids, const SmoothOptions& opts) {
  const ModelConfig& c = model.config();
  const int L = c.num_layers, H = c.num_kv_heads, D = c.head_dim;
  if (ids.empty()) fail(model.dir(), "kvsmooth: no calibration tokens");
  if (c.max_position_embeddings > 0 && static_cast<int>(ids.size()) > c.max_position_embeddings)
    fail(model.dir(), "kvsmooth: {} calibration tokens exceed max_position_embeddings {}", ids.size(), c.max_position_embeddings);
  if (D % 2) fail(model.dir(), "kvsmooth: head_dim {} is odd; RoPE pairs need an even head_dim", D);
  std::vector<bool> on = kvsmooth_layers(opts, L, model.dir() + ": kvsmooth");
  KvSmoothFold f;
  f.norm_fusion = c.qk_norm;
  f.max_k.assign(L, std::vector<float>(static_cast<size_t>(H) * D, 0.0f));
  // Min/max observer over batch and sequence: the running max |K| per (layer, head, channel).
  CaptureHook hook = [&](const LayerActivations& a) {
    auto& m = f.max_k[a.layer];
    for (int h = 0; h < H; ++h)
      for (int t = 0; t < a.n; ++t)
        for (int d = 0; d < D; ++d)
          m[h * D + d] = std::max(m[h * D + d], std::fabs(a.k[(static_cast<size_t>(h) * a.n + t) * D + d]));
  };
  ForwardOptions fo;
  fo.capture = &hook;
  auto cache = model.new_cache(static_cast<int>(ids.size()));
  for (size_t i = 0; i < ids.size(); i += 256) model.forward(ids.subspan(i, std::min<size_t>(256, ids.size() - i)), *cache, fo);

  f.scales.resize(L);
  for (int l = 0; l < L; ++l) {
    if (!on[l]) continue;
    // Pair maxima (rotate-half pairs j, j + D/2), raised to the smooth factor (§4.2).
    std::vector<float> s = kvsmooth_scales_from_max(f.max_k[l].data(), H, D, opts.factor, /*interleaved=*/false,
                                                    /*shared_over_heads=*/c.qk_norm);
    f.scales[l] = std::move(s);
  }
  return f;
}

void kvsmooth_write_checkpoint(const std::string& src_dir, const ModelConfig& c, const KvSmoothFold& fold,
                               const std::string& out_dir) {
  if (fs::exists(fs::path(out_dir) / "model.safetensors") || fs::exists(fs::path(out_dir) / "model.safetensors.index.json"))
    fail(out_dir, "already holds a model; choose an empty output folder");
  std::error_code ec;
  if (fs::weakly_canonical(src_dir, ec) == fs::weakly_canonical(out_dir, ec)) fail(out_dir, "is the source model folder");
  fs::create_directories(out_dir, ec);
  if (ec) fail(out_dir, "cannot create the output folder: {}", ec.message());
  Checkpoint ck = Checkpoint::open(src_dir);
  const int H = c.num_kv_heads, G = c.group(), D = c.head_dim;

  // Every tensor of the source, converted to f32, folded where needed, back to its dtype.
  std::vector<std::string> names;
  for (const auto& t : expected_tensors(c, ck.has_lm_head())) names.push_back(t.name);
  std::vector<std::vector<unsigned char>> bufs;
  std::vector<TensorView> views;
  bufs.reserve(names.size());
  for (const auto& name : names) {
    std::vector<int64_t> shape = ck.shape(name);
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> x(static_cast<size_t>(n));
    ck.read_f32(name, x.data());
    // "model.layers.{L}.self_attn.{q,k}_{proj,norm}.{weight,bias}"
    int layer = -1;
    char which = 0;
    bool is_norm = false;
    if (std::sscanf(name.c_str(), "model.layers.%d.self_attn.", &layer) == 1) {
      const std::string tail = name.substr(name.find("self_attn.") + 10);
      if (tail.rfind("q_proj.", 0) == 0) which = 'q';
      else if (tail.rfind("k_proj.", 0) == 0) which = 'k';
      else if (tail.rfind("q_norm.", 0) == 0) which = 'q', is_norm = true;
      else if (tail.rfind("k_norm.", 0) == 0) which = 'k', is_norm = true;
    }
    if (which && layer >= 0 && layer < c.num_layers && !fold.scales[layer].empty() && is_norm == fold.norm_fusion) {
      const auto& s = fold.scales[layer];
      const int64_t cols = shape.size() == 2 ? shape[1] : 1;  // weight rows, or bias/norm entries
      const int64_t rows = shape[0];
      for (int64_t r = 0; r < rows; ++r) {
        float sr;
        if (is_norm) sr = s[r];                                        // [head_dim], shared by heads
        else if (which == 'k') sr = s[r];                              // row h*D + c of k_proj
        else sr = s[(r / D) / G * D + r % D];                          // q head j = r / D reads KV head j / G
        const float mul = which == 'k' ? 1.0f / sr : sr;
        for (int64_t col = 0; col < cols; ++col) x[r * cols + col] *= mul;
      }
      (void)H;
    }
    DType dt = ck.dtype(name);
    if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16) fail(ck.file_of(name), "tensor '{}' has dtype {}, expected a float", name, dtype_name(dt));
    bufs.emplace_back(static_cast<size_t>(n) * dtype_size(dt));
    convert_from_f32(dt, x.data(), x.size(), bufs.back().data());
    views.push_back({name, dt, shape, bufs.back().data()});
  }
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), views, {{"format", "pt"}, {"kvsmooth", "folded by kvscope"}});
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                        "special_tokens_map.json", "tok512.bin", "tokens.tsv"}) {
    fs::path p = fs::path(src_dir) / f;
    if (fs::exists(p)) fs::copy_file(p, fs::path(out_dir) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) fail((fs::path(out_dir) / f).string(), "cannot copy: {}", ec.message());
  }
}

}  // namespace kvscope
