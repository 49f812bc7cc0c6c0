#pragma once
// Sweeps: a grid of measurements read from a JSON spec, cut into cells, each cell named by the
// content hash of everything that determines its numbers (so a rerun skips cells already stored).
//
// Spec (paths relative to the spec file's folder):
// {"name": "rd-small",
//  "dumps": ["a.safetensors"],                                   // quantize cells
//  "models": ["path/or/org-name"], "workloads": ["text:PATH;n=2"], // replay cells: model x workload
//  "methods": [{"preset": "uniform-4", "bits": [2, 3, 4, 8]}, {"preset": "watersic-2", "rates": [1, 2]},
//              {"policy": "mine.json"}, {"policy": "mine.py"}, {"preset": "fp16"}],
//  "attn_queries": 256,                 // or "all"; quantize cells
//  "replay": {"max_tokens": 32}}        // 0 = no cap; replay cells
// Cells: dumps x method variants, then models x workloads x method variants, in that order.
// Validation errors: Error("<spec file>: $.methods[2].bits: ...").
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/policy/policy.h"

namespace kvscope {

// One policy of the grid: a preset or policy file, with "bits"/"rates" applied.
struct MethodVariant {
  Policy policy;        // name is the label, e.g. "uniform-4@3b", "watersic-2@2r"
  std::string source;   // "$.methods[i]" (for messages)
  // {"policy": "mine.py"}: a policy script (python/policy_script.h), resolved. core/ cannot run it:
  // the sweep runner (app/) plans it per cell; `policy` is then a placeholder named after the file
  // ("mine.py", also the planned policy's name),
  // and the cell's identity holds the script's content hash.
  std::string script{};
  std::string script_hash{};
};

struct SweepSpec {
  std::string path;  // the spec file as given
  std::string name;
  std::vector<std::string> dumps;           // as written
  std::vector<std::string> dump_paths;      // resolved against the spec folder
  std::vector<std::string> models;          // as written
  std::vector<std::string> model_dirs;      // resolved folders
  std::vector<std::string> workloads;       // as written
  std::vector<std::string> workload_specs;  // paths resolved against the spec folder
  std::vector<MethodVariant> methods;
  int attn_queries = 256;  // 0 = every query position
  int max_tokens = 0;      // replay: cap on scored/generated tokens per item (0 = none)
};

SweepSpec load_sweep_spec(const std::string& path);
SweepSpec parse_sweep_spec(const std::string& text, const std::string& path);  // path: for messages and the base folder

enum class CellKind { Quantize, Replay };

struct SweepCell {
  int index = 0;  // position in the full grid (shards take index % N == I)
  CellKind kind = CellKind::Quantize;
  int dump = -1;      // into SweepSpec::dumps (quantize)
  int model = -1;     // into SweepSpec::models (replay)
  int workload = -1;  // into SweepSpec::workloads (replay)
  int method = 0;     // into SweepSpec::methods
  std::string identity;  // canonical JSON of what determines the cell's numbers
  std::string hash;      // hash_text(identity)
  std::string target;    // for listings: the dump, or "model workload"
  std::string dump_hash; // hash_file of the dump (quantize)
};

// Every cell of the grid in order, with identities and hashes. Reads every dump (to hash it), the
// config.json and tokenizer files of every model, and every workload file; errors name the spec
// and the JSON path of the entry.
std::vector<SweepCell> plan_cells(const SweepSpec& spec);

// The model part of a replay cell's identity: the bytes of config.json, the tokenizer files and
// the weight files (by name). Not the folder's path: a copy on another node is the same model. Not
// sizes alone: a fine-tuned checkpoint has its base model's sizes and config, and would be taken
// for it. Hashing costs ~1.2 s per GB (measured) once per sweep start, less than loading the
// weights for one cell. `dir` is a resolved model folder.
std::string model_identity_hash(const std::string& dir);

// The files a workload spec names (resolved), following file: workloads into the files they list.
std::vector<std::string> workload_files(const std::string& resolved_spec);

// "I/N" -> (I, N); Error for anything else (0 <= I < N).
std::pair<int, int> parse_shard(const std::string& text);

}  // namespace kvscope
