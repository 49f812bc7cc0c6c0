#include "views/report_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include "core/util/error.h"
#include "views/report_grids.h"

namespace kvscope::views {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

bool usable(double v) { return std::isfinite(v) && v > 0; }

std::string bits_label(double bits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", bits);
  return buf;
}

}  // namespace

const char* report_metric_key(ReportMetric m) {
  switch (m) {
    case ReportMetric::AttnCosMean: return "attn_cos_mean";
    case ReportMetric::AttnCosMin: return "attn_cos_min";
    case ReportMetric::AttnNmse: return "attn_nmse";
    case ReportMetric::AttnKl: return "attn_kl_mean";
    case ReportMetric::KNmse: return "k_nmse";
    case ReportMetric::VNmse: return "v_nmse";
  }
  return "?";
}

const char* report_metric_label(ReportMetric m) {
  switch (m) {
    case ReportMetric::AttnCosMean: return "1 - attention output cosine (mean)";
    case ReportMetric::AttnCosMin: return "1 - attention output cosine (min)";
    case ReportMetric::AttnNmse: return "attention output NMSE";
    case ReportMetric::AttnKl: return "attention KL (nats, mean)";
    case ReportMetric::KNmse: return "K NMSE";
    case ReportMetric::VNmse: return "V NMSE";
  }
  return "?";
}

ReportMetric parse_report_metric(const std::string& key) {
  std::string known;
  for (ReportMetric m : kReportMetrics) {
    if (key == report_metric_key(m)) return m;
    known += (known.empty() ? "" : ", ") + std::string(report_metric_key(m));
  }
  fail("--metric", "unknown metric \"{}\" (known: {})", key, known);
}

double report_metric_value(const QuantizeReport& r, ReportMetric m) {
  bool attn = r.attn_queries > 0;
  switch (m) {
    case ReportMetric::AttnCosMean: return attn ? 1.0 - r.attn_cos_mean : kNaN;
    case ReportMetric::AttnCosMin: return attn ? 1.0 - r.attn_cos_min : kNaN;
    case ReportMetric::AttnNmse: return attn ? r.attn_nmse : kNaN;
    case ReportMetric::AttnKl: return attn ? r.attn_kl_mean : kNaN;
    case ReportMetric::KNmse: return r.k_nmse;
    case ReportMetric::VNmse: return r.v_nmse;
  }
  return kNaN;
}

