#include "core/sweep/sweep.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/model/discovery.h"
#include "core/quant/method_registry.h"
#include "core/util/error.h"
#include "core/util/json_reader.h"
#include "core/util/content_hash.h"
#include "core/util/file.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace kvscope {

namespace {

// Bumped when the meaning of a cell's identity changes (every earlier cell then reruns).
// 2: a model's identity holds its weight bytes (1 held their file names and sizes).
constexpr int kCellFormat = 2;

std::string read_text(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open {}", what);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out(1);
  for (char c : s) {
    if (c == sep) out.emplace_back();
    else out.back() += c;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, char sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? std::string(1, sep) : "") + parts[i];
  return out;
}

std::string resolve_path(const fs::path& base, const std::string& p) {
  if (p.empty() || fs::path(p).is_absolute() || base.empty()) return p;
  return (base / p).lexically_normal().string();
}

// The spec with its relative paths made relative to `base` (the spec's folder). The workload
// loader resolves paths inside file: workloads itself, relative to that file.
std::string resolve_workload(const std::string& spec, const fs::path& base, const std::string& where) {
  const std::string s = trim(spec);
  const auto colon = s.find(':');
  if (colon == std::string::npos)
    fail(where, "workload '{}' must look like text:PATH, jsonl:PATH, passkey:len=L,depth=D,n=N or file:PATH", spec);
  const std::string kind = s.substr(0, colon), body = s.substr(colon + 1);
  if (kind == "passkey") {
    auto opts = split(body, ',');
    for (auto& o : opts) {
      const std::string t = trim(o);
      if (t.rfind("filler=", 0) == 0) o = "filler=" + resolve_path(base, t.substr(7));
    }
    return kind + ":" + join(opts, ',');
  }
  if (kind != "text" && kind != "jsonl" && kind != "file")
    fail(where, "unknown workload kind '{}' (expected text, jsonl, passkey or file)", kind);
  auto parts = split(body, ';');
  if (trim(parts[0]).empty()) fail(where, "workload '{}' has no path", spec);
  parts[0] = resolve_path(base, trim(parts[0]));
  return kind + ":" + join(parts, ';');
}

void collect_workload_files(const std::string& resolved, int depth, std::vector<std::string>& out) {
  const auto colon = resolved.find(':');
  if (colon == std::string::npos) return;
  const std::string kind = resolved.substr(0, colon), body = resolved.substr(colon + 1);
  if (kind == "passkey") {
    for (const auto& o : split(body, ',')) {
      const std::string t = trim(o);
      if (t.rfind("filler=", 0) == 0) out.push_back(t.substr(7));
    }
    return;
  }
  const std::string path = trim(split(body, ';')[0]);
  out.push_back(path);
  if (kind != "file" || depth > 4) return;  // the loader refuses deeper nesting itself
  std::istringstream in(read_text(path, "workload file"));
  std::string line;
  while (std::getline(in, line)) {
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.erase(hash);
    line = trim(line);
    if (line.empty()) continue;
    try {
      collect_workload_files(resolve_workload(line, fs::path(path).parent_path(), path), depth + 1, out);
    } catch (const Error&) {
      // A bad line is reported by the workload loader when the cell runs, with its line number.
    }
  }
}

bool has_quantized_tensor(const json& pj) {
  for (const char* kind : {"k", "v"})
    if (pj.contains(kind) && !pj[kind].value("fp16", false)) return true;
  return false;
}

// The policy with every quantized K/V setting (and every override that names bits) at `bits`.
Policy with_bits(const Policy& base, int bits, const std::string& where) {
  json pj = policy_to_json(base);
  for (const char* kind : {"k", "v"})
    if (!pj[kind].value("fp16", false)) pj[kind]["bits"] = bits;
  if (pj.contains("overrides"))
    for (auto& o : pj["overrides"])
      if (o.contains("bits") && !o.value("fp16", false)) o["bits"] = bits;
  pj["name"] = fmt::format("{}@{}b", base.name, bits);
  return parse_policy(pj, where);
}

Policy with_rate(const Policy& base, double rate, const std::string& where) {
  json pj = policy_to_json(base);
  base.method->set_rate(pj, rate);
  pj["name"] = fmt::format("{}@{}r", base.name, rate);
  return parse_policy(pj, where);
}

// "watersic": the methods set by a target rate, for error messages.
std::string rate_methods() {
  std::string s;
  for (const QuantMethod* m : all_methods())
    if (m->set_rate) s += (s.empty() ? "" : " or ") + m->name;
  return s;
}

void parse_methods(JsonReader& r, const fs::path& base, SweepSpec& spec) {
  if (!r.has("methods")) r.err("methods", "is required (a non-empty array of {\"preset\": ...} or {\"policy\": FILE})");
  const json& ms = r.at("methods");
  if (!ms.is_array() || ms.empty()) r.err("methods", "must be a non-empty array");
  for (size_t i = 0; i < ms.size(); ++i) {
    const std::string path = "$.methods[" + std::to_string(i) + "]";
    JsonReader m(ms[i], r.where(), path);
    const bool preset = m.has("preset"), file = m.has("policy");
    if (preset == file) m.err("", "give exactly one of \"preset\" or \"policy\"");
    const std::string key = preset ? "preset" : "policy";
    if (!m.at(key).is_string() || m.at(key).get<std::string>().empty()) m.err(key, "must be a non-empty string");
    const std::string ref = m.at(key).get<std::string>();
    if (file && fs::path(ref).extension() == ".py") {  // a policy script: planned per cell by the runner
      if (m.has("bits") || m.has("rates")) m.err("", "a policy script chooses its own bits: no \"bits\" or \"rates\"");
      m.reject_unknown();
      MethodVariant v;
      v.source = path;
      v.script = resolve_path(base, ref);
      try {
        v.script_hash = hash_text(read_file(v.script, "policy script"));
      } catch (const Error& e) {
        m.err(key, e.what());
      }
      v.policy = load_preset("fp16");
      v.policy.name = fs::path(ref).filename().string();  // "mine.py": apart from a "mine" JSON policy
      spec.methods.push_back(std::move(v));
      continue;
    }
    Policy p;
    try {
      p = preset ? load_preset(ref) : load_policy_file(resolve_path(base, ref));
    } catch (const Error& e) {
      m.err(key, e.what());
    }
    const bool has_bits = m.has("bits"), has_rates = m.has("rates");
    if (has_bits && has_rates) m.err("", "give \"bits\" or \"rates\", not both");
    const bool by_rate = static_cast<bool>(p.method->set_rate);
    if (has_bits && by_rate) m.err("bits", p.method->name + " is set by \"rates\" (target bits per element), not \"bits\"");
    if (has_rates && !by_rate)
      m.err("rates", fmt::format("only {} takes \"rates\"; {} ({}) is set by \"bits\"", rate_methods(), p.name, method_name(p.method)));
    if (has_bits && !has_quantized_tensor(policy_to_json(p)))
      m.err("bits", fmt::format("{} keeps every tensor in fp16; there are no bits to set", p.name));
    m.reject_unknown();
    const std::string list_key = has_bits ? "bits" : "rates";
    if (!has_bits && !has_rates) {
      spec.methods.push_back({p, path});
      continue;
    }
    const json& values = m.at(list_key);
    if (!values.is_array() || values.empty()) m.err(list_key, "must be a non-empty array");
    for (size_t k = 0; k < values.size(); ++k) {
      const std::string vpath = list_key + "[" + std::to_string(k) + "]";
      const json& v = values[k];
      Policy variant;
      try {
        if (has_bits) {
          if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 8) m.err(vpath, "must be an integer in 1..8");
          variant = with_bits(p, v.get<int>(), "policy " + p.name);
        } else {
          if (!v.is_number() || !(v.get<double>() > 0) || v.get<double>() > 32) m.err(vpath, "must be a number in (0, 32]");
          variant = with_rate(p, v.get<double>(), "policy " + p.name);
        }
      } catch (const Error& e) {
        const std::string what = e.what();
        if (what.rfind(r.where() + ": ", 0) == 0) throw;  // our own message
        m.err(vpath, what);
      }
      spec.methods.push_back({variant, path + "." + vpath});
    }
  }
  std::map<std::string, std::string> names;  // two entries that give the same label are a typo
  for (const auto& v : spec.methods) {
    auto [it, fresh] = names.emplace(v.policy.name, v.source);
    if (!fresh) throw Error(fmt::format("{}: {}: policy {} is also {}", r.where(), v.source, v.policy.name, it->second));
  }
}

}  // namespace

