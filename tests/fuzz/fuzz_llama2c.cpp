// libFuzzer target: the llama2.c checkpoint and tokenizer.bin parsers on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "formats/llama2c_reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmc;
  const Bytes file = Bytes::owned(std::vector<uint8_t>(data, data + size));
  Result<Model> model = parse_llama2c("fuzz.bin", file);
  if (model.ok()) {
    // A parsed model must be fully decodable: every buffer matches its shape.
    for (const Tensor& t : model->tensors()) {
      if (!validate_encoding(*t.encoding, t.shape).ok()) __builtin_trap();
      if (t.rows() > 0) {
        std::vector<float> row(static_cast<size_t>(t.cols()));
        t.rows_to_f32(t.rows() - 1, t.rows(), row.data());
      }
    }
  }
  for (int64_t vocab : {int64_t(-1), int64_t(3), int64_t(512)}) {
    Result<TokenizerData> tok = parse_llama2c_tokenizer("fuzz.tok", data, size, vocab);
    if (tok.ok() && (tok->tokens.size() != tok->scores.size() || tok->tokens.size() != tok->token_types.size()))
      __builtin_trap();
  }
  return 0;
}