std::string method_family(const std::string& policy_name, const std::string& method) {
  std::string base = policy_name.substr(0, policy_name.find('@'));
  size_t dash = base.rfind('-');
  // "<family>-<digits>" with a family that starts with a letter: a preset name.
  if (dash != std::string::npos && dash > 0 && dash + 1 < base.size() &&
      std::isalpha(static_cast<unsigned char>(base[0])) &&
      std::all_of(base.begin() + static_cast<long>(dash) + 1, base.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return base.substr(0, dash);
  return method.empty() ? base : method;
}

std::vector<DumpGroup> group_by_dump(const std::vector<ReportRun>& runs) {
  std::vector<DumpGroup> groups;
  std::map<std::string, size_t> where;
  for (int i = 0; i < static_cast<int>(runs.size()); ++i) {
    const ReportRun& r = runs[i];
    if (r.kind != "quantize") continue;
    auto [it, fresh] = where.try_emplace(r.dump_key, groups.size());
    if (fresh) {
      DumpGroup g;
      g.key = r.dump_key;
      g.model = r.report.model_id;
      g.dump = r.report.dump_path;
      g.tokens = r.report.shape.tokens;
      groups.push_back(std::move(g));
    }
    groups[it->second].runs.push_back(i);
  }
  for (auto& g : groups)
    std::stable_sort(g.runs.begin(), g.runs.end(), [&](int a, int b) {
      double x = runs[a].report.bits_per_element, y = runs[b].report.bits_per_element;
      return x != y ? x < y : runs[a].id < runs[b].id;
    });
  std::stable_sort(groups.begin(), groups.end(),
                   [](const DumpGroup& a, const DumpGroup& b) { return a.runs.size() > b.runs.size(); });
  return groups;
}

namespace {

// A rate-distortion plot: log x (bits), log y (lower is better), Pareto front, one series per
// method family in name order (stable colours across figures); points are added by rate.
struct FamilyCurves {
  PlotData d;
  std::map<std::string, Series> by_family;
  FamilyCurves(std::string title, std::string x_label, std::string y_label) {
    d.title = std::move(title);
    d.x_label = std::move(x_label);
    d.y_label = std::move(y_label);
    d.x_scale = ScaleKind::Log;
    d.y_scale = ScaleKind::Log;
    d.lower_y_is_better = true;
    d.show_pareto = true;
  }
  // Points without a finite positive rate and value cannot sit on log axes: left out.
  void add(const ReportRun& run, double x, double y) {
    if (!usable(x) || !usable(y)) return;
    Series& s = by_family[method_family(run.report.policy_name, run.report.method)];
    s.x.push_back(x);
    s.y.push_back(y);
    s.ids.push_back(run.id);
    s.labels.push_back(run.report.policy_name);
    s.annotations.push_back(run.report.policy_name);
  }
  PlotData finish() {
    for (auto& [family, s] : by_family) {
      s.name = family;
      d.series.push_back(std::move(s));
    }
    return std::move(d);
  }
};

}  // namespace

PlotData rd_curves(const std::vector<ReportRun>& runs, const DumpGroup& g, ReportMetric m) {
  FamilyCurves c(std::string("Rate-distortion: ") + report_metric_label(m), "bits / element", report_metric_label(m));
  for (int i : g.runs)  // already sorted by bits
    c.add(runs[i], runs[i].report.bits_per_element, report_metric_value(runs[i].report, m));
  return c.finish();
}

RunChoice choose_run(const std::vector<ReportRun>& runs, const std::vector<DumpGroup>& groups, ReportMetric m) {
  RunChoice c;
  if (groups.empty()) return c;
  const DumpGroup& g = groups.front();
  // Candidates: quantized (not fp16) runs with a finite value of the metric.
  std::vector<PlotPoint> pts;
  std::vector<int> idx;
  for (int i : g.runs) {
    const QuantizeReport& r = runs[i].report;
    double y = report_metric_value(r, m);
    if (r.method == "fp16" || !std::isfinite(y)) continue;
    pts.push_back({r.bits_per_element, y, {0, static_cast<int>(idx.size())}});
    idx.push_back(i);
  }
  if (pts.empty()) return c;
  struct Score {
    int front = 0;
    double cheapest = std::numeric_limits<double>::infinity();
  };
  std::map<std::string, Score> score;
  for (int i : idx) score[method_family(runs[i].report.policy_name, runs[i].report.method)];
  for (const PlotPoint& p : pareto_front(pts, true)) {
    const QuantizeReport& r = runs[idx[p.ref.index]].report;
    Score& s = score[method_family(r.policy_name, r.method)];
    ++s.front;
    s.cheapest = std::min(s.cheapest, p.x);
  }
  std::string best;
  for (const auto& [family, s] : score) {  // name order: ties keep the first name
    if (best.empty()) {
      best = family;
      continue;
    }
    const Score& b = score[best];
    if (s.front > b.front || (s.front == b.front && s.cheapest < b.cheapest)) best = family;
  }
  for (int i : idx) {
    const QuantizeReport& r = runs[i].report;
    if (method_family(r.policy_name, r.method) != best) continue;
    if (c.index < 0) {
      c.index = i;
      continue;
    }
    const QuantizeReport& o = runs[c.index].report;
    double y = report_metric_value(r, m), oy = report_metric_value(o, m);
    if (r.bits_per_element < o.bits_per_element ||
        (r.bits_per_element == o.bits_per_element && (y < oy || (y == oy && runs[i].id < runs[c.index].id))))
      c.index = i;
  }
  c.family = best;
  const ReportRun& chosen = runs[c.index];
  c.reason = "run " + std::to_string(chosen.id) + " (" + chosen.report.policy_name + ", " +
             bits_label(chosen.report.bits_per_element) + " bits/element) is the lowest-rate run of " + best +
             ", the method with the most points (" + std::to_string(score[best].front) + ") on the Pareto front of " +
             report_metric_label(m) + " over bits/element";
  return c;
}

std::vector<int> similar_rate_runs(const std::vector<ReportRun>& runs, const DumpGroup& g, int chosen,
                                   double max_ratio) {
  std::vector<int> out;
  if (chosen < 0) return out;
  out.push_back(chosen);
  const QuantizeReport& cr = runs[chosen].report;
  std::string own = method_family(cr.policy_name, cr.method);
  double lim = std::log(max_ratio);
  std::map<std::string, std::pair<double, int>> best;  // family -> (|log ratio|, index)
  for (int i : g.runs) {
    const QuantizeReport& r = runs[i].report;
    std::string fam = method_family(r.policy_name, r.method);
    if (i == chosen || fam == own || r.attn_queries == 0 || !usable(r.bits_per_element) ||
        !usable(cr.bits_per_element))
      continue;
    double dist = std::abs(std::log(r.bits_per_element / cr.bits_per_element));
    if (dist > lim + 1e-12) continue;
    auto it = best.find(fam);
    if (it == best.end() || dist < it->second.first) best[fam] = {dist, i};
  }
  for (const auto& [fam, v] : best) out.push_back(v.second);
  return out;
}

PlotData attention_layers(const std::vector<ReportRun>& runs, const std::vector<int>& which, bool worst) {
  auto name = [&](int i) {
    const QuantizeReport& r = runs[i].report;
    return r.policy_name + " (" + bits_label(r.bits_per_element) + " b)";
  };
  PlotData d;
  if (!worst) {
    // The GUI's attention view computes exactly this (mean over KV heads of 1 - out_cos_mean).
    std::vector<NamedReport> named;
    for (int i : which) named.push_back({name(i), &runs[i].report});
    d = attention_by_layer(named, false);
    d.title = "Attention output 1 - cosine per layer (mean over KV heads)";
    d.y_label = "1 - attention output cosine (mean)";
  } else {
    d.title = "Attention output 1 - cosine per layer (worst KV head)";
    d.x_label = "layer";
    d.y_label = "1 - attention output cosine (min over KV heads)";
    d.y_scale = ScaleKind::Log;
    for (int i : which) {
      const QuantizeReport& r = runs[i].report;
      Series s;
      s.name = name(i);
      int layers = r.shape.layers;
      std::vector<double> lo(layers, std::numeric_limits<double>::infinity());
      for (const auto& a : r.attention)
        if (a.layer >= 0 && a.layer < layers) lo[a.layer] = std::min(lo[a.layer], a.out_cos_mean);
      for (int l = 0; l < layers; ++l) {
        if (!std::isfinite(lo[l])) continue;
        s.x.push_back(l);
        s.y.push_back(1.0 - lo[l]);
        s.labels.push_back(s.name + ", layer " + std::to_string(l));
      }
      d.series.push_back(std::move(s));
    }
  }
  d.integer_x = true;
  return d;
}

double replay_value(const ReportRun& r, const std::string& slice, const std::string& name) {
  for (const auto& m : r.replay)
    if (m.slice == slice && m.name == name) return m.value;
  return kNaN;
}

std::vector<ReplayGroup> group_replays(const std::vector<ReportRun>& runs) {
  std::vector<ReplayGroup> groups;
  std::map<std::tuple<std::string, std::string, std::string>, size_t> where;
  for (int i = 0; i < static_cast<int>(runs.size()); ++i) {
    const ReportRun& r = runs[i];
    if (r.kind != "replay") continue;
    std::set<std::string> seen;
    for (const auto& m : r.replay) {
      if (!seen.insert(m.slice).second) continue;
      auto [it, fresh] = where.try_emplace({r.report.model_id, r.workload, m.slice}, groups.size());
      if (fresh) groups.push_back({r.report.model_id, r.workload, m.slice, {}});
      groups[it->second].runs.push_back(i);
    }
  }
  for (auto& g : groups)
    std::stable_sort(g.runs.begin(), g.runs.end(), [&](int a, int b) {
      double x = replay_value(runs[a], g.slice, "avg_bits_per_kv_token");
      double y = replay_value(runs[b], g.slice, "avg_bits_per_kv_token");
      if (std::isnan(x) || std::isnan(y)) return std::isnan(y) && !std::isnan(x);  // unmeasured last
      return x != y ? x < y : runs[a].id < runs[b].id;
    });
  std::stable_sort(groups.begin(), groups.end(),
                   [](const ReplayGroup& a, const ReplayGroup& b) { return a.runs.size() > b.runs.size(); });
  return groups;
}

PlotData replay_curves(const std::vector<ReportRun>& runs, const ReplayGroup& g) {
  FamilyCurves c("Replay: next-token KL vs bits per KV entry", "bits / KV entry (stored, incl. fp16 tokens and metadata)",
                 "next-token KL to the fp16 cache (nats)");
  for (int i : g.runs)  // already sorted by bits
    c.add(runs[i], replay_value(runs[i], g.slice, "avg_bits_per_kv_token"), replay_value(runs[i], g.slice, "next_token_kl"));
  return c.finish();
}

std::vector<double> joint_values(const Heatmap& a, const Heatmap& b) {
  std::vector<double> all;
  for (const Heatmap* h : {&a, &b})
    for (double v : h->values)
      if (std::isfinite(v)) all.push_back(v);
  return all;
}

}  // namespace kvscope::views
