// STUB (replace): llmc synth.
#include "commands.h"
namespace llmc::cli {
RunFn setup_synth(CLI::App&) { return [] { return 5; }; }
}  // namespace llmc::cli
