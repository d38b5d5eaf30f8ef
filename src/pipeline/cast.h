// Storage-type conversion of a whole model (what `llmc convert --dtype` does before writing).
#pragma once

#include "core/model.h"
#include "formats/model_io.h"

namespace llmc {

class ScratchFile;  // formats/scratch_file.h

// Converts weight tensors to `dtype`: f32/f16/bf16 become Dense of that type; q8_0/q4_0 become
// Quant{8|4 bits, symmetric, group 32, f16 scales} with ggml's reference rounding (the same
// values GGUF Q8_0/Q4_0 hold). 1-D tensors (norms, biases) stay f32; a weight whose row length
// is not a multiple of 32 cannot take q8_0/q4_0 and becomes f16 (logged). kKeep changes nothing.
// Tensors are converted a block of rows at a time; the converted ones go to `scratch` when given
// (formats/scratch_file.h) and the input's mapped pages are given back as each is replaced.
void cast_model(Model& model, ExportDType dtype, ScratchFile* scratch = nullptr);

}  // namespace llmc
