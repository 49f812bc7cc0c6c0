#include "core/replay/scoring.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <sstream>

namespace kvscope {

bool parse_scorer(const std::string& n, Scorer& out) {
  if (n == "exact") out = Scorer::Exact;
  else if (n == "f1") out = Scorer::F1;
  else if (n == "rouge_l") out = Scorer::RougeL;
  else if (n == "contains") out = Scorer::Contains;
  else if (n == "all") out = Scorer::All;
  else if (n == "first_line") out = Scorer::FirstLine;
  else return false;
  return true;
}

const char* scorer_name(Scorer s) {
  switch (s) {
    case Scorer::FirstLine: return "first_line";
    case Scorer::Exact: return "exact";
    case Scorer::F1: return "f1";
    case Scorer::RougeL: return "rouge_l";
    case Scorer::Contains: return "contains";
    case Scorer::All: return "all";
  }
  return "?";
}

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  std::string x;
  while (in >> x) w.push_back(x);
  return w;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  std::string t;
  for (char c : lower(s))
    if (!std::ispunct(static_cast<unsigned char>(c))) t += c;  // ASCII punctuation, as string.punctuation
  std::string out;
  for (const auto& w : words(t)) {
    if (w == "a" || w == "an" || w == "the") continue;
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

double token_f1(const std::string& output, const std::string& answer) {
  const auto p = words(normalize_answer(output)), g = words(normalize_answer(answer));
  std::map<std::string, int> count;
  for (const auto& w : g) ++count[w];
  int common = 0;
  for (const auto& w : p)
    if (count[w] > 0) --count[w], ++common;
  if (common == 0) return 0;
  const double prec = static_cast<double>(common) / p.size(), rec = static_cast<double>(common) / g.size();
  return 2 * prec * rec / (prec + rec);
}

double rouge_l(const std::string& output, const std::string& answer) {
  const auto a = words(output), b = words(answer);
  if (a.empty() || b.empty()) return 0;
  std::vector<int> prev(b.size() + 1, 0), cur(b.size() + 1, 0);  // LCS by rows
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  const double lcs = prev[b.size()];
  if (lcs == 0) return 0;
  const double r = lcs / b.size(), p = lcs / a.size();
  return 2 * r * p / (r + p);
}

double score_answer(Scorer s, const std::string& output, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0;
  if (s == Scorer::All) {
    const std::string o = lower(output);
    int hit = 0;
    for (const auto& a : answers) hit += o.find(lower(trim(a))) != std::string::npos && !trim(a).empty();
    return static_cast<double>(hit) / answers.size();
  }
  double best = 0;
  for (const auto& a : answers) {
    double v = 0;
    switch (s) {
      case Scorer::FirstLine: v = trim(output.substr(0, output.find('\n'))) == trim(a); break;
      case Scorer::Exact: v = normalize_answer(output) == normalize_answer(a); break;
      case Scorer::F1: v = token_f1(output, a); break;
      case Scorer::RougeL: v = rouge_l(output, a); break;
      case Scorer::Contains: {
        const std::string n = normalize_answer(a);
        v = !n.empty() && normalize_answer(output).find(n) != std::string::npos;
        break;
      }
      case Scorer::All: break;
    }
    best = std::max(best, v);
  }
  return best;
}

}  // namespace kvscope
