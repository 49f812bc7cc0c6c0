#include "core/metrics/dump_metrics.h"

#include "core/util/cancelled.h"
#include "core/tensor/compute_threads.h"
#include "core/util/error.h"
#include "core/util/parallel.h"

namespace kvscope {

DumpMetrics measure_dump(const KvDump& dump, const DequantizedKV& dq, const MeasureOptions& o) {
  const DumpShape& s = dump.shape;
  const int T = s.tokens, D = s.head_dim, H = s.kv_heads;
  if (o.attention && !dump.has_q())
    throw Error("dump has no queries (layers.{L}.q); attention metrics need Q — capture them or disable attention metrics");
  if (dq.k.size() != static_cast<size_t>(s.layers) || dq.v.size() != dq.k.size())
    throw Error("dequantized cache does not match the dump's layers");
  auto cancelled = [&] { return o.cancel && o.cancel->load(); };
  const size_t n = static_cast<size_t>(T) * D;
  DumpMetrics m;
  m.per_head.resize(static_cast<size_t>(s.layers) * H * 2);
  std::vector<ErrorSums> sums(m.per_head.size());
  parallel_for(static_cast<int64_t>(sums.size()), [&](int64_t i) {
    if (cancelled()) throw Cancelled();
    const int l = static_cast<int>(i / (2 * H)), h = static_cast<int>(i / 2 % H);
    const bool k = i % 2 == 0;
    sums[i].add(k ? dump.k(l, h) : dump.v(l, h), (k ? dq.k : dq.v)[l].data() + static_cast<size_t>(h) * n, n);
    HeadMetrics& hm = m.per_head[i];
    hm.layer = l;
    hm.head = h;
    hm.kind = k ? 'k' : 'v';
    hm.nmse = sums[i].nmse();
    hm.cos = sums[i].cos();
    hm.mse = sums[i].mse();
    hm.max_abs = sums[i].max_abs;
    hm.elements = n;
    if (o.progress) o.progress(1);
  });
  for (size_t i = 0; i < sums.size(); ++i) (i % 2 == 0 ? m.k : m.v).merge(sums[i]);
  if (!o.attention) return m;

  // A dump with queries at some positions only (dump --q-positions) is measured there.
  const std::vector<int> positions = dump.meta.q_positions.empty() ? sample_positions(T, o.attn_queries) : dump.meta.q_positions;
  m.attn_queries = static_cast<int>(positions.size());
  const int G = s.group();
  // One (layer, KV head) per worker thread, each with single-threaded GEMMs.
  ScopedBlasThreads blas(1);
  std::vector<AttentionSums> per(static_cast<size_t>(s.layers) * H);
  parallel_for(static_cast<int64_t>(per.size()), [&](int64_t i) {
    if (cancelled()) throw Cancelled();
    const int l = static_cast<int>(i / H), h = static_cast<int>(i % H);
    std::vector<const float*> q;
    for (int g = 0; g < G; ++g) q.push_back(dump.q(l, h * G + g));  // HF repeat_kv: query j -> KV head j / G
    const size_t off = static_cast<size_t>(h) * n;
    per[i] = attention_error(q, dump.k(l, h), dump.v(l, h), dq.k[l].data() + off, dq.v[l].data() + off, T, D, positions);
    if (o.progress) o.progress(4);
  });
  AttentionSums all;
  for (size_t i = 0; i < per.size(); ++i) {
    m.attention.push_back(per[i].metrics(static_cast<int>(i / H), static_cast<int>(i % H)));
    all.merge(per[i]);
  }
  m.attention_all = all.metrics(-1, -1);
  return m;
}

}  // namespace kvscope
