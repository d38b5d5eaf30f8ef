// Test helper: a reference runtime whose logits are computed once. The first evaluation records
// the logits of every forward call; later evaluations (pass()) of the same chunks get them
// back in the same order (a different call sequence fails the test).
#pragma once

#include <catch2/catch.hpp>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "runtime/runtime.h"

namespace llmc::test {

class ReplayRuntime final : public Runtime {
 public:
  explicit ReplayRuntime(std::unique_ptr<Runtime> rt) : rt_(std::move(rt)) {}
  // The runtime of the next evaluation: recording the first time, replaying from the start after.
  Runtime* pass() {
    if (passes_++ > 0) {
      recording_ = false;
      next_ = 0;
    }
    return this;
  }
  Result<void> forward(std::span<const int32_t> tokens, int64_t pos, float* logits, bool all_logits) override {
    const size_t n = logits ? (all_logits ? tokens.size() : 1) * static_cast<size_t>(vocab_size()) : 0;
    if (recording_) {
      LLMC_TRY(rt_->forward(tokens, pos, logits, all_logits));
      if (logits) calls_.emplace_back(logits, logits + n);
      return {};
    }
    if (!logits) return {};
    REQUIRE(next_ < calls_.size());
    REQUIRE(calls_[next_].size() == n);
    std::memcpy(logits, calls_[next_++].data(), n * sizeof(float));
    return {};
  }
  Result<void> copy_cache_from(const Runtime&, int64_t) override {
    return make_error(ErrorCode::kUnsupported, "replay runtime");
  }
  int64_t vocab_size() const override { return rt_->vocab_size(); }
  int64_t max_context() const override { return rt_->max_context(); }
  uint64_t weight_bytes_per_token() const override { return rt_->weight_bytes_per_token(); }

 private:
  std::unique_ptr<Runtime> rt_;
  bool recording_ = true;
  int passes_ = 0;
  size_t next_ = 0;
  std::vector<std::vector<float>> calls_;
};

}  // namespace llmc::test