std::pair<int, int> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  int i = -1, n = -1;
  try {
    size_t a = 0, b = 0;
    if (slash != std::string::npos) {
      i = std::stoi(text.substr(0, slash), &a);
      n = std::stoi(text.substr(slash + 1), &b);
      if (a != slash || b != text.size() - slash - 1) i = -1;
    }
  } catch (const std::exception&) {
    i = -1;
  }
  if (slash == std::string::npos || i < 0 || n < 1 || i >= n)
    fail("--shard", "'{}' must be I/N with 0 <= I < N (e.g. 0/4)", text);
  return {i, n};
}

SweepSpec parse_sweep_spec(const std::string& text, const std::string& path) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, "not valid JSON ({})", e.what());
  }
  SweepSpec spec;
  spec.path = path;
  const fs::path base = fs::path(path).parent_path();
  JsonReader r(j, path, "$");
  if (!r.has("name") || !r.at("name").is_string()) r.err("name", "is required (a string)");
  spec.name = r.at("name").get<std::string>();
  const bool bad_name = spec.name.empty() || spec.name.size() > 90 ||
                        std::any_of(spec.name.begin(), spec.name.end(), [](unsigned char c) { return c <= ' ' || c == ',' || c == 0x7f; });
  if (bad_name) r.err("name", "must be 1-90 characters without spaces, commas or control characters (runs are tagged sweep:<name>)");
  spec.dumps = r.strings("dumps");
  for (const auto& d : spec.dumps) spec.dump_paths.push_back(resolve_path(base, d));
  spec.models = r.strings("models");
  spec.workloads = r.strings("workloads");
  if (spec.models.empty() != spec.workloads.empty())
    r.err(spec.models.empty() ? "models" : "workloads", "replay cells need both \"models\" and \"workloads\"");
  if (spec.dumps.empty() && spec.models.empty()) r.err("", "give \"dumps\" (quantize cells) or \"models\" and \"workloads\" (replay cells)");
  for (size_t i = 0; i < spec.workloads.size(); ++i)
    spec.workload_specs.push_back(resolve_workload(spec.workloads[i], base, path + ": $.workloads[" + std::to_string(i) + "]"));
  for (size_t i = 0; i < spec.models.size(); ++i) {
    const std::string& m = spec.models[i];
    const std::string local = resolve_path(base, m);
    std::error_code ec;
    if (fs::is_directory(local, ec)) {
      spec.model_dirs.push_back(local);
      continue;
    }
    try {
      spec.model_dirs.push_back(resolve_model(m));
    } catch (const Error& e) {
      r.err("models[" + std::to_string(i) + "]", e.what());
    }
  }
  parse_methods(r, base, spec);
  if (r.has("attn_queries")) {
    const json& v = r.at("attn_queries");
    if (v.is_string() && v.get<std::string>() == "all") spec.attn_queries = 0;
    else if (v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= (1 << 24)) spec.attn_queries = v.get<int>();
    else r.err("attn_queries", "must be a positive integer or \"all\"");
  }
  if (r.has("replay")) {
    JsonReader rr(r.at("replay"), path, "$.replay");
    if (rr.has("max_tokens")) {
      const json& v = rr.at("max_tokens");
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > (1 << 24))
        rr.err("max_tokens", "must be an integer >= 0 (0 = no cap)");
      spec.max_tokens = v.get<int>();
    }
    rr.reject_unknown();
  }
  r.reject_unknown();
  return spec;
}

