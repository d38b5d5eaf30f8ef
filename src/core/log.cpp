// Global log sink.
#include "core/log.h"

namespace llmc {
namespace {
LogSink* g_sink = nullptr;
}
void set_log_sink(LogSink* sink) { g_sink = sink; }
LogSink* log_sink() { return g_sink; }
}  // namespace llmc
