// llama2.c checkpoint (v0 legacy, v1 fp32, v2 int8) and tokenizer.bin parsers over in-memory bytes.
#pragma once

#include <cstdint>
#include <string>

#include "core/bytes.h"
#include "core/model.h"

namespace llmc {

// Parses a whole llama2.c checkpoint held in `file`; tensors are views of `file` where the
// stored layout matches the IR (fp32 weights, v2 scales) and owned copies otherwise (v2 codes).
// `name` is used in error messages only.
Result<Model> parse_llama2c(const std::string& name, const Bytes& file);

// Parses a llama2.c tokenizer.bin; vocab_size < 0 reads tokens until the end of the data.
Result<TokenizerData> parse_llama2c_tokenizer(const std::string& name, const uint8_t* data, size_t size,
                                              int64_t vocab_size);

}  // namespace llmc
