// STUB (replace): llama2c_reader.
#include "formats/model_io.h"
namespace llmc {
Result<Model> read_llama2c(const std::string& p) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
Result<TokenizerData> read_llama2c_tokenizer(const std::string& p, int64_t) { return make_error(ErrorCode::kUnsupported, p, ": not built yet"); }
}  // namespace llmc
