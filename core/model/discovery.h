#pragma once
// Where models live: a folder given directly, the Hugging Face cache
// ($HF_HOME/hub, else ~/.cache/huggingface/hub: models--org--name/snapshots/<rev>/), and the
// colon-separated folders of $KVSCOPE_MODEL_PATH (a model folder itself, or a folder of them).
#include <cstdint>
#include <string>
#include <vector>

#include "core/model/config.h"

namespace kvscope {

// The Hugging Face hub cache folder (may not exist).
std::string hf_hub_dir();

// Resolves --model: an existing folder, an org/name in the HF cache, or a folder name found
// under $KVSCOPE_MODEL_PATH. Throws Error saying where it looked.
std::string resolve_model(const std::string& spec);

struct ModelEntry {
  std::string id;     // org/name for the HF cache, else the folder name
  std::string dir;    // folder holding config.json
  std::string error;  // non-empty when config.json or the weights are unusable
  ModelConfig config;
  std::string dtype;       // storage dtype of the weights ("F32", "F16", "BF16")
  int64_t params = 0;      // from the config shapes, tied embeddings counted once
};

// Every model folder found in the HF cache and $KVSCOPE_MODEL_PATH, sorted by id.
std::vector<ModelEntry> discover_models();
// Describes one folder (never throws: problems go to ModelEntry::error).
ModelEntry describe_model(const std::string& dir, const std::string& id);

}  // namespace kvscope
