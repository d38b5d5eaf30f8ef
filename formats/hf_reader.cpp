// STUB (replace): hf_reader.
#include "formats/model_io.h"
namespace llmc {
Result<Model> read_hf(const std::string& p) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
Result<TokenizerData> read_hf_tokenizer(const std::string& p) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
