// STUB (replace): gguf_reader.
#include "formats/model_io.h"
namespace llmc {
Result<Model> read_gguf(const std::string& p, bool) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
