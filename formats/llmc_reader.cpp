// STUB (replace): llmc_reader.
#include "formats/model_io.h"
namespace llmc {
Result<Model> read_llmc(const std::string& p) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
