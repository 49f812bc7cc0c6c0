#include "core/replay/base_distribution.h"

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/replay/kl_stats.h"
#include "core/replay/quantized_kv_cache.h"
#include "core/util/error.h"

namespace kvscope {

namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[8] = {'K', 'V', 'S', 'B', 'A', 'S', 'E', '1'};
constexpr uint32_t kMaxHeader = 1u << 30;

void check_cancel(const std::atomic<bool>* cancel) {
  if (cancel && cancel->load()) throw Error("replay: interrupted");
}

bool is_generation(const WorkloadItem& it) { return it.target.empty(); }
int steps_of(const WorkloadItem& it) { return is_generation(it) ? it.max_new : static_cast<int>(it.target.size()); }

}  // namespace

ReferenceItem run_reference_item(const Model& model, const WorkloadItem& it, const std::atomic<bool>* cancel) {
  const ModelConfig& cfg = model.config();
  const int steps = steps_of(it);
  const int reserve = static_cast<int>(it.prompt.size()) + steps;
  Fp16KvCache cache(cfg.num_layers, cfg.num_kv_heads, cfg.head_dim, reserve);
  ReferenceItem r;
  check_cancel(cancel);
  std::vector<float> logits = model.forward(it.prompt, cache);
  const size_t V = logits.size();
  r.logits.reserve(V * steps);
  for (int s = 0; s < steps; ++s) {
    check_cancel(cancel);
    const int32_t next = is_generation(it) ? argmax(logits) : it.target[s];
    r.logits.insert(r.logits.end(), logits.begin(), logits.end());
    r.fed.push_back(next);
    if (s + 1 == steps) break;
    const auto t0 = Clock::now();
    logits = model.forward(std::span<const int32_t>(&r.fed.back(), 1), cache);
    r.decode_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    ++r.decode_steps;
  }
  r.peak_bits = cache.stored_bits();
  return r;
}

BaseDistribution compute_base(const Model& model, const std::vector<WorkloadSlice>& slices,
                              const std::function<void(const std::string&)>& progress, const std::atomic<bool>* cancel) {
  BaseDistribution b;
  b.vocab = model.config().vocab_size;
  b.slices = slices;
  for (const auto& slice : slices) {
    b.items.emplace_back();
    for (size_t i = 0; i < slice.items.size(); ++i) {
      if (progress) progress(fmt::format("replay: reference {} item {}/{}", slice.name, i + 1, slice.items.size()));
      b.items.back().push_back(run_reference_item(model, slice.items[i], cancel));
    }
  }
  return b;
}

namespace {

template <class T>
void write_array(std::ofstream& out, const std::vector<T>& v) {
  out.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
}

}  // namespace

