#pragma once
// `kvscope report` without the window: which runs, which figures (their data, file names and
// sizes) and the Markdown that embeds them. The figures are drawn by FigureRenderer with the
// views/ widgets; everything here is testable without a display.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "storage/export.h"
#include "storage/run_store.h"
#include "views/heatmap_model.h"
#include "views/plot_model.h"
#include "views/report_model.h"

namespace kvscope::gui {

struct ReportOptions {
  std::string db;                 // shown in the report
  std::string model, tag;         // filters (substring of the model id / exact tag); "" = all
  std::optional<int64_t> run;     // the heatmap run; default: choose_run
  views::ReportMetric metric = views::ReportMetric::AttnCosMean;
};

// Finished runs matching the filters, oldest first, plus --run if it was filtered out.
// Errors (one line, naming the database): no runs match; --run does not exist, is a replay run
// or did not finish.
std::vector<views::ReportRun> load_report_runs(RunStore& store, const ReportOptions& o);

struct ReportFigure {
  enum class Kind { Plot, HeadHeatmaps };
  Kind kind = Kind::Plot;
  std::string file;  // name inside the output directory
  std::string caption;
  views::PlotData plot;                  // Kind::Plot
  std::string header;                    // Kind::HeadHeatmaps: one line above the maps
  views::Heatmap k, v;                   // Kind::HeadHeatmaps, on one colour scale
  views::ValueScale scale;
};

struct ReportPlan {
  std::vector<views::ReportRun> runs;
  std::vector<views::DumpGroup> groups;
  int chosen = -1;                  // index into runs (-1: no quantize run to show)
  std::string chosen_reason;
  std::vector<int> overlay;         // chosen first, then runs of other families at a similar rate
  std::vector<ReportFigure> figures;
  std::string markdown;             // embeds every figure by its file name
};

// Quantize runs give the rate-distortion, heatmap and per-layer sections; replay runs the replay
// figures (next-token KL vs bits per KV entry per model and workload slice) and table.
ReportPlan plan_report(std::vector<views::ReportRun> runs, const ReportOptions& o);

// The tables the report prints (Markdown through storage/export.h).
Table report_summary_table(const std::vector<views::ReportRun>& runs, const std::vector<int>& order);
Table report_layer_table(const views::ReportRun& run);   // per layer: K/V NMSE, attention cos mean/min
Table report_replay_table(const std::vector<views::ReportRun>& runs);  // one row per (run, slice)

}  // namespace kvscope::gui
