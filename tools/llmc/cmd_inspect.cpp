// STUB (replace): llmc inspect.
#include "commands.h"
namespace llmc::cli {
RunFn setup_inspect(CLI::App&) { return [] { return 5; }; }
}  // namespace llmc::cli
