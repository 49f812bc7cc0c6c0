#pragma once
// The dump the GUI works on, however it came: a file opened through DumpReader (memory-mapped,
// every (layer, head) a view at its stored precision, read one layer at a time, no f32 copy of
// the dump) or an in-memory KvDump (the synthetic demo, a capture). No ImGui.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/dump/dump_reader.h"
#include "core/dump/kv_dump.h"
#include "core/metrics/head_profile.h"
#include "core/tensor/stored_matrix.h"

namespace kvscope::gui {

class DumpSource {
 public:
  // Throws Error("<path>: <problem>") like load_dump.
  static std::shared_ptr<const DumpSource> open_file(const std::string& path);
  static std::shared_ptr<const DumpSource> in_memory(std::shared_ptr<const KvDump> dump);

  const KvDump& header() const { return header_; }  // shape and metadata, no layers (plans, estimates)
  const DumpShape& shape() const { return header_.shape; }
  const DumpMeta& meta() const { return header_.meta; }
  bool has_q() const;
  bool file_backed() const { return reader_ != nullptr; }
  const DumpReader* reader() const { return reader_.get(); }  // null in memory

  // [tokens, head_dim] view of one (layer, KV head, kind) slice ('k' or 'v'); valid while this lives.
  StoredMatrix slice(int layer, int head, char kind) const;
  // The query positions attention must use: the stored ones of a `dump --q-positions` file, else
  // empty (any position).
  const std::vector<int>& stored_q_positions() const { return header_.meta.q_positions; }
  // Rows `positions` of query head q_head of `layer` into dst [tokens, head_dim] (other rows untouched).
  void read_q_rows(int layer, int q_head, const std::vector<int>& positions, float* dst) const;
  // Drill-down numbers of one head (profile_head), `dequantized` its reconstruction or nullptr,
  // `rotation` the policy's rotation stage or nullptr.
  HeadProfile profile(int layer, int head, char kind, const float* dequantized, const RotationSpec* rotation = nullptr) const;

  // Before reading layer l (a file that shrank since it was opened throws) / after it: its pages
  // leave the resident set. No-ops in memory.
  void check_intact(int layer) const;
  void release_layer(int layer) const;

  // The whole dump in f32, for the paths that need statistics over all of it (policies that are
  // not quantized slice by slice, policy scripts, sweeps of such presets): the in-memory dump, or
  // the file loaded on first use and kept. Costs the dump's size in f32.
  std::shared_ptr<const KvDump> whole() const;

 private:
  DumpSource() = default;
  KvDump header_;
  std::shared_ptr<const KvDump> mem_;
  std::unique_ptr<DumpReader> reader_;
  mutable std::mutex whole_mu_;
  mutable std::shared_ptr<const KvDump> whole_;
};

}  // namespace kvscope::gui