void save_base(const std::string& path, const BaseDistribution& b) {
  nlohmann::json h;
  h["format"] = "kvscope-base";
  h["version"] = 1;
  h["model"] = b.model_id;
  h["model_hash"] = b.model_hash;
  h["vocab"] = b.vocab;
  h["logits"] = "f32";
  h["workload"] = b.workload;
  h["slices"] = nlohmann::json::array();
  for (size_t si = 0; si < b.slices.size(); ++si) {
    const WorkloadSlice& s = b.slices[si];
    nlohmann::json js = {{"name", s.name}, {"kind", workload_kind_name(s.kind)}, {"items", nlohmann::json::array()}};
    for (size_t i = 0; i < s.items.size(); ++i) {
      const WorkloadItem& it = s.items[i];
      const ReferenceItem& r = b.items[si][i];
      js["items"].push_back({{"prompt", it.prompt.size()}, {"target", it.target.size()}, {"steps", r.fed.size()},
                             {"max_new", it.max_new}, {"answer", it.answer}, {"decode_seconds", r.decode_seconds},
                             {"decode_steps", r.decode_steps}, {"peak_bits", r.peak_bits}});
    }
    h["slices"].push_back(std::move(js));
  }
  const std::string header = h.dump();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot write the base-distribution file");
    out.write(kMagic, sizeof kMagic);
    const uint32_t n = static_cast<uint32_t>(header.size());
    out.write(reinterpret_cast<const char*>(&n), sizeof n);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (size_t si = 0; si < b.slices.size(); ++si)
      for (size_t i = 0; i < b.slices[si].items.size(); ++i) {
        write_array(out, b.slices[si].items[i].prompt);
        write_array(out, b.slices[si].items[i].target);
        write_array(out, b.items[si][i].fed);
        write_array(out, b.items[si][i].logits);
      }
    out.flush();
    if (!out) fail(path, "writing the base-distribution file failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path, "cannot move the base-distribution file into place: {}", ec.message());
}

namespace {

struct Reader {
  std::ifstream in;
  std::string path;
  uint64_t left = 0;  // bytes after the current position
  template <class T>
  std::vector<T> array(uint64_t n, const char* what) {
    if (n > left / sizeof(T)) fail(path, "truncated base-distribution file ({} missing)", what);
    std::vector<T> v(static_cast<size_t>(n));
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
    if (!in) fail(path, "cannot read the base-distribution file ({})", what);
    left -= n * sizeof(T);
    return v;
  }
};

uint64_t count_field(const nlohmann::json& j, const char* key, const std::string& path, uint64_t max) {
  if (!j.contains(key) || !j[key].is_number_unsigned() || j[key].get<uint64_t>() > max)
    fail(path, "base-distribution header: \"{}\" missing or out of range", key);
  return j[key].get<uint64_t>();
}

}  // namespace

BaseDistribution load_base(const std::string& path) {
  Reader r;
  r.path = path;
  r.in.open(path, std::ios::binary);
  if (!r.in) fail(path, "cannot open the base-distribution file");
  r.in.seekg(0, std::ios::end);
  r.left = static_cast<uint64_t>(r.in.tellg());
  r.in.seekg(0);
  char magic[8] = {};
  uint32_t n = 0;
  if (r.left < sizeof magic + sizeof n) fail(path, "not a kvscope base-distribution file (too short)");
  r.in.read(magic, sizeof magic);
  if (std::memcmp(magic, kMagic, sizeof magic) != 0) fail(path, "not a kvscope base-distribution file (bad magic)");
  r.in.read(reinterpret_cast<char*>(&n), sizeof n);
  r.left -= sizeof magic + sizeof n;
  if (n > kMaxHeader || n > r.left) fail(path, "base-distribution header length {} is out of range", n);
  std::string text(n, '\0');
  r.in.read(text.data(), n);
  r.left -= n;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(path, "base-distribution header is not valid JSON ({})", e.what());
  }
  if (!h.is_object() || h.value("format", "") != "kvscope-base") fail(path, "not a kvscope base-distribution file");
  if (!h.contains("version") || !h["version"].is_number_integer() || h["version"].get<int>() != 1)
    fail(path, "base-distribution file version is not 1 (written by another kvscope)");
  if (h.value("logits", "") != "f32") fail(path, "base-distribution header: \"logits\" must be \"f32\"");
  BaseDistribution b;
  try {
    b.model_id = h.value("model", "");
    b.model_hash = h.value("model_hash", "");
    b.workload = h.value("workload", "");
  } catch (const std::exception&) {
    fail(path, "base-distribution header: \"model\", \"model_hash\" and \"workload\" must be strings");
  }
  b.vocab = static_cast<int>(count_field(h, "vocab", path, 1u << 24));
  if (b.vocab < 1) fail(path, "base-distribution header: vocab must be positive");
  if (!h.contains("slices") || !h["slices"].is_array()) fail(path, "base-distribution header: \"slices\" must be a list");
  for (const auto& js : h["slices"]) {
    if (!js.is_object() || !js.contains("items") || !js["items"].is_array() || !js.contains("name") || !js["name"].is_string())
      fail(path, "base-distribution header: a slice needs \"name\" and \"items\"");
    WorkloadSlice s;
    s.name = js["name"].get<std::string>();
    const std::string kind = js.value("kind", "");
    bool known = false;
    for (WorkloadKind k : {WorkloadKind::Text, WorkloadKind::Jsonl, WorkloadKind::Passkey, WorkloadKind::Ruler})
      if (workload_kind_name(k) == kind) s.kind = k, known = true;
    if (!known) fail(path, "base-distribution header: unknown slice kind '{}'", kind);
    b.slices.push_back(std::move(s));
    b.items.emplace_back();
    for (const auto& ji : js["items"]) {
      if (!ji.is_object()) fail(path, "base-distribution header: an item must be an object");
      WorkloadItem it;
      ReferenceItem ri;
      const uint64_t prompt = count_field(ji, "prompt", path, 1u << 26), target = count_field(ji, "target", path, 1u << 26);
      const uint64_t steps = count_field(ji, "steps", path, 1u << 26);
      it.max_new = static_cast<int>(count_field(ji, "max_new", path, 1u << 26));
      ri.decode_steps = static_cast<int>(count_field(ji, "decode_steps", path, 1u << 26));
      ri.peak_bits = count_field(ji, "peak_bits", path, UINT64_MAX);
      if (!ji.contains("answer") || !ji["answer"].is_string() || !ji.contains("decode_seconds") || !ji["decode_seconds"].is_number())
        fail(path, "base-distribution header: an item needs \"answer\" and \"decode_seconds\"");
      it.answer = ji["answer"].get<std::string>();
      ri.decode_seconds = ji["decode_seconds"].get<double>();
      it.prompt = r.array<int32_t>(prompt, "prompt tokens");
      it.target = r.array<int32_t>(target, "target tokens");
      if (steps != (target > 0 ? target : static_cast<uint64_t>(it.max_new)))
        fail(path, "base-distribution header: an item has {} steps for {} target tokens and max_new {}", steps, target, it.max_new);
      ri.fed = r.array<int32_t>(steps, "fed tokens");
      for (int32_t t : ri.fed)
        if (t < 0 || t >= b.vocab) fail(path, "a fed token id {} is outside the vocabulary of {}", t, b.vocab);
      ri.logits = r.array<float>(steps * static_cast<uint64_t>(b.vocab), "logits");
      b.slices.back().items.push_back(std::move(it));
      b.items.back().push_back(std::move(ri));
    }
  }
  if (r.left != 0) fail(path, "base-distribution file has {} bytes after its last item", r.left);
  return b;
}