SweepSpec load_sweep_spec(const std::string& path) { return parse_sweep_spec(read_text(path, "sweep spec"), path); }

std::vector<std::string> workload_files(const std::string& resolved_spec) {
  std::vector<std::string> out;
  collect_workload_files(resolved_spec, 0, out);
  return out;
}

std::string model_identity_hash(const std::string& dir) {
  json id = json::object();
  id["config"] = hash_file((fs::path(dir) / "config.json").string());
  json weights = json::object(), tokenizer = json::object();
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) weights[name] = hash_file(e.path().string());
    else if (name.find(".safetensors.index") != std::string::npos || name.rfind("tokenizer", 0) == 0 ||
             (name.rfind("tok", 0) == 0 && e.path().extension() == ".bin"))  // as load_tokenizer finds them
      tokenizer[name] = hash_file(e.path().string());  // small files: their bytes
  }
  if (ec) fail(dir, "cannot list the model folder: {}", ec.message());
  id["weights"] = weights;
  id["tokenizer"] = tokenizer;
  return hash_text(id.dump());
}

std::vector<SweepCell> plan_cells(const SweepSpec& spec) {
  std::vector<SweepCell> cells;
  std::vector<std::string> policies;
  for (const auto& m : spec.methods)
    policies.push_back(m.script.empty() ? canonical_policy_json(m.policy) : json{{"policy_script", m.script_hash}}.dump());
  // Appends `c` as the next cell, identified by `id`.
  auto add_cell = [&](SweepCell c, const json& id) {
    c.index = static_cast<int>(cells.size());
    c.identity = id.dump();
    c.hash = hash_text(c.identity);
    cells.push_back(std::move(c));
  };
  for (size_t d = 0; d < spec.dumps.size(); ++d) {
    std::string dump_hash;
    try {
      dump_hash = hash_file(spec.dump_paths[d]);
    } catch (const Error& e) {
      fail(spec.path, "$.dumps[{}]: {}", d, e.what());
    }
    for (size_t m = 0; m < spec.methods.size(); ++m) {
      SweepCell c;
      c.kind = CellKind::Quantize;
      c.dump = static_cast<int>(d);
      c.method = static_cast<int>(m);
      c.target = spec.dumps[d];
      c.dump_hash = dump_hash;
      add_cell(std::move(c), {{"cell_format", kCellFormat}, {"kind", "quantize"}, {"dump", dump_hash},
                              {"policy", policies[m]}, {"attn_queries", spec.attn_queries}});
    }
  }
  for (size_t mo = 0; mo < spec.models.size(); ++mo) {
    std::string model_hash;
    try {
      model_hash = model_identity_hash(spec.model_dirs[mo]);
    } catch (const Error& e) {
      fail(spec.path, "$.models[{}]: {}", mo, e.what());
    }
    for (size_t w = 0; w < spec.workloads.size(); ++w) {
      json files = json::object();
      try {
        // Keyed by the path relative to the spec folder, so moving the whole study keeps its cells.
        const fs::path base = fs::path(spec.path).parent_path();
        for (const auto& f : workload_files(spec.workload_specs[w])) {
          const std::string rel = base.empty() ? f : fs::path(f).lexically_relative(base).string();
          files[rel.empty() ? f : rel] = hash_file(f);
        }
      } catch (const Error& e) {
        fail(spec.path, "$.workloads[{}]: {}", w, e.what());
      }
      for (size_t m = 0; m < spec.methods.size(); ++m) {
        SweepCell c;
        c.kind = CellKind::Replay;
        c.model = static_cast<int>(mo);
        c.workload = static_cast<int>(w);
        c.method = static_cast<int>(m);
        c.target = spec.models[mo] + " " + spec.workloads[w];
        add_cell(std::move(c), {{"cell_format", kCellFormat}, {"kind", "replay"},         {"model", model_hash},
                                {"workload", spec.workloads[w]}, {"workload_files", files}, {"policy", policies[m]},
                                {"max_tokens", spec.max_tokens}});
      }
    }
  }
  // Two cells with one hash would be one measurement listed twice (a dump or model given twice,
  // or two files with the same bytes): the second would always look done.
  std::map<std::string, const SweepCell*> seen;
  for (const auto& c : cells) {
    auto [it, fresh] = seen.emplace(c.hash, &c);
    if (!fresh)
      fail(spec.path, "cell {} ({} {}) measures the same as cell {} ({} {}): a dump, model or workload is listed twice",
           c.index, spec.methods[c.method].policy.name, c.target, it->second->index,
           spec.methods[it->second->method].policy.name, it->second->target);
  }
  return cells;
}

}  // namespace kvscope
