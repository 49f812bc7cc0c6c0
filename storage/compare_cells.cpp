#include "storage/compare_cells.h"

#include <cmath>
#include <map>
#include <tuple>
#include <set>

#include <fmt/format.h>

#include "core/util/error.h"
#include "storage/run_store.h"

namespace kvscope {

namespace {

// What times the run rather than measures its result.
const std::set<std::string> kTimingReplayMetrics = {"decode_tokens_per_s", "ref_decode_tokens_per_s",
                                                    "prefill_latency_ms", "calibration_cost_s"};

std::map<std::string, std::vector<StoredRun>> cells_of(const std::string& path) {
  RunStore store(path, RunStoreOptions{.read_only = true});
  std::map<std::string, std::vector<StoredRun>> out;
  for (const auto& l : store.list_runs()) {
    StoredRun run = store.load_run(l.id);
    if (run.cell_hash.empty()) continue;
    std::string key = run.cell_hash;
    out[key].push_back(std::move(run));
  }
  return out;
}

class Differ {
 public:
  Differ(double tol, std::vector<std::string>& out, std::string cell) : tol_(tol), out_(out), cell_(std::move(cell)) {}

  void num(const std::string& what, double a, double b) {
    const bool same = (std::isnan(a) && std::isnan(b)) || a == b ||
                      (tol_ > 0 && std::fabs(a - b) <= tol_ * std::max(std::fabs(a), std::fabs(b)));
    if (!same) add(fmt::format("{}: {:.17g} != {:.17g}", what, a, b));
  }
  void text(const std::string& what, const std::string& a, const std::string& b) {
    if (a != b) add(fmt::format("{}: \"{}\" != \"{}\"", what, a, b));
  }
  void count(const std::string& what, size_t a, size_t b) {
    if (a != b) add(fmt::format("{}: {} rows != {} rows", what, a, b));
  }
  bool any() const { return n_ > 0; }

