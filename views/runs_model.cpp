#include "views/runs_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <sstream>

namespace kvscope::views {

const char* run_column_name(RunColumn c) {
  static const char* kNames[kRunColumnCount] = {"id",     "created", "model",   "method", "policy",       "bits/elem",
                                                "B/token", "K NMSE", "V NMSE", "attn cos", "greedy match", "tag"};
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
          b.v_nmse - a.v_nmse, b.attn_cos - a.attn_cos, b.greedy_match - a.greedy_match};
}

const char* rd_metric_name(RdMetric m) {
  switch (m) {
    case RdMetric::KNmse: return "K NMSE";
    case RdMetric::VNmse: return "V NMSE";
    case RdMetric::AttnCosDistance: return "1 - attention output cosine";
    case RdMetric::GreedyMatch: return "greedy match ratio";
  }
  return "?";
}

PlotData rd_plot(const std::vector<RunRow>& rows, RdMetric m) {
  PlotData d;
  d.title = std::string("Rate-distortion: ") + rd_metric_name(m);
  d.x_label = "bits / element";
  d.y_label = rd_metric_name(m);
  d.x_scale = ScaleKind::Log;
  d.y_scale = m == RdMetric::GreedyMatch ? ScaleKind::Linear : ScaleKind::Log;
  d.lower_y_is_better = m != RdMetric::GreedyMatch;
  d.show_pareto = true;
  std::map<std::string, std::vector<const RunRow*>> by_method;
  for (const auto& r : rows) by_method[r.method].push_back(&r);
  for (auto& [method, runs] : by_method) {
    std::stable_sort(runs.begin(), runs.end(),
                     [](const RunRow* a, const RunRow* b) { return a->bits_per_element < b->bits_per_element; });
    Series s;
    s.name = method;
    for (const RunRow* r : runs) {
      double y = m == RdMetric::KNmse ? r->k_nmse
               : m == RdMetric::VNmse ? r->v_nmse
               : m == RdMetric::AttnCosDistance ? 1.0 - r->attn_cos
                                                 : r->greedy_match;
      if (!std::isfinite(y)) continue;
      s.x.push_back(r->bits_per_element);
      s.y.push_back(y);
      s.ids.push_back(r->id);
      s.labels.push_back("run " + std::to_string(r->id) + ": " + r->policy + (r->tag.empty() ? "" : " [" + r->tag + "]"));
    }
    d.series.push_back(std::move(s));
  }
  return d;
}

}  // namespace kvscope::views
