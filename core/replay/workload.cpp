#include "core/replay/workload.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/replay/ruler.h"
#include "core/util/error.h"
#include "core/util/file.h"

namespace kvscope {

namespace {

namespace fs = std::filesystem;

// Workload texts go through the one text reader (a UTF-8 byte-order mark removed, as `dump --text` does).
std::string read_file(const std::string& path, size_t max_bytes = std::string::npos) {
  return read_text_file(path, "workload file", max_bytes);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

// "key=value" options; Error naming `where` for anything else.
std::vector<std::pair<std::string, std::string>> parse_options(const std::vector<std::string>& parts,
                                                               const std::string& where) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& raw : parts) {
    const std::string p = trim(raw);
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) fail(where, "expected key=value, got '{}'", p);
    out.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  return out;
}

int to_int(const std::string& v, const std::string& key, const std::string& where, int lo, int hi) {
  size_t used = 0;
  int x = 0;
  try {
    x = std::stoi(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size() || v.empty() || x < lo || x > hi) fail(where, "{} must be an integer in {}..{}, got '{}'", key, lo, hi, v);
  return x;
}

double to_double(const std::string& v, const std::string& key, const std::string& where, double lo, double hi) {
  size_t used = 0;
  double x = 0;
  try {
    x = std::stod(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size() || v.empty() || !(x >= lo && x <= hi)) fail(where, "{} must be a number in [{}, {}], got '{}'", key, lo, hi, v);
  return x;
}

WorkloadSlice load_text(const std::string& path, const std::vector<std::string>& opts, const std::string& where,
                        const Tokenizer& tok, int max_positions) {
  int window = std::min(256, max_positions), n = 4;
  bool chunks = false, n_given = false;
  for (const auto& [k, v] : parse_options(opts, where)) {
    if (k == "window" || k == "ctx") window = to_int(v, k, where, 4, 1 << 20);
    else if (k == "n") n = to_int(v, k, where, 1, 100000), n_given = true;
    else if (k == "protocol") {
      if (v != "windows" && v != "chunks") fail(where, "protocol must be windows or chunks, got '{}'", v);
      chunks = v == "chunks";
    } else {
      fail(where, "unknown option '{}' (text takes window or ctx, n, protocol)", k);
    }
  }
  if (window > max_positions)
    fail(where, "window of {} tokens is longer than the model's max_position_embeddings ({})", window, max_positions);
  // Tokenize only a prefix large enough for n windows (a whole book is slow and not needed);
  // llama.cpp's protocol without n takes every chunk of the file.
  const bool whole = chunks && !n_given;
  const size_t need = static_cast<size_t>(window) * n + 1;
  size_t bytes = whole ? std::string::npos : need * 8;
  std::vector<int32_t> ids;
  for (;;) {
    const std::string text = read_text_file(path, "text file", bytes);
    if (text.empty()) fail(path, "the text file is empty");
    ids = tok.encode(text, /*add_bos=*/true);
    if (whole || ids.size() >= need || text.size() < bytes) break;
    bytes *= 2;
  }
  WorkloadSlice s;
  s.name = "text:" + fs::path(path).filename().string();
  s.kind = WorkloadKind::Text;
  const int half = window / 2;
  const int count = whole ? static_cast<int>(ids.size() / window) : n;
  for (int i = 0; i < count; ++i) {
    const size_t start = static_cast<size_t>(i) * window;
    if (start + window > ids.size()) break;
    WorkloadItem it;
    if (chunks) {
      // llama.cpp's perplexity: the chunk's first token replaced by BOS, the whole chunk in context,
      // tokens first + 1 .. ctx - 1 scored (first = ctx / 2): here the prompt is the chunk up to
      // position first, and the ctx - 1 - first scored tokens are fed one at a time.
      it.prompt.assign(ids.begin() + start, ids.begin() + start + half + 1);
      if (tok.bos_id() >= 0) it.prompt[0] = tok.bos_id();
      it.target.assign(ids.begin() + start + half + 1, ids.begin() + start + window);
    } else {
      it.prompt.assign(ids.begin() + start, ids.begin() + start + half);
      it.target.assign(ids.begin() + start + half, ids.begin() + start + window);
    }
    s.items.push_back(std::move(it));
  }
  if (s.items.empty()) fail(path, "has {} tokens, fewer than one window of {}", ids.size(), window);
  return s;
}

WorkloadSlice load_jsonl(const std::string& path, const std::vector<std::string>& opts, const std::string& where,
                         const Tokenizer& tok, int max_positions, const ChatRenderer& chat) {
  int max_new_default = 16;
  std::string metric_default;
  for (const auto& [k, v] : parse_options(opts, where)) {
    if (k == "max_new") max_new_default = to_int(v, k, where, 1, 1 << 20);
    else if (k == "metric") {
      Scorer sc;
      if (!parse_scorer(v, sc)) fail(where, "metric must be exact, f1, rouge_l, contains, all or first_line, got '{}'", v);
      metric_default = v;
    } else {
      fail(where, "unknown option '{}' (jsonl takes max_new, metric)", k);
    }
  }
  std::istringstream in(read_file(path));
  WorkloadSlice s;
  s.name = "jsonl:" + fs::path(path).filename().string();
  s.kind = WorkloadKind::Jsonl;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (trim(line).empty()) continue;
    const std::string at = path + ":" + std::to_string(lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      fail(at, "not valid JSON ({})", e.what());
    }
    if (!j.is_object()) fail(at, "expected a JSON object with \"prompt\" and \"answer\"");
    if (j.contains("messages") && !chat) fail(at, "\"messages\" needs --chat (the model's chat template renders them)");
    if (j.contains("messages") && j.contains("prompt")) fail(at, "give \"prompt\" or \"messages\", not both");
    WorkloadItem it;
    std::string prompt;
    if (j.contains("messages")) {
      const auto& m = j["messages"];
      bool ok = m.is_array() && !m.empty();
      for (const auto& msg : m) ok = ok && msg.is_object() && msg.contains("role") && msg["role"].is_string();
      if (!ok) fail(at, "\"messages\" must be a non-empty list of objects with a string \"role\"");
    } else if (j.contains("context") || j.contains("input")) {  // LongBench: context, input, answers
      if (!j.contains("context") || !j["context"].is_string() || !j.contains("input") || !j["input"].is_string())
        fail(at, "a LongBench item needs \"context\" and \"input\" strings");
      prompt = j["context"].get<std::string>() + "\n\n" + j["input"].get<std::string>();
    } else {
      if (!j.contains("prompt") || !j["prompt"].is_string()) fail(at, "\"prompt\" must be a string");
      prompt = j["prompt"].get<std::string>();
    }
    if (j.contains("answers")) {
      if (!j["answers"].is_array() || j["answers"].empty()) fail(at, "\"answers\" must be a non-empty list of strings");
      for (const auto& a : j["answers"]) {
        if (!a.is_string()) fail(at, "\"answers\" must be a non-empty list of strings");
        it.answers.push_back(a.get<std::string>());
      }
      it.answer = it.answers[0];
    } else {
      if (!j.contains("answer") || !j["answer"].is_string()) fail(at, "\"answer\" must be a string");
      it.answer = j["answer"].get<std::string>();
    }
    std::string metric = metric_default;
    if (j.contains("metric")) {
      if (!j["metric"].is_string()) fail(at, "\"metric\" must be a string");
      metric = j["metric"].get<std::string>();
    }
    if (!metric.empty()) {
      if (!parse_scorer(metric, it.scorer)) fail(at, "metric must be exact, f1, rouge_l, contains, all or first_line, got '{}'", metric);
      if (it.answers.empty()) it.answers = {it.answer};
    } else if (!it.answers.empty()) {
      it.scorer = Scorer::Exact;  // LongBench answers without a metric: normalized exact match
    }
    if (chat) {
      // Re-read in the order written (nlohmann::json sorts keys): a template's tojson shows it.
      const std::string messages =
          j.contains("messages")
              ? nlohmann::ordered_json::parse(line)["messages"].dump()
              : nlohmann::ordered_json::array({{{"role", "user"}, {"content", prompt}}}).dump();
      try {
        it.chat_text = chat(messages);
      } catch (const Error& e) {
        fail(at, "{}", e.what());
      }
      it.prompt = tok.encode_special(it.chat_text);
    } else {
      it.prompt = tok.encode(prompt, /*add_bos=*/true);
    }
    it.max_new = max_new_default;
    if (j.contains("max_new")) {
      if (!j["max_new"].is_number_integer() || j["max_new"].get<int64_t>() < 1 || j["max_new"].get<int64_t>() > (1 << 20))
        fail(at, "\"max_new\" must be a positive integer");
      it.max_new = j["max_new"].get<int>();
    }
    if (it.prompt.empty()) fail(at, "the prompt encodes to no tokens");
    const size_t total = it.prompt.size() + it.max_new;
    if (total > static_cast<size_t>(max_positions))
      fail(at, "prompt ({} tokens) + max_new ({}) is longer than the model's max_position_embeddings ({})",
           it.prompt.size(), it.max_new, max_positions);
    s.items.push_back(std::move(it));
  }
  if (s.items.empty()) fail(path, "has no prompts");
  return s;
}

// Generated filler: the sentences of the classic passkey test (Mohtashami & Jaggi 2023).
const char* kFillerSentences[] = {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                                  "There and back again."};

WorkloadSlice load_passkey(const std::string& body, const std::string& where, const Tokenizer& tok, int max_positions) {
  int len = 0, n = 1, max_new = 8;
  double depth = -1;
  std::string filler_path;
  for (const auto& [k, v] : parse_options(split(body, ','), where)) {
    if (k == "len") len = to_int(v, k, where, 16, 1 << 24);
    else if (k == "depth") depth = to_double(v, k, where, 0.0, 1.0);
    else if (k == "n") n = to_int(v, k, where, 1, 10000);
    else if (k == "max_new") max_new = to_int(v, k, where, 1, 1024);
    else if (k == "filler") filler_path = v;
    else fail(where, "unknown option '{}' (passkey takes len, depth, n, max_new, filler)", k);
  }
  if (len == 0) fail(where, "len=L is required");
  if (depth < 0) fail(where, "depth=D is required (0 = start, 1 = end)");
  if (len + max_new > max_positions)
    fail(where, "context of {} + {} tokens is longer than the model's max_position_embeddings ({})", len, max_new,
         max_positions);
  std::vector<std::string> sentences;
  if (filler_path.empty()) {
    for (const char* f : kFillerSentences) sentences.push_back(f);
  } else {
    std::istringstream words(read_file(filler_path, 1 << 20));
    std::string w, cur;
    int count = 0;
    while (words >> w) {  // 12-word "sentences" of the file's own text
      cur += (cur.empty() ? "" : " ") + w;
      if (++count % 12 == 0) sentences.push_back(cur), cur.clear();
    }
    if (sentences.empty()) fail(filler_path, "too little text for passkey filler");
  }
  const std::string intro =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the important information there.";
  const std::string question = "What is the pass key? The pass key is";
  WorkloadSlice s;
  s.name = fmt::format("passkey_len{}_depth{}", len, depth);  // no "=": TEST_METRICS is key=value
  s.kind = WorkloadKind::Passkey;
  for (int i = 0; i < n; ++i) {
    std::mt19937 rng(1234u + static_cast<unsigned>(i));
    const int key = std::uniform_int_distribution<int>(10000, 99999)(rng);
    const std::string needle =
        fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key);
    auto build = [&](int count) {
      const int at = static_cast<int>(std::lround(depth * count));
      std::string text = intro;
      for (int j = 0; j <= count; ++j) {
        if (j == at) text += " " + needle;
        if (j < count) text += " " + sentences[j % sentences.size()];
      }
      return tok.encode(text + " " + question, /*add_bos=*/true);
    };
    // Largest filler count whose prompt fits in len tokens (token counts grow with the count).
    int lo = 0, hi = 1;
    if (static_cast<int>(build(0).size()) > len)
      fail(where, "len={} is too short for the pass key prompt ({} tokens without filler)", len, build(0).size());
    while (static_cast<int>(build(hi).size()) <= len) lo = hi, hi *= 2;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      (static_cast<int>(build(mid).size()) <= len ? lo : hi) = mid;
    }
    WorkloadItem it;
    it.prompt = build(lo);
    it.answer = std::to_string(key);
    it.max_new = max_new;
    s.items.push_back(std::move(it));
  }
  return s;
}

