#include "storage/export.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace kvscope {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Text from a database is not checked to be UTF-8 (a copied or hand-edited store); JSON output
// replaces invalid bytes with U+FFFD instead of throwing nlohmann's type_error.
constexpr auto kInvalidUtf8 = nlohmann::ordered_json::error_handler_t::replace;

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

Cell num_or_empty(double v, bool present) { return present ? Cell::number(v) : Cell::empty(); }

double compression(const QuantizeReport& r) {
  return r.bytes_per_token > 0 ? r.fp16_bytes_per_token / r.bytes_per_token : kNaN;
}

// Exact aggregates over the heads of one kind: bits and squared errors are summed, never ratios averaged.
struct KindSums {
  uint64_t bits = 0, elements = 0;
  double err = 0, energy = 0, max_abs = 0;
  int heads = 0, fp16_heads = 0;
  void add(const HeadMetrics& m) {
    const double e = m.mse * double(m.elements);
    bits += m.bits;
    elements += m.elements;
    err += e;
    if (m.nmse > 0 && std::isfinite(m.nmse)) energy += e / m.nmse;
    max_abs = std::max(max_abs, m.max_abs);
    ++heads;
    fp16_heads += m.full_precision;
  }
  Cell bpe() const { return heads ? Cell::number(double(bits) / double(elements ? elements : 1)) : Cell::empty(); }
  Cell mse() const { return heads && elements ? Cell::number(err / double(elements)) : Cell::empty(); }
  Cell nmse() const {
    if (!heads) return Cell::empty();
    if (err == 0) return Cell::number(0);
    return Cell::number(energy > 0 ? err / energy : kNaN);
  }
};

std::string human_number(double v, bool sign) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return sign ? fmt::format("{:+.6g}", v) : fmt::format("{:.6g}", v);
}

// Full precision, shortest text that reads back to the same double.
std::string exact_number(double v) {
  if (std::isnan(v)) return "";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);
}

std::string human(const Cell& c) {
  switch (c.kind) {
    case Cell::Kind::Empty: return "";
    case Cell::Kind::Text: return c.text;
    case Cell::Kind::Integer: return std::to_string(c.integer);
    case Cell::Kind::Real: return human_number(c.real, false);
    case Cell::Kind::Delta: return human_number(c.real, true);
  }
  return "";
}

std::string exact(const Cell& c) {
  switch (c.kind) {
    case Cell::Kind::Empty: return "";
    case Cell::Kind::Text: return c.text;
    case Cell::Kind::Integer: return std::to_string(c.integer);
    case Cell::Kind::Real:
    case Cell::Kind::Delta: return exact_number(c.real);
  }
  return "";
}

// A column is numeric (right-aligned) when most of its non-empty cells are numbers (a compare
// column holds a few text rows - model, method - above many numbers).
std::vector<bool> numeric_columns(const Table& t) {
  std::vector<bool> out(t.header.size(), false);
  for (size_t c = 0; c < t.header.size(); ++c) {
    int numbers = 0, texts = 0;
    for (const auto& row : t.rows) {
      if (row[c].kind == Cell::Kind::Empty) continue;
      (row[c].numeric() ? numbers : texts) += 1;
    }
    out[c] = numbers > texts;
  }
  return out;
}

void check_shape(const Table& t) {
  for (const auto& row : t.rows) {
    if (row.size() != t.header.size()) {
      throw Error(fmt::format("table {}: a row has {} cells for {} columns", t.name, row.size(), t.header.size()));
    }
  }
}

}  // namespace

Table summary_table(const std::vector<StoredRun>& runs) {
  Table t{"summary",
          {"run", "created", "model", "method", "policy", "tokens", "bits_per_element", "k_bits_per_element",
           "v_bits_per_element", "bytes_per_token", "compression", "k_nmse", "v_nmse", "k_cos", "v_cos",
           "attn_cos_mean", "attn_cos_min", "attn_nmse", "attn_kl_mean", "wall_seconds", "tags"},
          {}};
  for (const StoredRun& run : runs) {
    const QuantizeReport& r = run.report;
    const bool q = run.kind == "quantize";
    const bool attn = q && r.attn_queries > 0;
    t.rows.push_back({Cell::whole(run.id), Cell::str(run.created_at), Cell::str(r.model_id), Cell::str(r.method),
                      Cell::str(r.policy_name), Cell::whole(r.shape.tokens), num_or_empty(r.bits_per_element, q),
                      num_or_empty(r.k_bits_per_element, q), num_or_empty(r.v_bits_per_element, q),
                      num_or_empty(r.bytes_per_token, q), num_or_empty(compression(r), q), num_or_empty(r.k_nmse, q),
                      num_or_empty(r.v_nmse, q), num_or_empty(r.k_cos, q), num_or_empty(r.v_cos, q),
                      num_or_empty(r.attn_cos_mean, attn), num_or_empty(r.attn_cos_min, attn),
                      num_or_empty(r.attn_nmse, attn), num_or_empty(r.attn_kl_mean, attn),
                      Cell::number(r.wall_seconds), Cell::str(join(run.tags, " "))});
  }
  return t;
}