 private:
  void add(const std::string& line) {
    ++n_;
    if (n_ <= kMaxLines) out_.push_back(cell_ + ": " + line);
    else if (n_ == kMaxLines + 1) out_.push_back(cell_ + ": ... (more differences not shown)");
  }
  static constexpr int kMaxLines = 20;
  double tol_;
  std::vector<std::string>& out_;
  std::string cell_;
  int n_ = 0;
};

void compare_runs(const StoredRun& x, const StoredRun& y, Differ& d) {
  const QuantizeReport &a = x.report, &b = y.report;
  d.text("kind", x.kind, y.kind);
  d.text("status", x.status, y.status);
  d.text("method", a.method, b.method);
  d.text("policy_name", a.policy_name, b.policy_name);
  d.text("policy", a.policy_json, b.policy_json);
  d.text("dump_hash", x.dump_hash, y.dump_hash);
  d.text("workload", x.workload, y.workload);
  d.num("layers", a.shape.layers, b.shape.layers);
  d.num("kv_heads", a.shape.kv_heads, b.shape.kv_heads);
  d.num("q_heads", a.shape.q_heads, b.shape.q_heads);
  d.num("head_dim", a.shape.head_dim, b.shape.head_dim);
  d.num("tokens", a.shape.tokens, b.shape.tokens);
#define KV_NUM(f) d.num(#f, a.f, b.f)
  KV_NUM(bits_per_element);
  KV_NUM(k_bits_per_element);
  KV_NUM(v_bits_per_element);
  KV_NUM(bytes_per_token);
  KV_NUM(static_bytes);
  KV_NUM(fp16_bytes_per_token);
  KV_NUM(fixed_width_bits_per_element);
  KV_NUM(k_nmse);
  KV_NUM(v_nmse);
  KV_NUM(k_cos);
  KV_NUM(v_cos);
  KV_NUM(attn_cos_mean);
  KV_NUM(attn_cos_min);
  KV_NUM(attn_nmse);
  KV_NUM(attn_kl_mean);
  KV_NUM(attn_queries);
#undef KV_NUM
  d.count("per_head", a.per_head.size(), b.per_head.size());
  for (size_t i = 0; i < std::min(a.per_head.size(), b.per_head.size()); ++i) {
    const HeadMetrics &p = a.per_head[i], &q = b.per_head[i];
    const std::string at = fmt::format("head L{} H{} {}", p.layer, p.head, p.kind);
    if (p.layer != q.layer || p.head != q.head || p.kind != q.kind) {
      d.text("per_head[" + std::to_string(i) + "]", at, fmt::format("head L{} H{} {}", q.layer, q.head, q.kind));
      continue;
    }
    d.num(at + " nmse", p.nmse, q.nmse);
    d.num(at + " cos", p.cos, q.cos);
    d.num(at + " mse", p.mse, q.mse);
    d.num(at + " max_abs", p.max_abs, q.max_abs);
    d.num(at + " bits", double(p.bits), double(q.bits));
    d.num(at + " elements", double(p.elements), double(q.elements));
    d.num(at + " full_precision", p.full_precision, q.full_precision);
  }
  d.count("attention", a.attention.size(), b.attention.size());
  for (size_t i = 0; i < std::min(a.attention.size(), b.attention.size()); ++i) {
    const AttentionMetrics &p = a.attention[i], &q = b.attention[i];
    const std::string at = fmt::format("attention L{} H{}", p.layer, p.head);
    if (p.layer != q.layer || p.head != q.head) {
      d.text("attention[" + std::to_string(i) + "]", at, fmt::format("attention L{} H{}", q.layer, q.head));
      continue;
    }
    d.num(at + " out_cos_mean", p.out_cos_mean, q.out_cos_mean);
    d.num(at + " out_cos_min", p.out_cos_min, q.out_cos_min);
    d.num(at + " out_nmse", p.out_nmse, q.out_nmse);
    d.num(at + " kl_mean", p.kl_mean, q.kl_mean);
    d.num(at + " prob_cos_mean", p.prob_cos_mean, q.prob_cos_mean);
    d.num(at + " logit_rmse", p.logit_rmse, q.logit_rmse);
    d.num(at + " logit_max_abs", p.logit_max_abs, q.logit_max_abs);
  }
  d.count("rd_points", x.rd_points.size(), y.rd_points.size());
  for (size_t i = 0; i < std::min(x.rd_points.size(), y.rd_points.size()); ++i) {
    const RdPoint &p = x.rd_points[i], &q = y.rd_points[i];
    const std::string at = fmt::format("rd_point {} {}", p.method, p.metric);
    d.text(fmt::format("rd_points[{}]", i), p.method + " " + p.metric, q.method + " " + q.metric);
    d.num(at + " rate", p.rate, q.rate);
    d.num(at + " value", p.value, q.value);
  }
  auto replay_map = [](const StoredRun& r) {
    std::map<std::pair<std::string, std::string>, std::vector<double>> m;
    for (const auto& x : r.replay_metrics)
      if (!kTimingReplayMetrics.count(x.name)) m[{x.slice, x.name}].push_back(x.value);
    return m;
  };
  const auto ma = replay_map(x), mb = replay_map(y);
  for (const auto& [key, va] : ma) {
    const std::string at = "replay " + (key.first.empty() ? "" : key.first + " ") + key.second;
    auto it = mb.find(key);
    if (it == mb.end()) {
      d.text(at, "present", "missing");
      continue;
    }
    d.count(at, va.size(), it->second.size());
    for (size_t i = 0; i < std::min(va.size(), it->second.size()); ++i) d.num(at, va[i], it->second[i]);
  }
  for (const auto& [key, vb] : mb)
    if (!ma.count(key)) d.text("replay " + key.first + " " + key.second, "missing", "present");
  // Per-item rows and KLD quantiles (schema 4), in stored order.
  d.count("replay items", x.replay_items.size(), y.replay_items.size());
  for (size_t i = 0; i < std::min(x.replay_items.size(), y.replay_items.size()); ++i) {
    const ReplayItemRow &p = x.replay_items[i], &q = y.replay_items[i];
    const std::string at = fmt::format("replay item {} {}", p.slice, p.item);
    if (p.slice != q.slice || p.item != q.item) d.text(at, p.slice + " " + std::to_string(p.item), q.slice + " " + std::to_string(q.item));
    d.count(at + " prompt_tokens", p.prompt_tokens, q.prompt_tokens);
    d.count(at + " steps", p.steps, q.steps);
    for (const auto& [name, a, b] : {std::tuple{"score", p.score, q.score}, std::tuple{"score_ref", p.score_ref, q.score_ref},
                                     std::tuple{"kld_mean", p.kld_mean, q.kld_mean}, std::tuple{"kld_p99", p.kld_p99, q.kld_p99},
                                     std::tuple{"kld_max", p.kld_max, q.kld_max}, std::tuple{"dp_mean", p.dp_mean, q.dp_mean},
                                     std::tuple{"same_top", p.same_top, q.same_top}, std::tuple{"ppl", p.ppl, q.ppl},
                                     std::tuple{"ppl_ref", p.ppl_ref, q.ppl_ref}})
      d.num(at + " " + name, a, b);
    // Schema 5: the rendered chat prompt, its ids and a script's per-block bits must agree exactly.
    for (const auto& [name, a, b] : {std::tuple{"chat_text", &p.chat_text, &q.chat_text},
                                     std::tuple{"token_ids", &p.token_ids, &q.token_ids}, std::tuple{"blocks", &p.blocks, &q.blocks}})
      if (*a != *b) d.text(at + " " + name, fmt::format("{} chars", a->size()), fmt::format("{} chars (differs)", b->size()));
  }
  d.count("kld quantiles", x.kld_quantiles.size(), y.kld_quantiles.size());
  for (size_t i = 0; i < std::min(x.kld_quantiles.size(), y.kld_quantiles.size()); ++i)
    d.num(fmt::format("kld quantile {} {}", x.kld_quantiles[i].slice, x.kld_quantiles[i].fraction), x.kld_quantiles[i].kld,
          y.kld_quantiles[i].kld);
}

}  // namespace

CellComparison compare_cell_stores(const std::string& a_path, const std::string& b_path, double rel_tol) {
  if (!(rel_tol >= 0)) fail("--rel-tol", "must be >= 0");
  const auto a = cells_of(a_path), b = cells_of(b_path);
  std::set<std::string> hashes;
  for (const auto& [h, runs] : a) hashes.insert(h);
  for (const auto& [h, runs] : b) hashes.insert(h);
  CellComparison out;
  out.cells = static_cast<int>(hashes.size());
  for (const auto& h : hashes) {
    const auto ia = a.find(h), ib = b.find(h);
    const size_t na = ia == a.end() ? 0 : ia->second.size(), nb = ib == b.end() ? 0 : ib->second.size();
    const StoredRun* any = na ? &ia->second.front() : &ib->second.front();
    const std::string cell = fmt::format("cell {} ({} {})", h, any->report.policy_name,
                                         any->kind == "replay" ? any->report.model_id + " " + any->workload
                                                               : any->report.dump_path);
    if (na != 1 || nb != 1) {
      ++out.differing;
      out.differences.push_back(fmt::format("{}: stored {} time(s) in {}, {} time(s) in {}", cell, na, a_path, nb, b_path));
      continue;
    }
    Differ d(rel_tol, out.differences, cell);
    compare_runs(ia->second.front(), ib->second.front(), d);
    if (d.any()) ++out.differing;
  }
  return out;
}

}  // namespace kvscope