std::vector<std::string> filler_sentences(const std::string& filler_path) {
  std::vector<std::string> sentences;
  if (filler_path.empty()) {
    for (const char* f : kFillerSentences) sentences.push_back(f);
    return sentences;
  }
  std::istringstream words(read_file(filler_path, 1 << 22));
  std::string w, cur;
  int count = 0;
  while (words >> w) {  // 12-word "sentences" of the file's own text
    cur += (cur.empty() ? "" : " ") + w;
    if (++count % 12 == 0) sentences.push_back(cur), cur.clear();
  }
  if (sentences.empty()) fail(filler_path, "too little text for filler");
  return sentences;
}

WorkloadSlice load_ruler(const std::string& body, const std::string& where, const Tokenizer& tok, int max_positions) {
  int len = 0, n = 1, max_new = 32;
  unsigned seed = 1234;
  std::string task, filler_path;
  for (const auto& [k, v] : parse_options(split(body, ','), where)) {
    if (k == "task") task = v;
    else if (k == "len") len = to_int(v, k, where, 16, 1 << 24);
    else if (k == "n") n = to_int(v, k, where, 1, 10000);
    else if (k == "max_new") max_new = to_int(v, k, where, 1, 1024);
    else if (k == "seed") seed = static_cast<unsigned>(to_int(v, k, where, 0, 1 << 30));
    else if (k == "filler") filler_path = v;
    else fail(where, "unknown option '{}' (ruler takes task, len, n, max_new, seed, filler)", k);
  }
  if (!is_ruler_task(task))
    fail(where, "task must be niah_single, niah_multikey, niah_multivalue, niah_multiquery, vt or cwe, got '{}'", task);
  if (len == 0) fail(where, "len=L is required");
  // RULER's convention: len is the whole sequence, the prompt gets len - max_new tokens (prepare.py:
  // max_seq_length - tokens_to_generate), so len=1024 runs on a model of 1024 positions.
  if (len > max_positions)
    fail(where, "len={} is longer than the model's max_position_embeddings ({})", len, max_positions);
  if (max_new >= len) fail(where, "len={} leaves no room for a prompt after max_new={}", len, max_new);
  const std::vector<std::string> haystack = filler_sentences(filler_path);
  WorkloadSlice s;
  s.name = fmt::format("ruler_{}_len{}", task, len);
  s.kind = WorkloadKind::Ruler;
  const int prompt_len = len - max_new;
  for (int i = 0; i < n; ++i) {
    auto build = [&](int amount) { return tok.encode(build_ruler_prompt(task, seed, i, amount, haystack).text, true); };
    if (static_cast<int>(build(0).size()) > prompt_len)
      fail(where, "len={} is too short for the {} prompt ({} tokens without filler, + max_new={})", len, task, build(0).size(),
           max_new);
    int lo = 0, hi = 1;  // the most haystack that fits in prompt_len tokens
    while (static_cast<int>(build(hi).size()) <= prompt_len && hi < (1 << 20)) lo = hi, hi *= 2;
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      (static_cast<int>(build(mid).size()) <= prompt_len ? lo : hi) = mid;
    }
    const RulerPrompt p = build_ruler_prompt(task, seed, i, lo, haystack);
    WorkloadItem it;
    it.prompt = tok.encode(p.text, true);
    it.answers = p.answers;
    it.answer = p.answers.empty() ? "" : p.answers[0];
    it.scorer = Scorer::All;
    it.max_new = max_new;
    s.items.push_back(std::move(it));
  }
  return s;
}

