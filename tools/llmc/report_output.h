// Shared output of `llmc eval` and `llmc bench`: command line capture, report files, stdout summary.
#pragma once

#include <string>
#include <vector>

#include "verify/report.h"

namespace llmc::cli {

// The process's argv joined by spaces (from /proc/self/cmdline; "llmc" when unavailable).
std::string current_command_line();

struct ReportTargets {
  std::string json_path;  // "" = none, "-" = stdout
  std::string md_path;    // "" = none, "-" = stdout
  bool force = false;
};

// Validates the report, writes the requested files (atomically) and prints the human summary to
// stdout, or to stderr when a report goes to stdout. Returns the exit code.
int emit_report(const Json& report, const ReportTargets& targets, const std::vector<std::string>& inputs);

}  // namespace llmc::cli
