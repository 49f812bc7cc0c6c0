#pragma once
// Run tables as plain values and their text formats (CSV, Markdown, LaTeX, JSON, terminal text).
// Pure functions: no database here, so the GUI and the tests use them directly.
#include <cstdint>
#include <string>
#include <vector>

#include "storage/run_store.h"

namespace kvscope {

struct Cell {
  enum class Kind { Empty, Text, Integer, Real, Delta };  // Delta: a signed difference (+0.01)
  Kind kind = Kind::Empty;
  std::string text;
  int64_t integer = 0;
  double real = 0;

  static Cell empty() { return {}; }
  static Cell str(std::string s) { return {Kind::Text, std::move(s), 0, 0}; }
  static Cell whole(int64_t v) { return {Kind::Integer, {}, v, 0}; }
  static Cell number(double v) { return {Kind::Real, {}, 0, v}; }
  static Cell delta(double v) { return {Kind::Delta, {}, 0, v}; }
  bool numeric() const { return kind == Kind::Integer || kind == Kind::Real || kind == Kind::Delta; }
};

struct Table {
  std::string name;                     // "summary", "per-layer", "per-head", "compare"
  std::vector<std::string> header;      // snake_case column names (JSON keys)
  std::vector<std::vector<Cell>> rows;  // each row has header.size() cells
};

// One row per run: identification, bits and the aggregate errors.
Table summary_table(const std::vector<StoredRun>& runs);
// One row per (run, layer). Layer NMSE = sum of head errors / sum of head energies, the energy of
// a head recovered as mse * elements / nmse (a head with zero error adds to neither sum).
Table per_layer_table(const std::vector<StoredRun>& runs);
// One row per (run, layer, KV head): K and V tensor metrics side by side, then attention metrics.
Table per_head_table(const std::vector<StoredRun>& runs);
// One row per metric, the runs side by side, each run after the first with its delta to the first.
Table compare_table(const std::vector<StoredRun>& runs);
// One row per listed run (`kvscope runs list`, the GUI's runs table). Replay runs fill kv_bits,
// greedy_match and next_token_kl (their slices pooled by scored steps, see RunListing).
Table listing_table(const std::vector<RunListing>& runs);
// Everything stored about one run, for scripts (`kvscope runs show --json`).
std::string run_to_json(const StoredRun& run);
// By name ("summary" | "per-layer" | "per-head" | "compare"); Error listing the names otherwise.
Table make_table(const std::string& name, const std::vector<StoredRun>& runs);

std::string to_csv(const Table& t);       // RFC 4180: CRLF lines, quoted when needed, full precision
std::string to_markdown(const Table& t);  // GitHub table, numbers right-aligned, 6 significant digits
std::string to_latex(const Table& t);     // booktabs tabular, text escaped, 6 significant digits
std::string to_json(const Table& t);      // {"table", "columns", "rows": [{column: value}]}, NaN -> null
std::string to_text(const Table& t);      // aligned columns for a terminal
// By name ("csv" | "md" | "tex" | "json" | "text"); Error listing the names otherwise.
std::string format_table(const Table& t, const std::string& format);

}  // namespace kvscope
