// CLI flags generated from pass options (the OptionVisitor declarations): one flag per option name
// over a set of passes, and the given values as typed JSON for set_options_from_json.
#pragma once

#include <CLI/CLI.hpp>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "passes/pass.h"
#include "pipeline/pass_options.h"

namespace llmc::cli {

class PassFlags {
 public:
  // Adds "--group-size"-style flags for every distinct option name of `passes` not in `skip`; the
  // help text names the passes that declare the option and its default.
  void add(CLI::App& sub, const std::vector<std::unique_ptr<Pass>>& passes, const std::set<std::string>& skip);
  // {option name: value} of the flags given on the command line, typed by the option kind.
  nlohmann::ordered_json given() const;

 private:
  struct Flag {
    std::string name;
    OptionKind kind = OptionKind::kBool;
    CLI::Option* opt = nullptr;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    std::string s;
    std::vector<std::string> list;
  };
  std::deque<Flag> flags_;  // stable addresses: CLI11 binds to the members
};

}  // namespace llmc::cli