Table per_layer_table(const std::vector<StoredRun>& runs) {
  Table t{"per-layer",
          {"run", "layer", "k_bits_per_element", "v_bits_per_element", "k_nmse", "v_nmse", "k_mse", "v_mse",
           "k_max_abs", "v_max_abs", "fp16_heads", "attn_cos_mean", "attn_cos_min", "attn_kl_mean"},
          {}};
  for (const StoredRun& run : runs) {
    struct Layer {
      KindSums k, v;
      double cos_sum = 0, cos_min = 1, kl_sum = 0;
      int attn_heads = 0;
    };
    std::map<int, Layer> layers;
    for (const HeadMetrics& m : run.report.per_head) (m.kind == 'k' ? layers[m.layer].k : layers[m.layer].v).add(m);
    // Every KV head averages the same number of (query head, position) samples, so the mean of
    // the head means is the mean over all samples of the layer.
    for (const AttentionMetrics& a : run.report.attention) {
      Layer& l = layers[a.layer];
      l.cos_sum += a.out_cos_mean;
      l.cos_min = std::min(l.cos_min, a.out_cos_min);
      l.kl_sum += a.kl_mean;
      ++l.attn_heads;
    }
    for (const auto& [index, l] : layers) {
      const bool attn = l.attn_heads > 0;
      const bool any = l.k.heads + l.v.heads > 0;
      t.rows.push_back({Cell::whole(run.id), Cell::whole(index), l.k.bpe(), l.v.bpe(), l.k.nmse(), l.v.nmse(),
                        l.k.mse(), l.v.mse(), num_or_empty(l.k.max_abs, l.k.heads > 0),
                        num_or_empty(l.v.max_abs, l.v.heads > 0),
                        any ? Cell::whole(l.k.fp16_heads + l.v.fp16_heads) : Cell::empty(),
                        num_or_empty(l.cos_sum / std::max(l.attn_heads, 1), attn), num_or_empty(l.cos_min, attn),
                        num_or_empty(l.kl_sum / std::max(l.attn_heads, 1), attn)});
    }
  }
  return t;
}

Table per_head_table(const std::vector<StoredRun>& runs) {
  Table t{"per-head",
          {"run", "layer", "head", "k_bits_per_element", "v_bits_per_element", "k_nmse", "v_nmse", "k_cos", "v_cos",
           "k_max_abs", "v_max_abs", "k_fp16", "v_fp16", "attn_cos_mean", "attn_cos_min", "attn_nmse", "attn_kl_mean"},
          {}};
  for (const StoredRun& run : runs) {
    struct Head {
      const HeadMetrics* k = nullptr;
      const HeadMetrics* v = nullptr;
      const AttentionMetrics* a = nullptr;
    };
    std::map<std::pair<int, int>, Head> heads;
    for (const HeadMetrics& m : run.report.per_head) (m.kind == 'k' ? heads[{m.layer, m.head}].k : heads[{m.layer, m.head}].v) = &m;
    for (const AttentionMetrics& a : run.report.attention) heads[{a.layer, a.head}].a = &a;
    for (const auto& entry : heads) {
      const auto& key = entry.first;
      const Head& h = entry.second;  // not a structured binding: clang 14 cannot capture those (fuzz build)
      auto tensor = [](const HeadMetrics* m, double HeadMetrics::*field) {
        return m ? Cell::number(m->*field) : Cell::empty();
      };
      auto bpe = [](const HeadMetrics* m) { return m ? Cell::number(m->bits_per_element()) : Cell::empty(); };
      auto fp16 = [](const HeadMetrics* m) { return m ? Cell::str(m->full_precision ? "yes" : "no") : Cell::empty(); };
      auto attn = [&](double AttentionMetrics::*field) { return h.a ? Cell::number(h.a->*field) : Cell::empty(); };
      t.rows.push_back({Cell::whole(run.id), Cell::whole(key.first), Cell::whole(key.second), bpe(h.k), bpe(h.v),
                        tensor(h.k, &HeadMetrics::nmse), tensor(h.v, &HeadMetrics::nmse),
                        tensor(h.k, &HeadMetrics::cos), tensor(h.v, &HeadMetrics::cos),
                        tensor(h.k, &HeadMetrics::max_abs), tensor(h.v, &HeadMetrics::max_abs), fp16(h.k), fp16(h.v),
                        attn(&AttentionMetrics::out_cos_mean), attn(&AttentionMetrics::out_cos_min),
                        attn(&AttentionMetrics::out_nmse), attn(&AttentionMetrics::kl_mean)});
    }
  }
  return t;
}

