// libFuzzer target: the safetensors header parser, config.json and tokenizer.json parsers on arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/hf_common.h"
#include "formats/hf_tokenizer.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto header = llmc::parse_safetensors("fuzz.safetensors", data, size);
  if (header.ok()) {
    // Every accepted range must lie inside the buffer.
    for (const auto& t : header->tensors)
      if (t.begin > t.end || t.end > size) __builtin_trap();
  }
  const std::string text(reinterpret_cast<const char*>(data), size);
  llmc::HfConfigInfo info;
  (void)llmc::parse_hf_config("config.json", text, &info);
  (void)llmc::parse_hf_tokenizer("tokenizer.json", text, "");
  return 0;
}
