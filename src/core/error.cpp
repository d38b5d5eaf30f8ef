// Error code names and the invariant-failure handler.
#include "core/error.h"

namespace llmc {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kIo: return "io";
    case ErrorCode::kFormat: return "format";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kInvalidArgument: return "invalid-argument";
    case ErrorCode::kShape: return "shape";
    case ErrorCode::kExists: return "exists";
    case ErrorCode::kRecipe: return "recipe";
    case ErrorCode::kInternal: return "internal";
  }
  return "unknown";
}

void check_failed(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "llmc: internal invariant failed at %s:%d: %s %s\n", file, line, expr, msg.c_str());
  std::abort();
}

}  // namespace llmc
