#include "python/policy_blocks.h"

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>

#include "core/util/error.h"
#include "core/util/file.h"
#include "python/interpreter.h"
#include "python/policy_script.h"
#include "python/script_support.h"

namespace kvscope {

namespace py = pybind11;
using json = nlohmann::json;

struct ScriptBlockHook::Impl {
  std::string path;
  py::object* inst = nullptr;  // owned; released with the GIL held
  double max_avg_bits = 0;
  int min_bits = 1, max_bits = 16;
  std::map<std::pair<int, char>, std::pair<int, int>> ranges;  // (layer, kind) -> bit_range
  long long spent = 0, done = 0;                               // per cache
  double seconds = 0;
  long long calls = 0;
};

ScriptBlockHook::ScriptBlockHook() : impl_(std::make_unique<Impl>()) {}

ScriptBlockHook::~ScriptBlockHook() {
  if (impl_->inst) python::with_gil([&] { delete impl_->inst; });
}

std::unique_ptr<ScriptBlockHook> ScriptBlockHook::create(const std::string& path, const Policy& planned, const ScriptTarget&) {
  const std::string source = read_file(path, "policy script");
  std::unique_ptr<ScriptBlockHook> hook(new ScriptBlockHook());
  Impl& I = *hook->impl_;
  I.path = path;
  I.max_avg_bits = planned.budget.max_avg_bits;
  I.min_bits = planned.budget.min_bits;
  I.max_bits = planned.budget.max_bits;
  if (!planned.script_json.empty())
    for (const json& d : json::parse(planned.script_json).value("decisions", json::array()))
      if (d.at("hook") == "bit_range")
        I.ranges[{d.at("layer").get<int>(), d.at("kind").get<std::string>()[0]}] = {d.at("value").at(0).get<int>(),
                                                                                    d.at("value").at(1).get<int>()};
  const bool defined = python::with_gil([&] {
    py::object inst = script::policy_instance(path, source);
    if (!py::hasattr(inst, "choose_bits") || !PyCallable_Check(inst.attr("choose_bits").ptr())) return false;
    I.inst = new py::object(std::move(inst));
    return true;
  });
  if (!defined) return nullptr;
  return hook;
}

void ScriptBlockHook::begin_cache() {
  impl_->spent = 0;
  impl_->done = 0;
}

double ScriptBlockHook::seconds() const { return impl_->seconds; }
long long ScriptBlockHook::calls() const { return impl_->calls; }

int ScriptBlockHook::choose_bits(const KvBlock& b) {
  Impl& I = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  const long long entries = static_cast<long long>(b.tokens) * (b.h1 - b.h0);
  const std::string kind = std::string(1, b.kind);
  const std::string d = fmt::format(
      "choose_bits(layer_id={}, kv_kind='{}', head_group={}, token_stats[block {}: tokens {}..{}], budget_state={{bits_spent: {}, "
      "entries_done: {}}})",
      b.layer, kind, b.head_group, b.index, b.first, b.first + b.tokens - 1, I.spent, I.done);
  auto [lo, hi] = std::pair<int, int>{I.min_bits, I.max_bits};
  if (auto it = I.ranges.find({b.layer, b.kind}); it != I.ranges.end()) std::tie(lo, hi) = it->second;
  const int bits = python::with_gil([&] {
    script::Hooks hooks(I.path, *I.inst);
    py::dict stats = script::token_stats(b.rows, b.head_stride, b.tokens, b.head_dim, b.h0, b.h1);
    stats["block"] = b.index;
    stats["first_token"] = b.first;
    py::dict budget;
    budget["max_avg_bits"] = I.max_avg_bits;
    budget["bits_spent"] = I.spent;
    budget["entries_done"] = I.done;
    budget["block_entries"] = entries;
    budget["bits_left"] = I.max_avg_bits > 0
                              ? py::object(py::float_(I.max_avg_bits * static_cast<double>(I.done + entries) - static_cast<double>(I.spent)))
                              : py::object(py::none());
    budget["tokens"] = b.cached;
    budget["block"] = b.index;
    budget["first_token"] = b.first;
    const py::object v = hooks.call("choose_bits", d, b.layer, kind, b.head_group, stats, budget);
    const int x = static_cast<int>(hooks.as_int(d, v, 1, 16));
    if (x != 16 && (x < lo || x > hi || x > 8))
      hooks.bad(d, v, fmt::format("outside the bit range [{}, {}] (at most 8; 16 keeps fp16)", lo, std::min(hi, 8)));
    if (x == 16 && hi < 16) hooks.bad(d, v, fmt::format("16 (fp16) is outside the bit range [{}, {}]", lo, hi));
    const long long after = I.spent + static_cast<long long>(x) * entries;
    const double allowed = I.max_avg_bits * static_cast<double>(I.done + entries);
    if (I.max_avg_bits > 0 && static_cast<double>(after) > allowed + 1e-9)
      hooks.bad(d, v, fmt::format("overspends the budget of {:g} bits per KV entry ({} bits for {} entries after this block, at most {:g})",
                                  I.max_avg_bits, after, I.done + entries, allowed));
    return x;
  });
  I.spent += static_cast<long long>(bits) * entries;
  I.done += entries;
  ++I.calls;
  I.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return bits;
}

}  // namespace kvscope
