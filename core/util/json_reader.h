#pragma once
// Reads the fields of one JSON object for the hand-written formats (policies, sweep specs): every
// error names the file and the JSON path ("p.json: $.k.bits: must be an integer in 1..8"), and
// unknown keys are rejected (a typo like "group_szie" must not be silently ignored).
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/util/error.h"

namespace kvscope {

class JsonReader {
 public:
  JsonReader(const nlohmann::json& j, std::string where, std::string path) : j_(j), where_(std::move(where)), path_(std::move(path)) {
    if (!j_.is_object()) err("", "must be an object");
  }
  [[noreturn]] void err(const std::string& key, const std::string& problem) const {
    throw Error(where_ + ": " + path_ + (key.empty() ? "" : "." + key) + ": " + problem);
  }
  bool has(const std::string& key) {
    seen_.push_back(key);
    return j_.contains(key);
  }
  const nlohmann::json& at(const std::string& key) const { return j_.at(key); }
  std::string str(const std::string& key, const std::string& dflt) {
    if (!has(key)) return dflt;
    if (!j_[key].is_string()) err(key, "must be a string");
    return j_[key].get<std::string>();
  }
  int integer(const std::string& key, int dflt, int lo, int hi) {
    if (!has(key)) return dflt;
    const nlohmann::json& v = j_[key];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      err(key, fmt::format("must be an integer in {}..{}", lo, hi));
    return v.get<int>();
  }
  double number(const std::string& key, double dflt, double lo, double hi, bool lo_open = false) {
    if (!has(key)) return dflt;
    const nlohmann::json& v = j_[key];
    if (!v.is_number()) err(key, "must be a number");
    double d = v.get<double>();
    if (!(lo_open ? d > lo : d >= lo) || !(d <= hi)) err(key, fmt::format("must be in {}{}, {}]", lo_open ? "(" : "[", lo, hi));
    return d;
  }
  bool boolean(const std::string& key, bool dflt) {
    if (!has(key)) return dflt;
    if (!j_[key].is_boolean()) err(key, "must be true or false");
    return j_[key].get<bool>();
  }
  // An array of non-empty strings; absent = empty.
  std::vector<std::string> strings(const std::string& key) {
    std::vector<std::string> out;
    if (!has(key)) return out;
    const nlohmann::json& v = j_[key];
    if (!v.is_array()) err(key, "must be an array of strings");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string() || v[i].get<std::string>().empty())
        err(key + "[" + std::to_string(i) + "]", "must be a non-empty string");
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }
  void reject_unknown(const std::vector<std::string>& also_allowed = {}) const {
    for (auto it = j_.begin(); it != j_.end(); ++it) {
      bool ok = std::find(seen_.begin(), seen_.end(), it.key()) != seen_.end() ||
                std::find(also_allowed.begin(), also_allowed.end(), it.key()) != also_allowed.end();
      if (!ok) err(it.key(), "unknown field");
    }
  }
  const std::string& where() const { return where_; }
  const std::string& path() const { return path_; }

 private:
  const nlohmann::json& j_;
  std::string where_, path_;
  std::vector<std::string> seen_;
};

}  // namespace kvscope
