// Factories of the quantization passes for the registry, and the shared RTN-style run() body.
#pragma once

#include <memory>
#include <string_view>

#include "passes/quant/quant_methods.h"

namespace llmc {

// Quantizes every selected weight with options.spec() through quantize_model_rtn.
Result<PassReport> run_quant_pass(std::string_view pass, const QuantOptions& options, Model& model, PassContext& ctx);

std::unique_ptr<Pass> make_quant_rtn_pass();
std::unique_ptr<Pass> make_quant_binary_pass();
std::unique_ptr<Pass> make_quant_ternary_pass();

}  // namespace llmc
