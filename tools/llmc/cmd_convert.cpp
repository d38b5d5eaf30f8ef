// STUB (replace): llmc convert.
#include "commands.h"
namespace llmc::cli {
RunFn setup_convert(CLI::App&) { return [] { return 5; }; }
}  // namespace llmc::cli
