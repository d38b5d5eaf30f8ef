// Test helper: runs a body once per SIMD target the CPU supports.
#pragma once

#include <catch2/catch.hpp>

#include "kernels/cpu/kernels.h"

namespace llmc::test {

// Runs `body` once per SIMD target the CPU supports; dispatch is restored even when a REQUIRE throws.
template <class F>
void for_each_target(F&& body) {
  struct Restore {
    ~Restore() { kernels::force_simd_target(0); }
  } restore;
  for (int64_t t : kernels::simd_targets()) {
    kernels::force_simd_target(t);
    INFO("SIMD target " << kernels::simd_target_name(t));
    body();
  }
}

}  // namespace llmc::test
