// llmc entry point: the subcommand table, error-to-exit-code mapping.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli_util.h"
#include "commands.h"
#include "core/version.h"

namespace llmc::cli {
namespace {

const CommandRow kCommands[] = {
    {"inspect", "Show a model's architecture, tokenizer, tensors and size", setup_inspect},
    {"convert", "Convert a model between .llmc, GGUF and safetensors", setup_convert},
    {"quantize", "Quantize a model's weights (RTN, GPTQ, AWQ, binary, ternary, mixed precision)", setup_quantize},
    {"compress", "Run a compression recipe (YAML stages of passes) on a model", setup_compress},
    {"generate", "Continue a prompt with a model (greedy, sampling or beam search), streaming text", setup_generate},
    {"tokenize", "Print the token ids of a text (--text or --file)", setup_tokenize},
    {"detokenize", "Print the text of token ids (--ids or stdin)", setup_detokenize},
    {"synth", "Write a random-weight model with the shape of a real one (format/speed tests only)", setup_synth},
    {"eval", "Perplexity on a text, and KLD/agreement against a reference model", setup_eval},
    {"bench", "Prefill/decode speed, load time, peak memory, memory-bandwidth use", setup_bench},
    {"prune", "Prune a model (magnitude, Wanda, SparseGPT; unstructured or N:M) into a .llmc file", setup_prune},
    {"lowrank", "Low-rank / Tucker decomposition of weights (SVD, activation-aware SVD, Tucker)", setup_lowrank},
    {"share", "Share weights: k-means codebooks of 2^B entries (Palette), optionally weighted, with outliers",
     setup_share},
};

}  // namespace
}  // namespace llmc::cli

int main(int argc, char** argv) {
  using namespace llmc::cli;
  CLI::App app{"llmc: make LLMs small and fast, and prove what it cost"};
  app.set_version_flag("--version", std::string("llmc ") + llmc::kVersion);
  app.require_subcommand(1);
  for (int i = 0; i < argc; ++i) command_line() += (i ? " " : "") + std::string(i ? argv[i] : "llmc");
  StderrSink sink;
  llmc::set_log_sink(&sink);
  RunFn run;
  for (const auto& row : kCommands) {
    CLI::App* sub = app.add_subcommand(row.name, row.description);
    RunFn fn = row.setup(*sub);
    sub->callback([&run, fn] { run = fn; });
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  try {
    return run ? run() : kExitUsage;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "llmc: error: out of memory\n");
    return kExitInternal;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llmc: error: %s\n", e.what());
    return kExitInternal;
  }
}
