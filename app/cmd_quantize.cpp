// kvscope quantize: quantize a dump under a preset or policy and report tensor and attention error.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "app/cli.h"
#include "app/store_options.h"
#include "core/metrics/attention.h"
#include "core/metrics/attention_sample.h"
#include "core/quant/method_registry.h"
#include "core/policy/policy.h"
#include "core/quant/quantize_dump.h"
#include "core/quant/quantize_stream.h"
#include "core/util/error.h"
#include "core/util/parallel.h"
#include "core/util/json_text.h"
#include "python/policy_script.h"

namespace kvscope::cli {

namespace {

nlohmann::json report_json(const QuantizeReport& r) {
  nlohmann::json per_head = nlohmann::json::array();
  for (const auto& h : r.per_head)
    per_head.push_back({{"layer", h.layer}, {"head", h.head}, {"kind", std::string(1, h.kind)}, {"nmse", h.nmse},
                        {"cos", h.cos}, {"mse", h.mse}, {"max_abs", h.max_abs}, {"bits", h.bits_per_element()},
                        {"fp16", h.full_precision}});
  nlohmann::json attn = nlohmann::json::array();
  for (const auto& a : r.attention)
    attn.push_back({{"layer", a.layer}, {"head", a.head}, {"out_cos_mean", a.out_cos_mean}, {"out_cos_min", a.out_cos_min},
                    {"out_nmse", a.out_nmse}, {"kl_mean", a.kl_mean}, {"prob_cos_mean", a.prob_cos_mean},
                    {"logit_rmse", a.logit_rmse}});
  return {{"method", r.method},
          {"policy", r.policy_name},
          {"dump", r.dump_path},
          {"model", r.model_id},
          {"layers", r.shape.layers},
          {"kv_heads", r.shape.kv_heads},
          {"q_heads", r.shape.q_heads},
          {"head_dim", r.shape.head_dim},
          {"tokens", r.shape.tokens},
          {"bits_per_element", r.bits_per_element},
          {"k_bits_per_element", r.k_bits_per_element},
          {"v_bits_per_element", r.v_bits_per_element},
          {"bytes_per_token", r.bytes_per_token},
          {"fp16_bytes_per_token", r.fp16_bytes_per_token},
          {"static_bytes", r.static_bytes},
          {"fixed_width_bits_per_element", r.fixed_width_bits_per_element},
          {"calibration_seconds", r.calibration_seconds},
          {"k_nmse", r.k_nmse},
          {"v_nmse", r.v_nmse},
          {"k_cos", r.k_cos},
          {"v_cos", r.v_cos},
          {"attn_queries", r.attn_queries},
          {"attn_cos_mean", r.attn_cos_mean},
          {"attn_cos_min", r.attn_cos_min},
          {"attn_nmse", r.attn_nmse},
          {"attn_kl_mean", r.attn_kl_mean},
          {"wall_seconds", r.wall_seconds},
          {"per_head", per_head},
          {"attention", attn}};
}

void print_summary(const QuantizeReport& r) {
  fmt::print("{} ({}) on {}: {} layers x {} KV heads x {} tokens, head_dim {}\n", r.policy_name, r.method, r.dump_path,
             r.shape.layers, r.shape.kv_heads, r.shape.tokens, r.shape.head_dim);
  fmt::print("{:>5} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9} {:>10}  {}\n", "layer", "K nmse", "V nmse", "K bits", "V bits",
             "attn cos", "cos min", "attn KL", "fp16 K heads");
  std::map<int, std::vector<const HeadMetrics*>> by_layer;
  for (const auto& h : r.per_head) by_layer[h.layer].push_back(&h);
  for (auto& [layer, hs] : by_layer) {
    double ke = 0, kr = 0, ve = 0, vr = 0, kb = 0, vb = 0, kn = 0, vn = 0;
    std::string fp;
    for (auto* h : hs) {
      double ref = h->nmse > 0 ? h->mse * h->elements / h->nmse : 0;  // sum x^2 back from nmse
      (h->kind == 'k' ? ke : ve) += h->mse * h->elements;
      (h->kind == 'k' ? kr : vr) += ref;
      (h->kind == 'k' ? kb : vb) += double(h->bits);
      (h->kind == 'k' ? kn : vn) += double(h->elements);
      if (h->kind == 'k' && h->full_precision) fp += (fp.empty() ? "" : ",") + std::to_string(h->head);
    }
    double cos_sum = 0, cos_min = 1, kl = 0;
    int n = 0;
    for (const auto& a : r.attention)
      if (a.layer == layer) cos_sum += a.out_cos_mean, cos_min = std::min(cos_min, a.out_cos_min), kl += a.kl_mean, ++n;
    fmt::print("{:>5} {:>10.3e} {:>10.3e} {:>7.3f} {:>7.3f} ", layer, kr > 0 ? ke / kr : 0.0, vr > 0 ? ve / vr : 0.0,
               kn ? kb / kn : 0.0, vn ? vb / vn : 0.0);
    if (n) fmt::print("{:>9.6f} {:>9.6f} {:>10.3e}  {}\n", cos_sum / n, cos_min, kl / n, fp);
    else fmt::print("{:>9} {:>9} {:>10}  {}\n", "-", "-", "-", fp);
  }
  fmt::print("total: {:.4f} bits/element (K {:.4f}, V {:.4f}), {:.1f} bytes/token (fp16 {:.0f}, {:.2f}x smaller)",
             r.bits_per_element, r.k_bits_per_element, r.v_bits_per_element, r.bytes_per_token, r.fp16_bytes_per_token,
             r.bytes_per_token > 0 ? r.fp16_bytes_per_token / r.bytes_per_token : 0.0);
  if (r.static_bytes > 0) fmt::print(" + {:.0f} bytes per cache", r.static_bytes);
  if (r.fixed_width_bits_per_element > 0)
    fmt::print("\n       entropy-coded rate; the same codes packed at fixed width: {:.4f} bits/element",
               r.fixed_width_bits_per_element);
  if (r.calibration_seconds > 0) fmt::print("\n       calibration {:.3f} s", r.calibration_seconds);
  fmt::print("\n       K nmse {:.4e}, V nmse {:.4e}", r.k_nmse, r.v_nmse);
  if (r.attn_queries)
    fmt::print(", attention output cos mean {:.6f} min {:.6f}, nmse {:.4e}, KL {:.4e} nats ({} query positions)",
               r.attn_cos_mean, r.attn_cos_min, r.attn_nmse, r.attn_kl_mean, r.attn_queries);
  fmt::print("\n       {:.2f} s\n", r.wall_seconds);
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a KV dump under a preset or policy and measure the error");
  struct Args {
    std::string dump, preset, policy, queries = "auto";
    bool json = false, no_attention = false;
    int threads = 0;
    StoreOptions store;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--dump", a->dump, "KV dump (.safetensors)")->required();
  auto* pre = cmd->add_option("--preset", a->preset, "Method preset (see `kvscope presets`)");
  auto* pol = cmd->add_option("--policy", a->policy, "Policy JSON file, or a policy script (.py, AdaptiveQuantPolicy)");
  pre->excludes(pol);
  cmd->add_option("--attn-queries", a->queries,
                  "Query positions sampled per head for attention metrics, 'all', or 'auto': 256 unless that exceeds "
                  "a fixed budget of attention work for the dump's shape, then fewer (at least 16)")
      ->capture_default_str();
  cmd->add_flag("--no-attention", a->no_attention, "Skip attention metrics (dumps without Q)");
  cmd->add_flag("--json", a->json, "Print a JSON object instead of the table");
  cmd->add_option("--threads", a->threads, "Worker threads (default: all cores)");
  add_store_options(cmd, a->store);  // --db, --no-store, --tag, --note
  cmd->callback([a] {
    if (a->preset.empty() && a->policy.empty()) throw Error("quantize: give --preset NAME or --policy FILE");
    if (a->threads > 0) set_worker_threads(a->threads);
    // A policy script is compiled and imported first (a syntax error costs no compute); it is planned
    // once the dump is loaded (its hooks see the dump's statistics).
    const bool script = !a->policy.empty() && is_policy_script(a->policy);
    if (script) check_policy_script(a->policy);
    Policy policy = a->policy.empty() ? load_preset(a->preset) : script ? load_preset("kivi-2") : load_policy_file(a->policy);
    QuantizeOptions opts;
    opts.attention = !a->no_attention;
    const bool auto_queries = a->queries == "auto";
    if (a->queries == "all") opts.attn_queries = 0;
    else if (!auto_queries) {
      try {
        size_t pos = 0;
        opts.attn_queries = std::stoi(a->queries, &pos);
        if (pos != a->queries.size() || opts.attn_queries <= 0) throw std::invalid_argument("");
      } catch (const std::exception&) {
        throw Error("--attn-queries: '" + a->queries + "' is not a positive integer, 'all' or 'auto'");
      }
    }
    DumpLoadOptions lo;
    lo.require_q = opts.attention;
    lo.load_pre_rope = policy.method->needs_pre_rope_keys && policy.method->needs_pre_rope_keys(policy);  // e.g. SKVQ
    std::optional<KvDump> whole;  // a policy script's hooks read the whole dump's statistics: loaded whole
    if (script) {
      whole = load_dump(a->dump, lo);
      ScriptTarget target;
      target.model_id = whole->meta.model_id;
      target.layers = whole->shape.layers;
      target.kv_heads = whole->shape.kv_heads;
      target.head_dim = whole->shape.head_dim;
      target.tokens = whole->shape.tokens;
      target.dump = &*whole;
      const auto t_plan = std::chrono::steady_clock::now();
      policy = plan_policy_script(a->policy, target);
      if (std::getenv("KVSCOPE_PROFILE"))  // the script's share of a quantize (docs/PYTHON.md)
        fmt::print(stderr, "policy script plan (hooks + token_stats): {:.3f} s\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_plan).count());
      if (policy.method->needs_pre_rope_keys && policy.method->needs_pre_rope_keys(policy) && !whole->has_k_pre_rope()) {
        lo.load_pre_rope = true;  // the script chose a method that reads pre-RoPE keys (SKVQ)
        whole = load_dump(a->dump, lo);
      }
    }
    // auto: from the dump's shape only (not timed), so stored results are reproducible.
    auto for_shape = [&](const DumpShape& s) {
      QuantizeOptions o = opts;
      if (auto_queries) o.attn_queries = auto_attn_queries(s.layers, s.q_heads, s.head_dim, s.tokens);
      return o;
    };
    QuantizeReport r;
    try {
      std::optional<DumpReader> streamed;
      if (!whole && quantizes_streamed(policy)) streamed.emplace(a->dump, lo);
      // Layer by layer from the mapped file (memory of one layer).
      if (whole) {
        r = quantize_dump(*whole, policy, for_shape(whole->shape));
      } else if (streamed) {
        r = quantize_dump_streamed(*streamed, policy, for_shape(streamed->shape()));
      } else {
        streamed.reset();
        auto t_load = std::chrono::steady_clock::now();
        KvDump dump = load_dump(a->dump, lo);
        if (std::getenv("KVSCOPE_PROFILE"))
          fmt::print(stderr, "load_dump: {:.3f} s\n",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());
        r = quantize_dump(dump, policy, for_shape(dump.shape));
      }
    } catch (const Error& e) {
      const std::string what = e.what();  // dump errors already name the file
      throw Error(what.rfind(a->dump + ":", 0) == 0 ? what : a->dump + ": " + what);
    }
    r.dump_path = a->dump;
    maybe_store_quantize_run(a->store, r);
    if (a->json) fmt::print("{}\n", json_text(report_json(r), 1));
    else print_summary(r);
  });
}

}  // namespace kvscope::cli