void check_base_matches(const BaseDistribution& b, const std::string& path, const std::string& model_hash, int vocab,
                        const std::vector<WorkloadSlice>& slices) {
  if (b.vocab != vocab) fail(path, "base distribution has a vocabulary of {}, the model {}: made with another model", b.vocab, vocab);
  if (!b.model_hash.empty() && !model_hash.empty() && b.model_hash != model_hash)
    fail(path, "base distribution was made with model {} ({}), not this one ({})", b.model_id, b.model_hash, model_hash);
  if (b.slices.size() != slices.size())
    fail(path, "base distribution has {} workload slices, this workload {}: made on workload '{}'", b.slices.size(),
         slices.size(), b.workload);
  for (size_t si = 0; si < slices.size(); ++si) {
    const WorkloadSlice &a = b.slices[si], &w = slices[si];
    if (a.name != w.name || a.kind != w.kind || a.items.size() != w.items.size())
      fail(path, "base distribution slice {} is '{}' with {} items, this workload's is '{}' with {}", si + 1, a.name,
           a.items.size(), w.name, w.items.size());
    for (size_t i = 0; i < w.items.size(); ++i) {
      const WorkloadItem &x = a.items[i], &y = w.items[i];
      if (x.prompt != y.prompt || x.target != y.target || x.max_new != y.max_new || x.answer != y.answer)
        fail(path, "base distribution {} item {} has other token ids (another workload, tokenizer or --max-tokens)",
             w.name, i + 1);
    }
  }
}

}  // namespace kvscope
