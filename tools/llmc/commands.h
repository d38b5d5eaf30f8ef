// The subcommand table's row type and each subcommand's setup function.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "kernels/cpu/kernels.h"

namespace llmc::cli {

// A subcommand adds its options to `sub` and returns what runs it (returns the exit code).
using RunFn = std::function<int()>;

// --activations of the commands that run a model (eval, bench, generate): how Quant and Palette
// weights take their activations (kernels::QuantActivations, docs/runtime.md), stored in `mode`
// ("auto" when not given).
void add_activations_option(CLI::App& sub, std::string& mode);
// The mode that option names.
kernels::QuantActivations activations_mode(const std::string& mode);

struct CommandRow {
  const char* name;
  const char* description;
  RunFn (*setup)(CLI::App& sub);
};

RunFn setup_inspect(CLI::App& sub);
RunFn setup_convert(CLI::App& sub);
RunFn setup_synth(CLI::App& sub);
RunFn setup_generate(CLI::App& sub);
RunFn setup_eval(CLI::App& sub);
RunFn setup_bench(CLI::App& sub);
RunFn setup_prune(CLI::App& sub);
RunFn setup_tokenize(CLI::App& sub);
RunFn setup_detokenize(CLI::App& sub);
RunFn setup_quantize(CLI::App& sub);
RunFn setup_compress(CLI::App& sub);
RunFn setup_lowrank(CLI::App& sub);
RunFn setup_share(CLI::App& sub);

}  // namespace llmc::cli
