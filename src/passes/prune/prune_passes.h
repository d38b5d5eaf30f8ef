// Factories of the pruning passes (rows of the pass registry).
#pragma once

#include <memory>

#include "passes/pass.h"

namespace llmc {

std::unique_ptr<Pass> make_prune_magnitude();
std::unique_ptr<Pass> make_prune_wanda();
std::unique_ptr<Pass> make_prune_sparsegpt();
std::unique_ptr<Pass> make_prune_heads();
std::unique_ptr<Pass> make_prune_channels();
std::unique_ptr<Pass> make_prune_layers();

}  // namespace llmc
