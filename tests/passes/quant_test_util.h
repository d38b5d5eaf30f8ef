// Test helpers for quantization passes: setting pass options by name, stories260K + eval text.
#pragma once

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "passes/pass.h"

namespace llmc::test {

// Sets declared options from "name" -> value text; records which names were declared.
class SetOptions : public OptionVisitor {
 public:
  explicit SetOptions(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  void option(const char* name, bool& v, const char*) override {
    if (auto s = take(name)) v = *s == "true" || *s == "1";
  }
  void option(const char* name, int64_t& v, const char*) override {
    if (auto s = take(name)) v = std::stoll(*s);
  }
  void option(const char* name, double& v, const char*) override {
    if (auto s = take(name)) v = std::stod(*s);
  }
  void option(const char* name, std::string& v, const char*, std::span<const char* const>) override {
    if (auto s = take(name)) v = *s;
  }
  void option(const char* name, std::vector<std::string>& v, const char*) override {
    if (auto s = take(name)) v = {*s};
  }
  // Names given but never declared by the pass.
  const std::map<std::string, std::string>& unused() const { return values_; }

 private:
  std::optional<std::string> take(const char* name) {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    std::string v = it->second;
    values_.erase(it);
    return v;
  }
  std::map<std::string, std::string> values_;
};

}  // namespace llmc::test
