#include "core/model/discovery.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/model/checkpoint.h"
#include "core/util/error.h"

namespace kvscope {

namespace fs = std::filesystem;

std::string hf_hub_dir() {
  if (const char* hf = std::getenv("HF_HOME"); hf && *hf) return (fs::path(hf) / "hub").string();
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    return (fs::path(xdg) / "huggingface" / "hub").string();
  const char* home = std::getenv("HOME");
  return (fs::path(home && *home ? home : ".") / ".cache" / "huggingface" / "hub").string();
}

namespace {

bool is_model_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p / "config.json", ec);
}

// The snapshot refs/main points at, else the newest snapshot with a config.json.
std::string hf_snapshot(const fs::path& repo) {
  std::error_code ec;
  std::ifstream ref(repo / "refs" / "main");
  std::string rev;
  if (ref && std::getline(ref, rev) && !rev.empty() && is_model_dir(repo / "snapshots" / rev))
    return (repo / "snapshots" / rev).string();
  fs::path best;
  fs::file_time_type best_time{};
  for (const auto& e : fs::directory_iterator(repo / "snapshots", ec)) {
    if (!is_model_dir(e.path())) continue;
    const auto t = fs::last_write_time(e.path(), ec);
    if (best.empty() || t > best_time) {
      best = e.path();
      best_time = t;
    }
  }
  return best.string();
}

std::vector<std::string> model_path_entries() {
  std::vector<std::string> out;
  const char* env = std::getenv("KVSCOPE_MODEL_PATH");
  if (!env) return out;
  std::string s = env;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t colon = s.find(':', start);
    const std::string part = s.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!part.empty()) out.push_back(part);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return out;
}

}  // namespace

std::string resolve_model(const std::string& spec) {
  if (spec.empty()) fail("--model", "empty model name");
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    if (!is_model_dir(spec)) fail(spec, "not a model folder: config.json is missing");
    return spec;
  }
  std::vector<std::string> looked;
  const size_t slash = spec.find('/');
  if (slash != std::string::npos && slash > 0 && spec.find('/', slash + 1) == std::string::npos) {
    const fs::path repo = fs::path(hf_hub_dir()) / ("models--" + spec.substr(0, slash) + "--" + spec.substr(slash + 1));
    looked.push_back(repo.string());
    if (fs::is_directory(repo, ec)) {
      const std::string snap = hf_snapshot(repo);
      if (snap.empty()) fail(repo.string(), "no snapshot with a config.json");
      return snap;
    }
  }
  for (const auto& root : model_path_entries()) {
    const fs::path p = fs::path(root) / spec;
    looked.push_back(p.string());
    if (is_model_dir(p)) return p.string();
  }
  std::string where;
  for (const auto& l : looked) where += (where.empty() ? "" : ", ") + l;
  fail(spec, "no such model folder{}{}", looked.empty() ? "" : "; looked in ", where);
}

ModelEntry describe_model(const std::string& dir, const std::string& id) {
  ModelEntry e;
  e.id = id;
  e.dir = dir;
  try {
    e.config = load_config(dir);
    e.params = e.config.param_count();
    const Checkpoint ck = Checkpoint::open(dir);
    e.dtype = ck.storage_dtype();
    ck.check_against(e.config);
  } catch (const Error& err) {
    e.error = err.what();
  }
  if (e.dtype.empty()) e.dtype = e.config.torch_dtype;
  return e;
}

std::vector<ModelEntry> discover_models() {
  std::vector<ModelEntry> out;
  std::set<std::string> seen;
  std::error_code ec;
  auto add = [&](const fs::path& dir, const std::string& id) {
    const std::string canon = fs::weakly_canonical(dir, ec).string();
    if (!seen.insert(canon).second) return;
    out.push_back(describe_model(dir.string(), id));
  };
  const fs::path hub = hf_hub_dir();
  for (const auto& e : fs::directory_iterator(hub, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("models--", 0) != 0) continue;
    const std::string snap = hf_snapshot(e.path());
    if (snap.empty()) continue;
    std::string id = name.substr(8);
    if (const size_t p = id.find("--"); p != std::string::npos) id.replace(p, 2, "/");
    add(snap, id);
  }
  for (const auto& root : model_path_entries()) {
    if (is_model_dir(root)) {
      add(root, fs::path(root).filename().string());
      continue;
    }
    std::vector<fs::path> subdirs;
    for (const auto& e : fs::directory_iterator(root, ec))
      if (is_model_dir(e.path())) subdirs.push_back(e.path());
    std::sort(subdirs.begin(), subdirs.end());
    for (const auto& d : subdirs) add(d, d.filename().string());
  }
  std::sort(out.begin(), out.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.id < b.id; });
  return out;
}

}  // namespace kvscope