Table compare_table(const std::vector<StoredRun>& runs) {
  Table t{"compare", {"metric"}, {}};
  for (size_t i = 0; i < runs.size(); ++i) {
    t.header.push_back(fmt::format("run_{}", runs[i].id));
    if (i > 0) t.header.push_back(fmt::format("delta_{}", runs[i].id));
  }
  auto text_row = [&](const char* name, auto get) {
    std::vector<Cell> row{Cell::str(name)};
    for (size_t i = 0; i < runs.size(); ++i) {
      row.push_back(Cell::str(get(runs[i])));
      if (i > 0) row.push_back(Cell::empty());
    }
    t.rows.push_back(std::move(row));
  };
  auto number_row = [&](const char* name, auto get) {
    std::vector<Cell> row{Cell::str(name)};
    const double first = runs.empty() ? 0 : get(runs[0]);
    for (size_t i = 0; i < runs.size(); ++i) {
      const double v = get(runs[i]);
      row.push_back(Cell::number(v));
      if (i > 0) row.push_back(Cell::delta(v - first));
    }
    t.rows.push_back(std::move(row));
  };
  // Metrics a run does not have (a replay run's tensor errors, attention without Q) read as NaN.
  auto quant = [](double QuantizeReport::*field) {
    return [field](const StoredRun& r) { return r.kind == "quantize" ? r.report.*field : kNaN; };
  };
  auto attn = [](double QuantizeReport::*field) {
    return [field](const StoredRun& r) {
      return r.kind == "quantize" && r.report.attn_queries > 0 ? r.report.*field : kNaN;
    };
  };
  text_row("model", [](const StoredRun& r) { return r.report.model_id; });
  text_row("method", [](const StoredRun& r) { return r.report.method; });
  text_row("policy", [](const StoredRun& r) { return r.report.policy_name; });
  number_row("bits_per_element", quant(&QuantizeReport::bits_per_element));
  number_row("k_bits_per_element", quant(&QuantizeReport::k_bits_per_element));
  number_row("v_bits_per_element", quant(&QuantizeReport::v_bits_per_element));
  number_row("bytes_per_token", quant(&QuantizeReport::bytes_per_token));
  number_row("compression", [](const StoredRun& r) { return r.kind == "quantize" ? compression(r.report) : kNaN; });
  number_row("k_nmse", quant(&QuantizeReport::k_nmse));
  number_row("v_nmse", quant(&QuantizeReport::v_nmse));
  number_row("k_cos", quant(&QuantizeReport::k_cos));
  number_row("v_cos", quant(&QuantizeReport::v_cos));
  number_row("attn_cos_mean", attn(&QuantizeReport::attn_cos_mean));
  number_row("attn_cos_min", attn(&QuantizeReport::attn_cos_min));
  number_row("attn_nmse", attn(&QuantizeReport::attn_nmse));
  number_row("attn_kl_mean", attn(&QuantizeReport::attn_kl_mean));
  number_row("wall_seconds", [](const StoredRun& r) { return r.report.wall_seconds; });
  // Replay metrics, one row per (slice, name) any run has, in order of first appearance.
  std::vector<std::pair<std::string, std::string>> keys;
  for (const StoredRun& r : runs) {
    for (const ReplayMetric& m : r.replay_metrics) {
      if (std::find(keys.begin(), keys.end(), std::pair(m.slice, m.name)) == keys.end()) keys.emplace_back(m.slice, m.name);
    }
  }
  for (const auto& key : keys) {
    const std::string &slice = key.first, &name = key.second;  // captured below: no structured binding (clang 14)
    const std::string label = slice.empty() ? name : fmt::format("{} [{}]", name, slice);
    number_row(label.c_str(), [&](const StoredRun& r) {
      for (const ReplayMetric& m : r.replay_metrics) {
        if (m.slice == slice && m.name == name) return m.value;
      }
      return kNaN;
    });
  }
  return t;
}

