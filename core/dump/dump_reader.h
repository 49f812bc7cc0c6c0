#pragma once
// Streamed access to a KV dump: the file stays memory-mapped and every (layer, head) matrix is
// handed out as a view at its stored precision (F16 / BF16 / F32), converted to f32 inside the
// quantizer kernels, so working on a 15 GB dump holds one layer of data, not the dump.
// Opening validates what load_dump validates (names, shapes, metadata; offsets and dtypes were
// bounds-checked by SafetensorsFile) and throws Error("<path>: <problem>"); load_dump is this
// reader plus load_layer() for every layer.
#include <memory>
#include <string>
#include <vector>

#include "core/dump/kv_dump.h"
#include "core/tensor/stored_matrix.h"

namespace kvscope {

class SafetensorsFile;
struct TensorInfo;

class DumpReader {
 public:
  explicit DumpReader(const std::string& path, const DumpLoadOptions& opts = {});
  ~DumpReader();

  const std::string& path() const;
  const DumpShape& shape() const { return header_.shape; }
  const DumpMeta& meta() const { return header_.meta; }
  bool has_q() const { return shape().q_heads > 0 && opts_.load_q; }
  bool has_k_pre_rope() const { return !layers_.empty() && layers_[0].k_pre_rope; }

  // [tokens, head_dim] views of layer l (valid while the reader lives). Throw naming the file when
  // the tensor is absent or not stored as F16, BF16 or F32.
  StoredMatrix k(int l, int kv_head) const;
  StoredMatrix v(int l, int kv_head) const;
  StoredMatrix q(int l, int q_head) const;
  // The query rows as stored: [q_rows(), head_dim]; row j is position meta().q_positions[j] when
  // the dump holds queries at some positions only (dump --q-positions), else position j.
  StoredMatrix q_stored(int l, int q_head) const;
  int q_rows() const { return q_rows_; }
  StoredMatrix k_pre_rope(int l, int kv_head) const;
  // Layer l in f32: exactly what load_dump holds for it.
  DumpLayer load_layer(int l) const;
  // Throws naming the file when it shrank since it was opened (another process truncated it), so a
  // layer's views are not read past the end of the file. Call before reading layer l's views.
  void check_intact(int l) const;
  // Done with layer l's views: its pages leave this process's resident set (still cached).
  void release_layer(int l) const;

 private:
  struct LayerTensors {
    const TensorInfo *k = nullptr, *v = nullptr, *q = nullptr, *k_pre_rope = nullptr, *q_pre_rope = nullptr;
  };
  StoredMatrix view(const TensorInfo* t, int l, const char* what, int head, bool any_rows = false) const;

  std::shared_ptr<SafetensorsFile> file_;
  DumpLoadOptions opts_;
  KvDump header_;  // shape and metadata, no layers
  std::vector<LayerTensors> layers_;
  int q_rows_ = 0;  // rows of the stored q tensors (dump_q_rows)
};

// The shape and metadata of a dump file, validated (kv_dump.cpp; the reader's first step).
KvDump read_dump_header(const SafetensorsFile& file, const DumpLoadOptions& opts);
// Rows of the stored query tensor q0: len(q_positions) when the file holds only those, else tokens.
int dump_q_rows(const DumpMeta& meta, const DumpShape& shape, const TensorInfo& q0);

}  // namespace kvscope
