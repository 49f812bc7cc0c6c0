#include "core/replay/ruler.h"

#include <algorithm>
#include <iterator>
#include <random>
#include <set>

#include <fmt/format.h>

namespace kvscope {

namespace {

const char* const kAdjectives[] = {"ancient", "bitter", "brave", "calm", "clever", "crimson", "curious", "dusty",
                                   "eager", "fancy", "gentle", "golden", "hollow", "humble", "icy", "jolly",
                                   "lively", "lucky", "misty", "noble", "odd", "proud", "quiet", "rapid",
                                   "rusty", "silent", "smooth", "sturdy", "tender", "vivid", "wild", "young"};
const char* const kNouns[] = {"anchor", "badger", "beacon", "candle", "canyon", "comet", "falcon", "fjord",
                              "garden", "harbor", "island", "lantern", "meadow", "mirror", "needle", "orchard",
                              "pebble", "pillow", "quarry", "river", "saddle", "shadow", "spiral", "summit",
                              "thistle", "tunnel", "valley", "violin", "walnut", "willow", "window", "zephyr"};
const char* const kSyllables[] = {"ba", "ko", "ri", "ten", "lu", "mar", "vo", "sel", "di", "nak", "pu", "shi",
                                  "tor", "e", "gla", "win", "qu", "ram", "fe", "zo", "ly", "cra", "mo", "dun"};

struct Task {
  std::vector<std::string> keys, values;  // needles: keys[i] -> values[i]
  std::vector<double> depths;             // where each needle (or chain link) goes, 0..1
  std::vector<std::string> query_keys;
  std::vector<std::string> answers;
  std::vector<std::string> common, rare;  // cwe
};

std::string seven_digits(std::mt19937& rng) { return std::to_string(std::uniform_int_distribution<int>(1000000, 9999999)(rng)); }

std::string pick_key(std::mt19937& rng, std::set<std::string>& used) {
  for (;;) {
    std::string k = std::string(kAdjectives[rng() % std::size(kAdjectives)]) + "-" + kNouns[rng() % std::size(kNouns)];
    if (used.insert(k).second) return k;
  }
}

std::string pseudo_word(std::mt19937& rng) {
  std::string w;
  const int n = 2 + static_cast<int>(rng() % 2);
  for (int i = 0; i < n; ++i) w += kSyllables[rng() % std::size(kSyllables)];
  return w;
}

Task make_task(const std::string& task, unsigned seed, int item) {
  std::mt19937 rng(seed + static_cast<unsigned>(item) * 7919u);
  Task t;
  std::set<std::string> used;
  auto depth = [&] { return std::uniform_real_distribution<double>(0.05, 0.95)(rng); };
  if (task == "niah_single" || task == "niah_multikey" || task == "niah_multiquery") {
    const int n = task == "niah_single" ? 1 : 4;
    for (int i = 0; i < n; ++i) {
      t.keys.push_back(pick_key(rng, used));
      t.values.push_back(seven_digits(rng));
      t.depths.push_back(depth());
    }
    if (task == "niah_multiquery") {
      t.query_keys = t.keys;
      t.answers = t.values;
    } else {
      const size_t q = rng() % t.keys.size();
      t.query_keys = {t.keys[q]};
      t.answers = {t.values[q]};
    }
  } else if (task == "niah_multivalue") {
    const std::string key = pick_key(rng, used);
    for (int i = 0; i < 4; ++i) {
      t.keys.push_back(key);
      t.values.push_back(seven_digits(rng));
      t.depths.push_back(depth());
    }
    t.query_keys = {key};
    t.answers = t.values;
  } else if (task == "vt") {
    const std::string value = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
    std::vector<std::string> names;
    while (names.size() < 5) {
      std::string v;
      for (int i = 0; i < 5; ++i) v += static_cast<char>('A' + rng() % 26);
      if (used.insert(v).second) names.push_back(v);
    }
    for (size_t i = 0; i < names.size(); ++i) {
      t.keys.push_back(names[i]);
      t.values.push_back(i == 0 ? value : "VAR " + names[i - 1]);
      t.depths.push_back(0.1 + 0.16 * static_cast<double>(i));  // in chain order
    }
    t.query_keys = {value};
    t.answers = names;
  } else {  // cwe
    std::set<std::string> words;
    while (words.size() < 10) words.insert(pseudo_word(rng));
    t.common.assign(words.begin(), words.end());
    std::shuffle(t.common.begin(), t.common.end(), rng);
    while (t.rare.size() < 4000) {
      std::string w = pseudo_word(rng);
      if (!words.count(w)) words.insert(w), t.rare.push_back(w);
    }
    t.answers = t.common;
  }
  return t;
}

}  // namespace

bool is_ruler_task(const std::string& t) {
  return t == "niah_single" || t == "niah_multikey" || t == "niah_multivalue" || t == "niah_multiquery" || t == "vt" ||
         t == "cwe";
}

RulerPrompt build_ruler_prompt(const std::string& task, unsigned seed, int item, int amount,
                               const std::vector<std::string>& haystack) {
  const Task t = make_task(task, seed, item);
  RulerPrompt p;
  p.answers = t.answers;
  if (task == "cwe") {
    // 10 common words 6 times each, `amount` rare words twice each, shuffled by the item's seed.
    std::vector<std::string> list;
    for (const auto& w : t.common) list.insert(list.end(), 6, w);
    for (int i = 0; i < std::min<int>(amount, static_cast<int>(t.rare.size())); ++i) list.insert(list.end(), 2, t.rare[i]);
    std::mt19937 rng(seed + static_cast<unsigned>(item) * 104729u);
    std::shuffle(list.begin(), list.end(), rng);
    std::string ctx;
    for (size_t i = 0; i < list.size(); ++i) ctx += fmt::format("{}. {} ", i + 1, list[i]);
    p.text = "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
             "that appear most often.\n" + ctx +
             "\nQuestion: What are the 10 most common words in the above list? Answer: The top 10 words that appear "
             "most often in the list are:";
    return p;
  }
  // Haystack sentences with the needles inserted at their depths (in order of depth; ties keep order).
  std::vector<std::pair<double, std::string>> needles;
  for (size_t i = 0; i < t.keys.size(); ++i) {
    const std::string s = task == "vt" ? fmt::format("VAR {} = {}.", t.keys[i], t.values[i])
                                       : fmt::format("One of the special magic numbers for {} is: {}.", t.keys[i], t.values[i]);
    needles.emplace_back(t.depths[i], s);
  }
  std::stable_sort(needles.begin(), needles.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string ctx;
  size_t next = 0;
  for (int j = 0; j <= amount; ++j) {
    while (next < needles.size() && static_cast<int>(needles[next].first * amount + 0.5) <= j) ctx += needles[next++].second + " ";
    if (j < amount && !haystack.empty()) ctx += haystack[static_cast<size_t>(j) % haystack.size()] + " ";
  }
  if (task == "vt") {
    p.text = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" + ctx +
             "\nQuestion: Find all variables that are assigned the value " + t.query_keys[0] +
             " in the text above. Answer: According to the chain(s) of variable assignment in the text above, 5 "
             "variables are assigned the value " + t.query_keys[0] + ", they are:";
    return p;
  }
  std::string query;
  for (size_t i = 0; i < t.query_keys.size(); ++i)
    query += (i == 0 ? "" : i + 1 == t.query_keys.size() ? " and " : ", ") + t.query_keys[i];
  p.text = "Some special magic numbers are hidden within the following text. Make sure to memorize it. I will quiz you "
           "about the numbers afterwards.\n" + ctx + "\nWhat are all the special magic numbers for " + query +
           " mentioned in the provided text? The special magic numbers for " + query + " mentioned in the provided text are";
  return p;
}

}  // namespace kvscope