Table listing_table(const std::vector<RunListing>& runs) {
  Table t{"runs",
          {"run", "created", "status", "kind", "model", "method", "policy", "bits_per_element", "k_nmse", "v_nmse",
           "attn_cos_mean", "kv_bits", "greedy_match", "next_token_kl", "wall_seconds", "tags", "note"},
          {}};
  auto finite = [](double v) { return std::isnan(v) ? Cell::empty() : Cell::number(v); };
  for (const RunListing& l : runs) {
    std::string note = l.note.substr(0, l.note.find('\n'));  // first line only
    t.rows.push_back({Cell::whole(l.id), Cell::str(l.created_at), Cell::str(l.status), Cell::str(l.kind),
                      Cell::str(l.model_id), Cell::str(l.method), Cell::str(l.policy_name), finite(l.bits_per_element),
                      finite(l.k_nmse), finite(l.v_nmse), finite(l.attn_cos_mean), finite(l.kv_bits),
                      finite(l.greedy_match), finite(l.next_token_kl), finite(l.wall_seconds),
                      Cell::str(join(l.tags, " ")), Cell::str(std::move(note))});
  }
  return t;
}

std::string run_to_json(const StoredRun& run) {
  using nlohmann::ordered_json;
  auto num = [](double v) { return std::isfinite(v) ? ordered_json(v) : ordered_json(); };  // NaN/inf -> null
  const QuantizeReport& r = run.report;
  ordered_json heads = ordered_json::array(), attention = ordered_json::array(), rd = ordered_json::array(),
               replay = ordered_json::array();
  for (const HeadMetrics& m : r.per_head) {
    heads.push_back({{"layer", m.layer}, {"head", m.head}, {"kind", std::string(1, m.kind)}, {"nmse", num(m.nmse)},
                     {"cos", num(m.cos)}, {"mse", num(m.mse)}, {"max_abs", num(m.max_abs)}, {"bits", m.bits},
                     {"elements", m.elements}, {"full_precision", m.full_precision}});
  }
  for (const AttentionMetrics& a : r.attention) {
    attention.push_back({{"layer", a.layer}, {"head", a.head}, {"out_cos_mean", num(a.out_cos_mean)},
                         {"out_cos_min", num(a.out_cos_min)}, {"out_nmse", num(a.out_nmse)},
                         {"kl_mean", num(a.kl_mean)}, {"prob_cos_mean", num(a.prob_cos_mean)},
                         {"logit_rmse", num(a.logit_rmse)}, {"logit_max_abs", num(a.logit_max_abs)}});
  }
  for (const RdPoint& p : run.rd_points) {
    rd.push_back({{"method", p.method}, {"rate", num(p.rate)}, {"metric", p.metric}, {"value", num(p.value)}});
  }
  for (const ReplayMetric& m : run.replay_metrics) {
    replay.push_back({{"slice", m.slice}, {"name", m.name}, {"value", num(m.value)}});
  }
  ordered_json policy;  // the stored canonical JSON, as an object
  if (!r.policy_json.empty()) policy = ordered_json::parse(r.policy_json, nullptr, false);
  if (policy.is_discarded()) policy = r.policy_json;
  ordered_json doc = {
      {"id", run.id}, {"uuid", run.uuid}, {"origin", run.origin}, {"created_at", run.created_at},
      {"kvscope_version", run.kvscope_version}, {"kind", run.kind}, {"status", run.status},
      {"model", r.model_id}, {"method", r.method}, {"policy_name", r.policy_name}, {"policy_hash", run.policy_hash},
      {"policy", policy}, {"dump_path", r.dump_path}, {"dump_hash", run.dump_hash}, {"workload", run.workload},
      {"cell_hash", run.cell_hash},
      {"shape", {{"layers", r.shape.layers}, {"kv_heads", r.shape.kv_heads}, {"q_heads", r.shape.q_heads},
                 {"head_dim", r.shape.head_dim}, {"tokens", r.shape.tokens}}},
      {"tags", run.tags}, {"note", run.note}, {"wall_seconds", num(r.wall_seconds)}};
  if (run.kind == "quantize") {
    doc["summary"] = {{"bits_per_element", num(r.bits_per_element)},
                      {"k_bits_per_element", num(r.k_bits_per_element)},
                      {"v_bits_per_element", num(r.v_bits_per_element)},
                      {"bytes_per_token", num(r.bytes_per_token)},
                      {"static_bytes", num(r.static_bytes)},
                      {"fp16_bytes_per_token", num(r.fp16_bytes_per_token)},
                      {"k_nmse", num(r.k_nmse)},
                      {"v_nmse", num(r.v_nmse)},
                      {"k_cos", num(r.k_cos)},
                      {"v_cos", num(r.v_cos)},
                      {"attn_cos_mean", num(r.attn_cos_mean)},
                      {"attn_cos_min", num(r.attn_cos_min)},
                      {"attn_nmse", num(r.attn_nmse)},
                      {"attn_kl_mean", num(r.attn_kl_mean)},
                      {"attn_queries", r.attn_queries},
                      {"fixed_width_bits_per_element", num(r.fixed_width_bits_per_element)},
                      {"calibration_seconds", num(r.calibration_seconds)}};
  }
  doc["per_head"] = std::move(heads);
  doc["attention"] = std::move(attention);
  doc["rd_points"] = std::move(rd);
  doc["replay_metrics"] = std::move(replay);
  if (!run.replay_items.empty()) {
    ordered_json items = ordered_json::array();
    for (const ReplayItemRow& x : run.replay_items)
      items.push_back({{"slice", x.slice}, {"item", x.item}, {"prompt_tokens", x.prompt_tokens}, {"steps", x.steps},
                       {"score", num(x.score)}, {"score_ref", num(x.score_ref)}, {"kld_mean", num(x.kld_mean)},
                       {"kld_p99", num(x.kld_p99)}, {"kld_max", num(x.kld_max)}, {"dp_mean", num(x.dp_mean)},
                       {"same_top", num(x.same_top)}, {"ppl", num(x.ppl)}, {"ppl_ref", num(x.ppl_ref)}});
    for (size_t i = 0; i < run.replay_items.size(); ++i) {  // schema 5, present only when stored
      const ReplayItemRow& x = run.replay_items[i];
      if (!x.chat_text.empty()) items[i]["chat_text"] = x.chat_text;
      if (!x.token_ids.empty()) items[i]["token_ids"] = ordered_json::parse(x.token_ids);
      if (!x.blocks.empty()) items[i]["blocks"] = ordered_json::parse(x.blocks);
    }
    doc["replay_items"] = std::move(items);
  }
  if (!run.kld_quantiles.empty()) {
    ordered_json q = ordered_json::array();
    for (const KldQuantile& x : run.kld_quantiles) q.push_back({{"slice", x.slice}, {"fraction", x.fraction}, {"kld", num(x.kld)}});
    doc["kld_quantiles"] = std::move(q);
  }
  return doc.dump(2, ' ', false, kInvalidUtf8) + "\n";
}

