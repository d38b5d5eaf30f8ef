// Shared output of `llmc eval` and `llmc bench`: command line capture, report files, stdout summary.
#include "report_output.h"

#include <cstdio>
#include <fstream>
#include <iterator>

#include "cli_util.h"

namespace llmc::cli {

std::string current_command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  if (raw.empty()) return "llmc";
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  return raw;
}

int emit_report(const Json& report, const ReportTargets& targets, const std::vector<std::string>& inputs) {
  if (auto valid = validate_report(report); !valid.ok()) return report_error(valid.error());
  struct Output {
    const std::string& path;
    std::string text;
  };
  const Output outputs[] = {
      {targets.json_path, targets.json_path.empty() ? std::string() : report.dump(2) + "\n"},
      {targets.md_path, targets.md_path.empty() ? std::string() : render_markdown(report)},
  };
  bool to_stdout = false;
  for (const Output& o : outputs) {
    if (o.path.empty()) continue;
    if (o.path == "-") {
      std::fwrite(o.text.data(), 1, o.text.size(), stdout);
      to_stdout = true;
      continue;
    }
    if (auto w = write_report_file(o.path, o.text, inputs, targets.force); !w.ok()) return report_error(w.error());
  }
  const std::string summary = render_summary(report);
  std::fputs(summary.c_str(), to_stdout ? stderr : stdout);
  return kExitOk;
}

}  // namespace llmc::cli
