// STUB (replace): llmc_writer.
#include "formats/model_io.h"
namespace llmc {
Result<void> write_llmc(const Model&, const std::string& p, const LlmcWriteOptions&) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