Table make_table(const std::string& name, const std::vector<StoredRun>& runs) {
  if (name == "summary") return summary_table(runs);
  if (name == "per-layer") return per_layer_table(runs);
  if (name == "per-head") return per_head_table(runs);
  if (name == "compare") return compare_table(runs);
  throw Error(fmt::format("--table {}: unknown table (summary, per-layer, per-head, compare)", name));
}

std::string to_csv(const Table& t) {
  check_shape(t);
  auto field = [](const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) {
      if (c == '"') q += '"';
      q += c;
    }
    q += '"';
    return q;
  };
  std::string out;
  auto line = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i) out += ',';
      out += field(cells[i]);
    }
    out += "\r\n";
  };
  line(t.header);
  for (const auto& row : t.rows) {
    std::vector<std::string> cells;
    for (const Cell& c : row) cells.push_back(exact(c));
    line(cells);
  }
  return out;
}

std::string to_markdown(const Table& t) {
  check_shape(t);
  auto escape = [](const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '|') out += "\\|";
      else if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;
      else if (s[i] == '\n' || s[i] == '\r') out += "<br>";
      else out += s[i];
    }
    return out;
  };
  const auto numeric = numeric_columns(t);
  std::string out = "|";
  for (const auto& h : t.header) out += fmt::format(" {} |", escape(h));
  out += "\n|";
  for (bool n : numeric) out += n ? " ---: |" : " --- |";
  out += "\n";
  for (const auto& row : t.rows) {
    out += "|";
    for (const Cell& c : row) out += fmt::format(" {} |", escape(human(c)));
    out += "\n";
  }
  return out;
}

