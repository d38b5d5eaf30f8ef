// The llmc version string, recorded in every output file's provenance.
#pragma once

namespace llmc {
inline constexpr const char* kVersion = "0.1.0";
}
