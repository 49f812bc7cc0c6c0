#include "app/gui/report_doc.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>

#include "core/replay/kl_stats.h"
#include "core/util/error.h"
#include "views/report_grids.h"

namespace kvscope::gui {

namespace {

using views::ReportMetric;
using views::ReportRun;

views::ReportRun to_report_run(StoredRun&& s) {
  ReportRun r;
  r.id = s.id;
  r.kind = s.kind;
  r.created = s.created_at;
  r.workload = s.workload;
  r.dump_key = !s.dump_hash.empty() ? s.dump_hash : s.report.dump_path;
  r.tags = std::move(s.tags);
  r.report = std::move(s.report);
  for (const auto& m : s.replay_metrics) r.replay.push_back({m.slice, m.name, m.value});
  return r;
}

StoredRun to_stored(const ReportRun& r) {
  StoredRun s;
  s.id = r.id;
  s.kind = r.kind;
  s.created_at = r.created;
  s.tags = r.tags;
  s.report = r.report;
  return s;
}

// The named columns of `t`, in that order.
Table select_columns(const Table& t, const std::vector<std::string>& names) {
  std::vector<size_t> at;
  for (const auto& n : names) {
    auto it = std::find(t.header.begin(), t.header.end(), n);
    if (it == t.header.end()) throw Error("report: table " + t.name + " has no column " + n);
    at.push_back(static_cast<size_t>(it - t.header.begin()));
  }
  Table out{t.name, names, {}};
  for (const auto& row : t.rows) {
    std::vector<Cell> r;
    for (size_t i : at) r.push_back(row[i]);
    out.rows.push_back(std::move(r));
  }
  return out;
}

// Inline code in Markdown (policy names, paths): backticks inside would end it.
std::string code(std::string s) {
  std::replace(s.begin(), s.end(), '`', '\'');
  std::replace(s.begin(), s.end(), '\n', ' ');
  return "`" + s + "`";
}

std::string bits(double b) { return fmt::format("{:.3g}", b); }

std::string now_utc() { return fmt::format("{:%Y-%m-%d %H:%M} UTC", fmt::gmtime(std::time(nullptr))); }

// The last path component of a model id (figure titles have little room; the Markdown gives the
// whole id).
std::string short_model(const std::string& model);

// "<model> on <dump file> (<tokens> tokens, <n> runs)"; `shorten`: short_model.
std::string dump_title(const views::DumpGroup& g, bool shorten = false) {
  std::string name = std::filesystem::path(g.dump).filename().string();
  std::string model = shorten ? short_model(g.model) : g.model;
  return fmt::format("{} on {} ({} tokens, {} runs)", model.empty() ? "(unknown model)" : model,
                     name.empty() ? "(unknown dump)" : name, g.tokens, g.runs.size());
}

std::string short_model(const std::string& model) {
  std::string last = std::filesystem::path(model).filename().string();
  return last.empty() ? model : last;
}

// "Pareto front of <label>: `a` (2 b, 0.01), ...\n\n", or nothing when no point is plotted.
std::string front_sentence(const views::PlotData& plot, const std::string& label) {
  auto front = views::pareto_front(views::all_points(plot), true);
  if (front.empty()) return "";
  std::string md = fmt::format("Pareto front of {}: ", label);
  for (size_t i = 0; i < front.size(); ++i) {
    const views::Series& s = plot.series[front[i].ref.series];
    md += fmt::format("{}{} ({} b, {:.4g})", i ? ", " : "", code(s.labels[front[i].ref.index]), bits(front[i].x),
                      front[i].y);
  }
  return md + ".\n\n";
}

// "<intro><`a`, `b`>.\n\n", or nothing when the list is empty.
std::string listed(const std::string& intro, const std::vector<std::string>& names) {
  if (names.empty()) return "";
  std::string md = intro;
  for (size_t i = 0; i < names.size(); ++i) md += (i ? ", " : "") + names[i];
  return md + ".\n\n";
}

}  // namespace

std::vector<ReportRun> load_report_runs(RunStore& store, const ReportOptions& o) {
  RunFilter f;
  f.model = o.model;
  f.tag = o.tag;
  f.status = "done";
  std::vector<RunListing> listed = store.list_runs(f);
  std::reverse(listed.begin(), listed.end());  // oldest first
  std::vector<ReportRun> runs;
  bool have_chosen = false;
  for (const RunListing& l : listed) {
    runs.push_back(to_report_run(store.load_run(l.id)));
    have_chosen |= o.run && l.id == *o.run;
  }
  if (o.run && !have_chosen) {
    StoredRun s;
    try {
      s = store.load_run(*o.run);
    } catch (const Error&) {
      fail(store.path(), "--run {}: there is no run {} in this store", *o.run, *o.run);
    }
    if (s.status != "done") fail(store.path(), "--run {}: the run did not finish (status {})", *o.run, s.status);
    runs.push_back(to_report_run(std::move(s)));
  }
  if (o.run) {
    auto it = std::find_if(runs.begin(), runs.end(), [&](const ReportRun& r) { return r.id == *o.run; });
    if (it->kind != "quantize")
      fail(store.path(), "--run {}: a {} run has no per-head metrics; name a quantize run", *o.run, it->kind);
  }
  if (runs.empty()) {
    std::string which = o.model.empty() && o.tag.empty()
                            ? std::string("no finished runs")
                            : fmt::format("no finished runs match{}{}", o.model.empty() ? "" : " --model " + o.model,
                                          o.tag.empty() ? "" : " --tag " + o.tag);
    fail(store.path(), "{} (nothing to report; add runs with kvscope quantize --db {})", which, store.path());
  }
  return runs;
}

Table report_summary_table(const std::vector<ReportRun>& runs, const std::vector<int>& order) {
  std::vector<StoredRun> s;
  for (int i : order) s.push_back(to_stored(runs[i]));
  return select_columns(summary_table(s), {"run", "model", "method", "policy", "bits_per_element", "k_nmse", "v_nmse",
                                           "attn_cos_mean", "attn_cos_min", "attn_kl_mean", "wall_seconds"});
}

Table report_layer_table(const ReportRun& run) {
  return select_columns(per_layer_table({to_stored(run)}),
                        {"layer", "k_bits_per_element", "v_bits_per_element", "k_nmse", "v_nmse", "fp16_heads",
                         "attn_cos_mean", "attn_cos_min", "attn_kl_mean"});
}

// The llama.cpp statistics (kl_stat_fields) have their own table (report_kl_table).
static bool is_kl_stat_field(const std::string& name) {
  static const std::set<std::string> names = [] {
    std::set<std::string> s;
    for (const auto& [n, v] : kl_stat_fields(KlStats{})) s.insert(n);
    return s;
  }();
  return names.count(name) > 0;
}

// The slices of replay runs in order of first appearance.
static std::vector<std::string> slices_of(const ReportRun& r) {
  std::vector<std::string> slices;
  for (const auto& m : r.replay)
    if (std::find(slices.begin(), slices.end(), m.slice) == slices.end()) slices.push_back(m.slice);
  return slices;
}

// One row per replay slice with llama.cpp's headline statistics, "value ± uncertainty".
static Table report_kl_table(const std::vector<ReportRun>& runs) {
  Table t{"replay_kl",
          {"run", "method", "policy", "slice", "steps", "Mean KLD", "99.0% KLD", "99.9% KLD", "Maximum KLD", "Mean Δp (%)",
           "RMS Δp (%)", "Same top p (%)", "PPL(Q)/PPL(base)", "Cor(ln PPL) (%)"},
          {}};
  for (const auto& r : runs) {
    if (r.kind != "replay") continue;
    for (const auto& slice : slices_of(r)) {
      std::vector<std::pair<std::string, double>> fields;
      for (const auto& m : r.replay)
        if (m.slice == slice) fields.emplace_back(m.name, m.value);
      KlStats k;
      if (!kl_stats_from_fields(fields, k)) continue;  // stored before the statistics existed
      auto pm = [](double v, double e, double scale, int digits) {
        return Cell::str(fmt::format("{:.{}f} ± {:.{}f}", scale * v, digits, scale * e, digits));
      };
      t.rows.push_back({Cell::whole(r.id), Cell::str(r.report.method), Cell::str(r.report.policy_name),
                        Cell::str(slice.empty() ? "(all)" : slice), Cell::whole(k.count), pm(k.kld_mean, k.kld_err, 1, 6),
                        Cell::number(k.kld_pct[2]), Cell::number(k.kld_pct[1]), Cell::number(k.kld_pct[0]),
                        pm(k.dp_mean, k.dp_err, 100, 3), pm(k.dp_rms, k.dp_rms_err, 100, 3),
                        pm(k.same_top, k.same_top_err, 100, 3), pm(k.ppl_ratio, k.ppl_ratio_err, 1, 6),
                        Cell::number(100 * k.ln_ppl_cor)});
    }
  }
  return t;
}

Table report_replay_table(const std::vector<ReportRun>& runs) {
  std::vector<std::string> names;  // metric names in order of first appearance
  for (const auto& r : runs)
    if (r.kind == "replay")
      for (const auto& m : r.replay)
        if (!is_kl_stat_field(m.name) && std::find(names.begin(), names.end(), m.name) == names.end()) names.push_back(m.name);
  // The columns one compares first lead (the table has ~20); the rest keep their order.
  static const std::vector<std::string> kLead = {"avg_bits_per_kv_token", "quality_main", "quality_delta_vs_ref",
                                                 "next_token_kl",         "ppl_delta",    "greedy_match_ratio",
                                                 "cache_error",           "peak_kv_memory_mb"};
  auto rank = [&](const std::string& n) {
    auto it = std::find(kLead.begin(), kLead.end(), n);
    return static_cast<size_t>(it - kLead.begin());  // kLead.size() for the others
  };
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
  Table t{"replay", {"run", "model", "method", "policy", "workload", "slice"}, {}};
  t.header.insert(t.header.end(), names.begin(), names.end());
  for (const auto& r : runs) {
    if (r.kind != "replay") continue;
    std::vector<std::string> slices;
    for (const auto& m : r.replay)
      if (std::find(slices.begin(), slices.end(), m.slice) == slices.end()) slices.push_back(m.slice);
    for (const auto& slice : slices) {
      std::vector<Cell> row = {Cell::whole(r.id), Cell::str(r.report.model_id), Cell::str(r.report.method),
                               Cell::str(r.report.policy_name), Cell::str(r.workload),
                               Cell::str(slice.empty() ? "(all)" : slice)};
      for (const auto& name : names) {
        auto it = std::find_if(r.replay.begin(), r.replay.end(),
                               [&](const views::ReportReplayMetric& m) { return m.slice == slice && m.name == name; });
        row.push_back(it == r.replay.end() ? Cell::empty() : Cell::number(it->value));
      }
      t.rows.push_back(std::move(row));
    }
  }
  return t;
}

namespace {

// Rate-distortion per dump, the chosen run's heatmaps and per-layer attention, the summary table.
void plan_quantize_sections(ReportPlan& p, const ReportOptions& o, std::string& md) {
  const ReportMetric m = o.metric;
  const std::string mkey = views::report_metric_key(m);
  // The run the heatmaps and per-layer plots are about.
  const views::DumpGroup* chosen_group = &p.groups.front();
  if (o.run) {
    for (int i = 0; i < static_cast<int>(p.runs.size()); ++i)
      if (p.runs[i].id == *o.run) p.chosen = i;
    for (const auto& g : p.groups)
      if (std::find(g.runs.begin(), g.runs.end(), p.chosen) != g.runs.end()) chosen_group = &g;
    p.chosen_reason = fmt::format("run {} was named with --run", *o.run);
  } else {
    views::RunChoice c = views::choose_run(p.runs, p.groups, m);
    if (c.index < 0) {
      // Nothing with a finite metric (e.g. only fp16 runs): the cheapest run of the largest group.
      c.index = p.groups.front().runs.front();
      c.reason = fmt::format("run {} is the lowest-rate run (no run has a measured {})", p.runs[c.index].id, mkey);
    }
    p.chosen = c.index;
    p.chosen_reason = c.reason;
  }
  p.overlay = views::similar_rate_runs(p.runs, *chosen_group, p.chosen);

  // (a) Rate-distortion curves, per dump.
  md += "## Rate-distortion\n\n";
  md += "One curve per method family (a preset and its bit/rate variants, e.g. `uniform-4@3b`), x = measured "
        "bits per element including scales and side information, both axes logarithmic. Red rings mark the "
        "Pareto front (no other run is cheaper and at least as good).\n\n";
  std::vector<ReportMetric> rd_metrics = {m};
  if (m != ReportMetric::KNmse) rd_metrics.push_back(ReportMetric::KNmse);
  for (size_t gi = 0; gi < p.groups.size(); ++gi) {
    const views::DumpGroup& g = p.groups[gi];
    md += fmt::format("### {}\n\n", dump_title(g));
    for (ReportMetric rm : rd_metrics) {
      ReportFigure f;
      f.kind = ReportFigure::Kind::Plot;
      f.file = fmt::format("rd-{}-{}.png", gi + 1, views::report_metric_key(rm));
      f.plot = views::rd_curves(p.runs, g, rm);
      f.plot.title += "   (" + dump_title(g, true) + ")";
      f.plot.legend_outside = true;
      f.caption = fmt::format("{} vs bits/element", views::report_metric_label(rm));
      md += fmt::format("![{}]({})\n\n", f.caption, f.file);
      md += front_sentence(f.plot, views::report_metric_label(rm));
      p.figures.push_back(std::move(f));
    }
    std::vector<std::string> left_out;
    for (int i : g.runs) {
      double y = views::report_metric_value(p.runs[i].report, m);
      if (!(std::isfinite(y) && y > 0)) left_out.push_back(code(p.runs[i].report.policy_name));
    }
    md += listed(fmt::format("Not on the {} plot (no positive measured value, e.g. fp16 or no attention metrics): ", mkey),
                 left_out);
  }

  // (b) Layer x head heatmaps and (c) attention by layer, of the chosen run.
  const ReportRun& c = p.runs[p.chosen];
  md += fmt::format("## Run {}: {} ({}, {} bits/element)\n\n", c.id, code(c.report.policy_name), c.report.method,
                    bits(c.report.bits_per_element));
  md += "Why this run: " + p.chosen_reason + ".\n\n";
  {
    ReportFigure f;
    f.kind = ReportFigure::Kind::HeadHeatmaps;
    f.file = fmt::format("heads-run-{}.png", c.id);
    f.k = views::head_heatmap(c.report, views::HeadMetric::Nmse, 'k');
    f.v = views::head_heatmap(c.report, views::HeadMetric::Nmse, 'v');
    f.scale = views::fit_scale(views::joint_values(f.k, f.v), views::ScaleKind::Log);
    f.header = fmt::format("run {}: {} ({}), {} bits/element, {}", c.id, c.report.policy_name, c.report.method,
                           bits(c.report.bits_per_element), dump_title(*chosen_group, true));
    f.caption = fmt::format("K and V NMSE per layer and KV head, run {}", c.id);
    md += "### Layer x KV head error\n\n";
    md += "K NMSE (left) and V NMSE (right) on one logarithmic colour scale; rows are layers, columns KV heads.\n\n";
    md += fmt::format("![{}]({})\n\n", f.caption, f.file);
    views::CellRef hk = views::hottest_cell(f.k), hv = views::hottest_cell(f.v);
    if (hk.valid())
      md += fmt::format("Worst K head: layer {} head {} (NMSE {:.4g}). ", hk.row, hk.col, f.k.at(hk.row, hk.col));
    if (hv.valid())
      md += fmt::format("Worst V head: layer {} head {} (NMSE {:.4g}).", hv.row, hv.col, f.v.at(hv.row, hv.col));
    md += "\n\n";
    p.figures.push_back(std::move(f));
  }
  md += "### Attention output by layer\n\n";
  if (c.report.attn_queries == 0) {
    md += "This run has no attention metrics (quantized with --no-attention or a dump without queries).\n\n";
  } else {
    if (p.overlay.size() > 1) {
      md += "Overlaid: the runs of other method families closest in bits/element (within 1.5x): ";
      for (size_t i = 1; i < p.overlay.size(); ++i) {
        const ReportRun& r = p.runs[p.overlay[i]];
        md += fmt::format("{}run {} {} ({} b)", i > 1 ? ", " : "", r.id, code(r.report.policy_name),
                          bits(r.report.bits_per_element));
      }
      md += ".\n\n";
    } else {
      md += "No run of another method family lies within 1.5x of this run's bits/element; it is shown alone.\n\n";
    }
    for (bool worst : {false, true}) {
      ReportFigure f;
      f.kind = ReportFigure::Kind::Plot;
      f.file = fmt::format("attn-layers-{}-run-{}.png", worst ? "worst" : "mean", c.id);
      f.plot = views::attention_layers(p.runs, p.overlay, worst);
      f.plot.legend_outside = true;
      f.caption = worst ? "1 - attention output cosine per layer, worst KV head"
                        : "1 - attention output cosine per layer, mean over KV heads";
      md += fmt::format("![{}]({})\n\n", f.caption, f.file);
      p.figures.push_back(std::move(f));
    }
  }
  md += fmt::format("Per layer, run {} (NMSE over the layer's heads, cosines over heads and sampled queries):\n\n", c.id);
  md += to_markdown(report_layer_table(c)) + "\n";

  // (d) Tables.
  md += "## Summary\n\n";
  std::vector<int> order;
  for (const auto& g : p.groups) order.insert(order.end(), g.runs.begin(), g.runs.end());
  md += "Quantize runs, by dump and bits/element. `attn_cos_*`: cosine between the attention outputs with the "
        "original and the quantized cache; `attn_kl_mean`: KL divergence of the attention rows (nats).\n\n";
  md += to_markdown(report_summary_table(p.runs, order)) + "\n";
}

// Next-token KL vs bits per KV entry for each (model, workload, slice), then the replay table.
void plan_replay_section(ReportPlan& p, std::string& md) {
  constexpr size_t kMaxFigures = 12;  // a 90-cell sweep has ~20 slices: the table holds the rest
  const std::vector<views::ReplayGroup> groups = views::group_replays(p.runs);
  md += "## Replay\n\n";
  md += "Decoding with the quantized cache against the fp16 cache on the same prompts: `next_token_kl` (mean "
        "over steps of KL(fp16 || quantized) of the next-token distributions, nats) against `avg_bits_per_kv_token` "
        "(stored bits per cached K/V element, including fp16 windows, sinks and scales), one figure per model and "
        "workload slice, one curve per method family, both axes logarithmic. Red rings mark the Pareto front. "
        "Metric definitions: docs/REPLAY.md.\n\n";
  for (size_t gi = 0; gi < groups.size() && gi < kMaxFigures; ++gi) {
    const views::ReplayGroup& g = groups[gi];
    const std::string slice = g.slice.empty() ? "(all)" : g.slice;
    md += fmt::format("### {} · {} · {} ({} runs)\n\n", g.model.empty() ? "(unknown model)" : g.model, code(g.workload),
                      slice, g.runs.size());
    ReportFigure f;
    f.kind = ReportFigure::Kind::Plot;
    f.file = fmt::format("replay-{}-kl.png", gi + 1);
    f.plot = views::replay_curves(p.runs, g);
    f.plot.title += fmt::format("   ({} · {})", short_model(g.model), slice);
    f.plot.legend_outside = true;
    f.caption = fmt::format("next-token KL vs bits per KV entry, {}", slice);
    md += fmt::format("![{}]({})\n\n", f.caption, f.file);
    md += front_sentence(f.plot, "next-token KL");
    std::vector<std::string> left_out;
    for (int i : g.runs) {
      const double kl = views::replay_value(p.runs[i], g.slice, "next_token_kl");
      if (!(std::isfinite(kl) && kl > 0)) left_out.push_back(code(p.runs[i].report.policy_name));
    }
    md += listed("Not on the plot (KL 0: decodes exactly as the fp16 cache, e.g. fp16, or KIVI while the prompt fits "
                 "its fp16 window; or not measured): ",
                 left_out);
    p.figures.push_back(std::move(f));
  }
  if (groups.size() > kMaxFigures)
    md += fmt::format("{} more slices are in the table only.\n\n", groups.size() - kMaxFigures);
  md += to_markdown(report_replay_table(p.runs)) + "\n";
  const Table kl = report_kl_table(p.runs);
  if (!kl.rows.empty()) {
    md += "### KL divergence and token probability statistics\n\n"
          "As `llama-perplexity --kl-divergence` reports them, over each slice's scored steps: KLD of the next-token "
          "distribution (fp16 cache || quantized cache, nats) with its standard error and percentiles, Δp = change of "
          "the fed token's probability, the fraction of steps with the same top token, and PPL(Q)/PPL(base); "
          "definitions in docs/REPLAY.md.\n\n";
    md += to_markdown(kl) + "\n";
  }
}

}  // namespace

ReportPlan plan_report(std::vector<ReportRun> runs, const ReportOptions& o) {
  ReportPlan p;
  p.runs = std::move(runs);
  p.groups = views::group_by_dump(p.runs);
  std::string md;
  md += "# kvscope report\n\n";
  int quantize = 0, replay = 0;
  for (const auto& r : p.runs) (r.kind == "replay" ? replay : quantize) += 1;
  md += fmt::format("Generated {} by kvscope {} from {}", now_utc(), KVSCOPE_VERSION, code(o.db));
  if (!o.model.empty()) md += fmt::format(", model matching {}", code(o.model));
  if (!o.tag.empty()) md += fmt::format(", tag {}", code(o.tag));
  std::vector<std::string> parts;
  if (quantize)
    parts.push_back(fmt::format("{} quantize run{} on {} dump{}", quantize, quantize == 1 ? "" : "s", p.groups.size(),
                                p.groups.size() == 1 ? "" : "s"));
  if (replay) parts.push_back(fmt::format("{} replay run{}", replay, replay == 1 ? "" : "s"));
  for (size_t i = 0; i < parts.size(); ++i) md += (i ? ", " : ": ") + parts[i];
  md += ".";
  if (quantize)
    md += fmt::format(" Distortion metric: {} ({}).", code(views::report_metric_key(o.metric)),
                      views::report_metric_label(o.metric));
  md += "\n\n";
  if (!p.groups.empty()) plan_quantize_sections(p, o, md);
  if (replay) plan_replay_section(p, md);
  p.markdown = std::move(md);
  return p;
}

}  // namespace kvscope::gui