std::string to_latex(const Table& t) {
  check_shape(t);
  auto escape = [](const std::string& s) {
    std::string out;
    for (char c : s) {
      switch (c) {
        case '\\': out += "\\textbackslash{}"; break;
        case '&': case '%': case '$': case '#': case '_': case '{': case '}':
          out += '\\';
          out += c;
          break;
        case '~': out += "\\textasciitilde{}"; break;
        case '^': out += "\\textasciicircum{}"; break;
        case '|': out += "\\textbar{}"; break;  // OT1 text fonts would print these three as
        case '<': out += "\\textless{}"; break;  // a dash and inverted punctuation
        case '>': out += "\\textgreater{}"; break;
        case '\n': case '\r': out += ' '; break;
        default: out += c;
      }
    }
    return out;
  };
  auto cell = [&](const Cell& c) {
    std::string s = escape(human(c));
    // A text-mode hyphen is not a minus sign.
    if (c.numeric() && s.size() > 1 && s[0] == '-') s.replace(0, 1, "$-$");
    return s;
  };
  const auto numeric = numeric_columns(t);
  std::string spec;
  for (bool n : numeric) spec += n ? 'r' : 'l';
  std::string out = fmt::format("% kvscope {} table; needs \\usepackage{{booktabs}}\n", t.name);
  out += fmt::format("\\begin{{tabular}}{{{}}}\n\\toprule\n", spec);
  for (size_t i = 0; i < t.header.size(); ++i) {
    if (i) out += " & ";
    out += escape(t.header[i]);
  }
  out += " \\\\\n\\midrule\n";
  for (const auto& row : t.rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i) out += " & ";
      out += cell(row[i]);
    }
    out += " \\\\\n";
  }
  out += "\\bottomrule\n\\end{tabular}\n";
  return out;
}

std::string to_json(const Table& t) {
  check_shape(t);
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& row : t.rows) {
    nlohmann::ordered_json obj = nlohmann::ordered_json::object();
    for (size_t i = 0; i < row.size(); ++i) {
      const Cell& c = row[i];
      nlohmann::ordered_json v;  // null for empty cells and for NaN/inf, which JSON cannot hold
      if (c.kind == Cell::Kind::Text) v = c.text;
      else if (c.kind == Cell::Kind::Integer) v = c.integer;
      else if (c.numeric() && std::isfinite(c.real)) v = c.real;
      obj[t.header[i]] = std::move(v);
    }
    rows.push_back(std::move(obj));
  }
  nlohmann::ordered_json doc = {{"table", t.name}, {"columns", t.header}, {"rows", std::move(rows)}};
  return doc.dump(2, ' ', false, kInvalidUtf8) + "\n";
}

std::string to_text(const Table& t) {
  check_shape(t);
  const auto numeric = numeric_columns(t);
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width(t.header.size());
  for (size_t c = 0; c < t.header.size(); ++c) width[c] = t.header[c].size();
  for (const auto& row : t.rows) {
    cells.emplace_back();
    for (size_t c = 0; c < row.size(); ++c) {
      std::string s = human(row[c]);
      std::replace(s.begin(), s.end(), '\n', ' ');
      width[c] = std::max(width[c], s.size());
      cells.back().push_back(std::move(s));
    }
  }
  std::string out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (size_t c = 0; c < r.size(); ++c) {
      const std::string pad(width[c] - r[c].size(), ' ');
      if (c) l += "  ";
      l += numeric[c] ? pad + r[c] : r[c] + pad;
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(t.header);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  line(rule);
  for (const auto& r : cells) line(r);
  return out;
}

std::string format_table(const Table& t, const std::string& format) {
  if (format == "csv") return to_csv(t);
  if (format == "md") return to_markdown(t);
  if (format == "tex") return to_latex(t);
  if (format == "json") return to_json(t);
  if (format == "text") return to_text(t);
  throw Error(fmt::format("--format {}: unknown format (csv, md, tex, json, text)", format));
}

}  // namespace kvscope
