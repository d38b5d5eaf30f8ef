// The calibration flags of the one-stage recipe commands (--calib, --calib-self, --calib-samples,
// --calib-ctx) and the recipe's calibration section they give.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "core/error.h"
#include "pipeline/calibration.h"

namespace llmc::cli {

struct CalibFlags {
  std::string file;
  int64_t self = 0;
  int64_t samples = 0;
  int64_t ctx = 0;
};

void add_calib_flags(CLI::App& sub, CalibFlags& flags);

// The calibration section (nullopt when no flag was given), seeded with `seed`; kInvalidArgument
// for contradictory flags (--calib with --calib-self, sizes without a source).
Result<std::optional<CalibOptions>> calib_from_flags(const CalibFlags& flags, uint64_t seed);

}  // namespace llmc::cli