void load_spec(const std::string& spec, const std::string& base_dir, const std::string& where, const Tokenizer& tok,
               int max_positions, int depth, std::vector<WorkloadSlice>& out, const ChatRenderer& chat) {
  const auto colon = spec.find(':');
  if (colon == std::string::npos)
    fail(where, "workload '{}' must look like text:PATH, jsonl:PATH, passkey:len=L,depth=D,n=N or file:PATH", spec);
  const std::string kind = spec.substr(0, colon), body = spec.substr(colon + 1);
  auto resolve = [&](const std::string& p) {
    return base_dir.empty() || fs::path(p).is_absolute() ? p : (fs::path(base_dir) / p).string();
  };
  if (kind == "passkey") {
    out.push_back(load_passkey(body, where, tok, max_positions));
    return;
  }
  if (kind == "ruler") {
    out.push_back(load_ruler(body, where, tok, max_positions));
    return;
  }
  auto parts = split(body, ';');
  if (trim(parts[0]).empty()) fail(where, "workload '{}' has no path", spec);
  const std::string path = resolve(trim(parts[0]));
  parts.erase(parts.begin());
  if (kind == "text") {
    out.push_back(load_text(path, parts, where, tok, max_positions));
  } else if (kind == "jsonl") {
    out.push_back(load_jsonl(path, parts, where, tok, max_positions, chat));
  } else if (kind == "file") {
    if (depth > 4) fail(where, "workload files nest too deeply");
    if (!parts.empty()) fail(where, "file: takes no options");
    std::istringstream in(read_file(path));
    std::string line;
    int lineno = 0, before = static_cast<int>(out.size());
    while (std::getline(in, line)) {
      ++lineno;
      const auto hash = line.find('#');
      if (hash != std::string::npos) line.erase(hash);
      line = trim(line);
      if (line.empty()) continue;
      load_spec(line, fs::path(path).parent_path().string(), path + ":" + std::to_string(lineno), tok, max_positions,
                depth + 1, out, chat);
    }
    if (static_cast<int>(out.size()) == before) fail(path, "the workload file lists no workloads");
  } else {
    fail(where, "unknown workload kind '{}' (expected text, jsonl, passkey, ruler or file)", kind);
  }
}

}  // namespace

std::string workload_kind_name(WorkloadKind k) {
  switch (k) {
    case WorkloadKind::Text: return "text";
    case WorkloadKind::Jsonl: return "jsonl";
    case WorkloadKind::Passkey: return "passkey";
    case WorkloadKind::Ruler: return "ruler";
  }
  return "?";
}

std::vector<WorkloadSlice> load_workloads(const std::vector<std::string>& specs, const Tokenizer& tok,
                                          int max_positions, const ChatRenderer& chat) {
  if (specs.empty()) fail("--workload", "at least one workload is required");
  std::vector<WorkloadSlice> out;
  for (const auto& s : specs) load_spec(trim(s), "", "--workload " + s, tok, max_positions, 0, out, chat);
  return out;
}

bool answer_exact_match(const std::string& output, const std::string& answer) {
  std::string first = output.substr(0, output.find('\n'));
  return trim(first) == trim(answer);
}

bool answer_contains(const std::string& output, const std::string& answer) {
  const std::string a = trim(answer);
  return !a.empty() && output.find(a) != std::string::npos;
}

}  // namespace kvscope
