// Test helpers for quantization passes: setting pass options by name, stories260K + eval text.
#pragma once

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "passes/pass.h"
#include "runtime/runtime.h"
#include "stories.h"
#include "test_util.h"
#include "verify/perplexity.h"

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

// KLD of `q` against `ref` on issue 4's protocol (tinystories-sample.txt, ctx 256); max_chunks 0 =
// all chunks; threads 0 = all cores.
inline KldResult stories_kld(const Model& q, const Model& ref, const Tokenizer& tokenizer, int64_t max_chunks,
                             int threads) {
  auto text = read_text_file(fixture("text/tinystories-sample.txt"));
  REQUIRE(text.ok());
  RuntimeOptions ropt;
  ropt.max_context = 256;
  ropt.threads = threads;
  auto rq = Runtime::create(q, ropt);
  auto rr = Runtime::create(ref, ropt);
  REQUIRE(rq.ok());
  REQUIRE(rr.ok());
  EvalOptions opt;
  opt.ctx = 256;
  opt.max_chunks = max_chunks;
  auto r = evaluate_text(**rq, rr->get(), tokenizer, *text, opt);
  REQUIRE(r.ok());
  REQUIRE(r->kld.has_value());
  return *r->kld;
}

}  // namespace llmc::test
