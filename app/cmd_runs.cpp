// kvscope runs list|show|delete|tag|note: browse and annotate the run store.
#include <algorithm>
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "app/cli.h"
#include "app/store_options.h"
#include "core/replay/block_hook.h"
#include "core/replay/kl_stats.h"
#include "storage/export.h"
#include "storage/run_store.h"

namespace kvscope::cli {
namespace {

std::string indent_text(const std::string& text, const std::string& prefix) {
  std::string out = prefix;
  for (char c : text) {
    out += c;
    if (c == '\n') out += prefix;
  }
  return out;
}

// "per-block bits (policy script): 96 blocks; K 2:40 3:8; V 2:48" (and the greedy rerun's, if any).
std::string block_bits_summary(const std::string& blocks_json) {
  std::string s;
  for (bool greedy : {false, true}) {
    const std::vector<BlockChoice> rows = parse_block_choices(blocks_json, "replay item", greedy);
    if (rows.empty()) continue;
    std::map<int, long long> hist[2];
    for (const BlockChoice& c : rows) ++hist[c.kind == 'v'][c.bits];
    s += fmt::format("{}per-block bits (policy script{}): {} blocks;", s.empty() ? "" : "\n  ", greedy ? ", greedy rerun" : "",
                     rows.size());
    for (int kind = 0; kind < 2; ++kind) {
      s += kind == 0 ? " K" : "; V";
      for (auto [b, n] : hist[kind]) s += fmt::format(" {}:{}", b, n);
    }
  }
  return s;
}

void print(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

std::string show_text(const StoredRun& run) {
  const QuantizeReport& r = run.report;
  std::string out;
  auto line = [&](const char* key, const std::string& value) {
    if (value.empty()) return;
    std::string indented;  // continuation lines of a multi-line note line up under the first
    for (char c : value) {
      indented += c;
      if (c == '\n') indented.append(16, ' ');
    }
    out += fmt::format("{:<16}{}\n", key, indented);
  };
  line("run", std::to_string(run.id));
  line("created", run.created_at);
  line("status", run.status);
  line("kind", run.kind);
  line("kvscope", run.kvscope_version);
  line("model", r.model_id);
  line("method", r.method);
  line("policy", r.policy_name);
  line("policy hash", run.policy_hash);
  line("dump", r.dump_path);
  line("dump hash", run.dump_hash);
  if (r.shape.layers) {
    // A replay run has the model's shape but no dump length: no "0 tokens".
    line("shape", fmt::format("{} layers, {} KV heads, {} query heads, head_dim {}{}", r.shape.layers, r.shape.kv_heads,
                              r.shape.q_heads, r.shape.head_dim,
                              r.shape.tokens ? fmt::format(", {} tokens", r.shape.tokens) : std::string()));
  }
  line("workload", run.workload);
  std::string tags;
  for (const auto& t : run.tags) {
    if (!tags.empty()) tags += ' ';
    tags += t;
  }
  line("tags", tags);
  line("note", run.note);
  line("origin", run.origin);
  if (run.kind == "quantize") {
    out += '\n';
    out += to_text(compare_table({run}));
    if (!r.per_head.empty()) {
      out += '\n';
      out += to_text(per_layer_table({run}));
    }
  }
  if (!run.replay_metrics.empty()) {
    // llama.cpp's statistics (kl_stat_fields) are shown as llama.cpp prints them, per slice, below the list.
    const auto stat_names = kl_stat_fields(KlStats{});
    auto is_stat = [&](const std::string& n) {
      return std::any_of(stat_names.begin(), stat_names.end(), [&](const auto& f) { return f.first == n; });
    };
    out += "\nreplay metrics\n";
    std::vector<std::string> slices;
    size_t slice_w = 24;  // long slice names (e.g. ruler_niah_multiquery_len4096) keep one space before the name
    for (const auto& m : run.replay_metrics) slice_w = std::max(slice_w, m.slice.size() + 2);
    for (const auto& m : run.replay_metrics) {
      if (std::find(slices.begin(), slices.end(), m.slice) == slices.end()) slices.push_back(m.slice);
      if (!is_stat(m.name)) out += fmt::format("  {:<{}}{:<28}{:.6g}\n", m.slice, slice_w, m.name, m.value);
    }
    for (const auto& slice : slices) {
      std::vector<std::pair<std::string, double>> fields;
      for (const auto& m : run.replay_metrics)
        if (m.slice == slice) fields.emplace_back(m.name, m.value);
      KlStats k;
      if (kl_stats_from_fields(fields, k))
        out += fmt::format("\nKL statistics, {} ({} steps)\n", slice.empty() ? "(all)" : slice, k.count) + kl_stats_block(k);
    }
  }
  if (!run.replay_items.empty()) {
    out += "\nreplay items\n";
    size_t slice_w = 24;
    for (const auto& x : run.replay_items) slice_w = std::max(slice_w, x.slice.size() + 2);
    out += fmt::format("  {:<{}}{:>5}{:>8}{:>7}{:>9}{:>9}{:>11}{:>11}{:>11}{:>10}{:>9}{:>11}{:>11}\n", "slice", slice_w, "item", "prompt",
                       "steps", "score", "ref", "KLD mean", "KLD 99%", "KLD max", "Δp mean", "same", "PPL(Q)", "PPL(base)");
    for (const auto& x : run.replay_items)
      out += fmt::format("  {:<{}}{:>5}{:>8}{:>7}{:>9.4g}{:>9.4g}{:>11.4g}{:>11.4g}{:>11.4g}{:>10.3g}{:>9.4g}{:>11.5g}{:>11.5g}\n",
                         x.slice, slice_w, x.item, x.prompt_tokens, x.steps, x.score, x.score_ref, x.kld_mean, x.kld_p99, x.kld_max,
                         x.dp_mean, x.same_top, x.ppl, x.ppl_ref);
    // --chat prompts and a policy script's per-block bits (schema 5), item by item.
    for (const auto& x : run.replay_items) {
      if (!x.chat_text.empty())
        out += fmt::format("\n  {} item {}: chat prompt ({} ids: {})\n{}\n", x.slice, x.item, x.prompt_tokens, x.token_ids,
                           indent_text(x.chat_text, "    | "));
      if (!x.blocks.empty()) out += fmt::format("\n  {} item {}: {}\n", x.slice, x.item, block_bits_summary(x.blocks));
    }
  }
  if (!run.rd_points.empty()) {
    out += "\nrate-distortion points\n";
    for (const auto& p : run.rd_points) out += fmt::format("  {:<12}{:<10.6g}{:<20}{:.6g}\n", p.method, p.rate, p.metric, p.value);
  }
  return out;
}

}  // namespace

void register_runs(CLI::App& app) {
  auto* runs = app.add_subcommand("runs", "List, show, delete, tag and annotate stored runs");
  runs->require_subcommand(1);

  {
    struct Args {
      std::string db;
      RunFilter filter;
      bool json = false;
    };
    auto args = std::make_shared<Args>();
    auto* list = runs->add_subcommand("list", "List runs, newest first");
    add_db_option(list, args->db);
    list->add_option("--model", args->filter.model, "Only models whose id contains this text");
    list->add_option("--method", args->filter.method, "Only this method (e.g. kivi)");
    list->add_option("--tag", args->filter.tag, "Only runs with this tag");
    list->add_option("--since", args->filter.since, "Only runs since YYYY-MM-DD[THH:MM] (UTC) or an age: 30m, 12h, 7d");
    list->add_option("--status", args->filter.status, "Only runs with this status")
        ->check(CLI::IsMember({"running", "done", "failed"}));
    list->add_option("--limit", args->filter.limit, "At most this many (the newest)")->check(CLI::NonNegativeNumber);
    list->add_flag("--json", args->json, "Machine-readable output");
    list->callback([args] {
      RunStore store(resolve_db(args->db));
      const Table t = listing_table(store.list_runs(args->filter));
      print(args->json ? to_json(t) : to_text(t));
    });
  }
  {
    struct Args {
      std::string db;
      int64_t id = 0;
      bool json = false;
    };
    auto args = std::make_shared<Args>();
    auto* show = runs->add_subcommand("show", "Everything stored about one run");
    add_db_option(show, args->db);
    show->add_option("id", args->id, "Run id")->required();
    show->add_flag("--json", args->json, "Machine-readable output (all per-head rows)");
    show->callback([args] {
      RunStore store(resolve_db(args->db));
      const StoredRun run = store.load_run(args->id);
      print(args->json ? run_to_json(run) : show_text(run));
    });
  }
  {
    struct Args {
      std::string db;
      int64_t id = 0;
    };
    auto args = std::make_shared<Args>();
    auto* del = runs->add_subcommand("delete", "Delete a run and all its rows");
    add_db_option(del, args->db);
    del->add_option("id", args->id, "Run id")->required();
    del->callback([args] {
      RunStore store(resolve_db(args->db));
      store.delete_run(args->id);
      std::fprintf(stderr, "kvscope: deleted run %lld\n", static_cast<long long>(args->id));
    });
  }
  {
    struct Args {
      std::string db, tag;
      int64_t id = 0;
      bool remove = false;
    };
    auto args = std::make_shared<Args>();
    auto* tag = runs->add_subcommand("tag", "Add (or with --remove, remove) a tag");
    add_db_option(tag, args->db);
    tag->add_option("id", args->id, "Run id")->required();
    tag->add_option("tag", args->tag, "Tag (no spaces or commas)")->required();
    tag->add_flag("--remove", args->remove, "Remove the tag instead");
    tag->callback([args] {
      RunStore store(resolve_db(args->db));
      args->remove ? store.remove_tag(args->id, args->tag) : store.add_tag(args->id, args->tag);
    });
  }
  {
    struct Args {
      std::string db, text;
      int64_t id = 0;
    };
    auto args = std::make_shared<Args>();
    auto* note = runs->add_subcommand("note", "Set the note of a run (\"\" clears it)");
    add_db_option(note, args->db);
    note->add_option("id", args->id, "Run id")->required();
    note->add_option("text", args->text, "Note text")->required();
    note->callback([args] {
      RunStore store(resolve_db(args->db));
      store.set_note(args->id, args->text);
    });
  }
}

}  // namespace kvscope::cli
