// STUB (replace): gguf_writer.
#include "formats/model_io.h"
namespace llmc {
Result<void> write_gguf(const Model&, const std::string& p, const GgufWriteOptions&) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
