// libFuzzer target: the GGUF parser on arbitrary bytes must return a value or an error, never crash.
#include <cstddef>
#include <cstdint>

#include "formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  for (bool require_tensors : {false, true}) {
    auto model = llmc::read_gguf_memory("fuzz.gguf", nullptr, data, size, require_tensors);
    if (model.ok())
      for (const auto& t : model->tensors()) (void)t.to_f32();
  }
  return 0;
}
