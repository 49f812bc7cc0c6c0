#include "app/gui/dump_source.h"

#include <algorithm>
#include <cstring>

#include "core/util/error.h"

namespace kvscope::gui {

std::shared_ptr<const DumpSource> DumpSource::open_file(const std::string& path) {
  auto reader = std::make_unique<DumpReader>(path);  // validates names, shapes, metadata
  std::shared_ptr<DumpSource> s(new DumpSource());
  s->header_.shape = reader->shape();
  s->header_.meta = reader->meta();
  try {
    // Streamed views need F16 / BF16 / F32 tensors; a file stored otherwise (an older or foreign
    // dump) is loaded into memory in f32 instead, as before.
    (void)reader->k(0, 0);
    (void)reader->v(0, 0);
  } catch (const Error&) {
    s->mem_ = std::make_shared<const KvDump>(load_dump(path));
    return s;
  }
  s->reader_ = std::move(reader);
  return s;
}

std::shared_ptr<const DumpSource> DumpSource::in_memory(std::shared_ptr<const KvDump> dump) {
  if (!dump) throw Error("dump: no dump");
  std::shared_ptr<DumpSource> s(new DumpSource());
  s->header_.shape = dump->shape;
  s->header_.meta = dump->meta;
  s->mem_ = std::move(dump);
  return s;
}

bool DumpSource::has_q() const { return reader_ ? reader_->has_q() : mem_->has_q(); }

StoredMatrix DumpSource::slice(int l, int h, char kind) const {
  if (reader_) return kind == 'k' ? reader_->k(l, h) : reader_->v(l, h);
  const DumpShape& s = shape();
  if (l < 0 || l >= s.layers || h < 0 || h >= s.kv_heads) fail("dump", "no head (layer {}, head {})", l, h);
  return {kind == 'k' ? mem_->k(l, h) : mem_->v(l, h), DType::F32, s.tokens, s.head_dim};
}

void DumpSource::read_q_rows(int l, int qh, const std::vector<int>& positions, float* dst) const {
  const size_t D = static_cast<size_t>(shape().head_dim);
  if (!reader_) {
    const float* q = mem_->q(l, qh);  // load_dump spread stored q_positions to every position
    for (int p : positions) std::memcpy(dst + p * D, q + p * D, D * sizeof(float));
    return;
  }
  if (!meta().q_positions.empty()) {  // only those rows are stored: the layer in f32 spreads them
    const DumpLayer layer = reader_->load_layer(l);
    const float* q = layer.q.data() + static_cast<size_t>(qh) * shape().tokens * D;
    for (int p : positions) std::memcpy(dst + p * D, q + p * D, D * sizeof(float));
    return;
  }
  const StoredMatrix m = reader_->q(l, qh);
  for (int p : positions) row_to_f32(m, p, dst + p * D);
}

HeadProfile DumpSource::profile(int l, int h, char kind, const float* dequantized, const RotationSpec* rotation) const {
  // profile_head on a one-layer, one-head dump holding just this head (and its pre-RoPE keys).
  const DumpShape& s = shape();
  if (l < 0 || l >= s.layers || h < 0 || h >= s.kv_heads || (kind != 'k' && kind != 'v'))
    fail("head profile", "no head (layer {}, head {}, kind {}) in a dump of {} layers x {} KV heads", l, h, kind, s.layers,
         s.kv_heads);
  KvDump one;
  one.shape = s;
  one.shape.layers = 1;
  one.shape.kv_heads = 1;
  one.shape.q_heads = 0;
  one.meta = meta();
  one.layers.resize(1);
  const size_t n = static_cast<size_t>(s.tokens) * s.head_dim;
  std::vector<float>& x = kind == 'k' ? one.layers[0].k : one.layers[0].v;
  x.resize(n);
  const StoredMatrix m = slice(l, h, kind);
  stored_to_f32(m.dtype, m.data, n, x.data());
  if (kind == 'k') {
    if (reader_ && reader_->has_k_pre_rope()) {
      const StoredMatrix pre = reader_->k_pre_rope(l, h);
      one.layers[0].k_pre_rope.resize(n);
      stored_to_f32(pre.dtype, pre.data, n, one.layers[0].k_pre_rope.data());
    } else if (!reader_ && mem_->has_k_pre_rope()) {
      const float* pre = mem_->layers[l].k_pre_rope.data() + static_cast<size_t>(h) * n;
      one.layers[0].k_pre_rope.assign(pre, pre + n);
    }
  }
  HeadProfile p = profile_head(one, 0, 0, kind, dequantized, 4.0, rotation);
  p.layer = l;
  p.head = h;
  return p;
}

void DumpSource::check_intact(int l) const {
  if (reader_) reader_->check_intact(l);
}

void DumpSource::release_layer(int l) const {
  if (reader_) reader_->release_layer(l);
}

std::shared_ptr<const KvDump> DumpSource::whole() const {
  if (mem_) return mem_;
  std::lock_guard<std::mutex> lock(whole_mu_);
  if (!whole_) whole_ = std::make_shared<const KvDump>(load_dump(reader_->path()));
  return whole_;
}

}  // namespace kvscope::gui
