// Per-sequence float arrays of the sequential calibration (residual streams, activations kept
// between stages): in memory, or in an unlinked temporary file when they would not fit the
// memory budget (docs/calibration.md, "Memory").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace llmc {

class ActivationStore {
 public:
  // floats[i]: length of item i. spill_dir empty: the items live in memory. Otherwise they live in
  // a temporary file in spill_dir, unlinked as soon as it exists (nothing is left behind, whatever
  // happens) and allocated up front, so that a full disk is an error here rather than half-way.
  static Result<std::unique_ptr<ActivationStore>> create(const std::vector<int64_t>& floats,
                                                         const std::string& spill_dir);
  ~ActivationStore();
  ActivationStore(const ActivationStore&) = delete;
  ActivationStore& operator=(const ActivationStore&) = delete;

  bool spilled() const { return fd_ >= 0; }
  size_t size() const { return offsets_.size() - 1; }
  int64_t floats(size_t i) const { return offsets_[i + 1] - offsets_[i]; }

  // Item i to read and modify: in memory, the item itself; spilled, `buffer` (grown to fit) filled
  // from the file.
  Result<float*> load(size_t i, std::vector<float>& buffer);
  // Where to build item i from scratch: the item itself in memory, else `buffer` (not read).
  float* slot(size_t i, std::vector<float>& buffer);
  // Stores `data` (from load or slot) as item i: writes it to the file when spilled.
  Result<void> save(size_t i, const float* data);

 private:
  ActivationStore() = default;
  // pwrite (write) or pread of item i's bytes from / into data, all of them.
  Result<void> transfer(bool write, size_t i, float* data);
  std::vector<int64_t> offsets_;  // prefix sums of the item lengths, in floats
  std::vector<float> memory_;     // all items, when not spilled
  int fd_ = -1;
  std::string dir_;
};

}  // namespace llmc
