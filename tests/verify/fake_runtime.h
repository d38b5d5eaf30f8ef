// A deterministic stand-in for Runtime: a bigram model whose next-token distribution is a table row.
#pragma once

#include <cmath>
#include <vector>

#include "runtime/runtime.h"

namespace llmc::test {

// logits(position p) = log(table[token at p]) — p(next | current) = table[current][next] exactly
// (rows sum to 1). Records every call so tests can check positions, tokens and KV-cache use.
class BigramRuntime : public Runtime {
 public:
  struct Call {
    std::vector<int32_t> tokens;
    int64_t pos;
    bool want_logits;
    bool all_logits;
  };

  BigramRuntime(std::vector<std::vector<double>> table, int64_t max_context)
      : table_(std::move(table)), max_context_(max_context) {}

  Result<void> forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) override {
    if (pos < 0 || pos > filled_) return make_error(ErrorCode::kInternal, "fake: position gap at ", pos);
    if (pos + static_cast<int64_t>(tokens.size()) > max_context_)
      return make_error(ErrorCode::kInvalidArgument, "fake: context full");
    calls.push_back({std::vector<int32_t>(tokens.begin(), tokens.end()), pos, logits != nullptr, all_logits});
    filled_ = pos + static_cast<int64_t>(tokens.size());
    const int64_t v = vocab_size();
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= v) return make_error(ErrorCode::kInvalidArgument, "fake: bad id");
      if (logits == nullptr || (!all_logits && i + 1 != tokens.size())) continue;
      float* row = all_logits ? logits + static_cast<int64_t>(i) * v : logits;
      for (int64_t j = 0; j < v; ++j) row[j] = static_cast<float>(std::log(table_[tokens[i]][j]) + offset);
    }
    return {};
  }
  Result<void> copy_cache_from(const Runtime&, int64_t) override {
    return make_error(ErrorCode::kUnsupported, "fake: no cache copies");
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(table_.size()); }
  int64_t max_context() const override { return max_context_; }
  uint64_t weight_bytes_per_token() const override { return 1000; }

  std::vector<Call> calls;
  double offset = 0;  // added to every logit (softmax must not care)

 private:
  std::vector<std::vector<double>> table_;
  int64_t max_context_;
  int64_t filled_ = 0;
};

}  // namespace llmc::test
