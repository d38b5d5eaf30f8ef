// STUB (replace): safetensors_writer.
#include "formats/model_io.h"
namespace llmc {
Result<void> write_safetensors(const Model&, const std::string& p, const SafetensorsWriteOptions&) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
