#include "views/runs_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

namespace kvscope::views {

const char* run_column_name(RunColumn c) {
  static const char* kNames[kRunColumnCount] = {"id",       "created",      "model",   "method", "policy",
                                                "bits/elem", "B/token",      "K NMSE",  "V NMSE", "attn cos",
                                                "greedy match", "next-token KL", "tag"};
  return kNames[static_cast<int>(c)];
}

namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// Numeric value of a column, or NaN for text columns.
double number(const RunRow& r, RunColumn c) {
  switch (c) {
    case RunColumn::Id: return static_cast<double>(r.id);
    case RunColumn::Bits: return r.bits_per_element;
    case RunColumn::BytesPerToken: return r.bytes_per_token;
    case RunColumn::KNmse: return r.k_nmse;
    case RunColumn::VNmse: return r.v_nmse;
    case RunColumn::AttnCos: return r.attn_cos;
    case RunColumn::GreedyMatch: return r.greedy_match;
    case RunColumn::NextTokenKl: return r.next_token_kl;
    default: return NAN;
  }
}

const std::string& text(const RunRow& r, RunColumn c) {
  switch (c) {
    case RunColumn::Created: return r.created;
    case RunColumn::Model: return r.model;
    case RunColumn::Method: return r.method;
    case RunColumn::Policy: return r.policy;
    default: return r.tag;
  }
}

bool is_text(RunColumn c) {
  return c == RunColumn::Created || c == RunColumn::Model || c == RunColumn::Method || c == RunColumn::Policy ||
         c == RunColumn::Tag;
}

}  // namespace

std::vector<int> filter_and_sort(const std::vector<RunRow>& rows, const std::string& filter, RunColumn column,
                                 bool ascending) {
  std::vector<std::string> words;
  std::istringstream in(lower(filter));
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<int> idx;
  for (int i = 0; i < static_cast<int>(rows.size()); ++i) {
    const RunRow& r = rows[i];
    std::string hay = lower(std::to_string(r.id) + " " + r.created + " " + r.model + " " + r.dump + " " + r.method +
                            " " + r.policy + " " + r.tag + " " + r.note);
    bool keep = std::all_of(words.begin(), words.end(), [&](const std::string& w) { return hay.find(w) != std::string::npos; });
    if (keep) idx.push_back(i);
  }
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
    if (is_text(column)) {
      const std::string &x = text(rows[a], column), &y = text(rows[b], column);
      return ascending ? x < y : y < x;
    }
    double x = number(rows[a], column), y = number(rows[b], column);
    if (std::isnan(x) || std::isnan(y)) return !std::isnan(x) && std::isnan(y);  // NaN last
    return ascending ? x < y : y < x;
  });
  return idx;
}

RunDelta run_delta(const RunRow& a, const RunRow& b) {
  return {b.bits_per_element - a.bits_per_element, b.bytes_per_token - a.bytes_per_token, b.k_nmse - a.k_nmse,
          b.v_nmse - a.v_nmse, b.attn_cos - a.attn_cos, b.greedy_match - a.greedy_match,
          b.next_token_kl - a.next_token_kl};
}

const char* rd_metric_name(RdMetric m) {
  switch (m) {
    case RdMetric::KNmse: return "K NMSE";
    case RdMetric::VNmse: return "V NMSE";
    case RdMetric::AttnCosDistance: return "1 - attention output cosine";
    case RdMetric::GreedyMatch: return "greedy match ratio (replay)";
    case RdMetric::NextTokenKl: return "next-token KL, nats (replay)";
    case RdMetric::KldP99: return "99th percentile next-token KL, nats (replay)";
  }
  return "?";
}

const char* rd_metric_key(RdMetric m) {
  switch (m) {
    case RdMetric::KNmse: return "k_nmse";
    case RdMetric::VNmse: return "v_nmse";
    case RdMetric::AttnCosDistance: return "attn_cos";
    case RdMetric::GreedyMatch: return "greedy";
    case RdMetric::NextTokenKl: return "kl";
    case RdMetric::KldP99: return "kld_p99";
  }
  return "?";
}

PlotData rd_plot(const std::vector<RunRow>& rows, RdMetric m) {
  PlotData d;
  d.title = std::string("Rate-distortion: ") + rd_metric_name(m);
  const bool replay = m == RdMetric::GreedyMatch || m == RdMetric::NextTokenKl || m == RdMetric::KldP99;  // only replay runs have these
  d.x_label = replay ? "bits / KV entry (replayed cache)" : "bits / element";
  d.y_label = rd_metric_name(m);
  d.x_scale = ScaleKind::Log;
  d.y_scale = m == RdMetric::GreedyMatch ? ScaleKind::Linear : ScaleKind::Log;
  d.lower_y_is_better = m != RdMetric::GreedyMatch;
  d.show_pareto = true;
  auto value = [m](const RunRow& r) {
    switch (m) {
      case RdMetric::KNmse: return r.k_nmse;
      case RdMetric::VNmse: return r.v_nmse;
      case RdMetric::AttnCosDistance: return 1.0 - r.attn_cos;
      case RdMetric::GreedyMatch: return r.greedy_match;
      case RdMetric::NextTokenKl: return r.next_token_kl;
      case RdMetric::KldP99: return r.kld_p99;
    }
    return std::nan("");
  };
  std::vector<const RunRow*> plotted;
  std::set<std::string> sources;
  for (const auto& r : rows)
    if (std::isfinite(value(r)) && std::isfinite(r.bits_per_element)) {
      plotted.push_back(&r);
      sources.insert(r.dump);
    }
  d.show_pareto = sources.size() <= 1;  // a front across different data would compare nothing
  // Sources by their last path component, unless two share it (then whole).
  std::map<std::string, std::string> source_name;
  std::set<std::string> short_names;
  for (const auto& src : sources) {
    size_t slash = src.find_last_of('/');
    source_name[src] = slash == std::string::npos ? src : src.substr(slash + 1);
    short_names.insert(source_name[src]);
  }
  if (short_names.size() < sources.size())
    for (auto& [src, name] : source_name) name = src;
  std::map<std::string, std::vector<const RunRow*>> by_series;  // name order = stable colours
  for (const RunRow* r : plotted)
    by_series[sources.size() > 1 ? r->method + " · " + source_name[r->dump] : r->method].push_back(r);
  for (auto& [name, runs] : by_series) {
    std::stable_sort(runs.begin(), runs.end(),
                     [](const RunRow* a, const RunRow* b) { return a->bits_per_element < b->bits_per_element; });
    Series s;
    s.name = name;
    for (const RunRow* r : runs) {
      s.x.push_back(r->bits_per_element);
      s.y.push_back(value(*r));
      s.ids.push_back(r->id);
      s.labels.push_back("run " + std::to_string(r->id) + ": " + r->policy + (r->tag.empty() ? "" : " [" + r->tag + "]"));
    }
    d.series.push_back(std::move(s));
  }
  return d;
}

}  // namespace kvscope::views
