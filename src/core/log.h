// The library's only way to talk to the user: log lines and progress updates go to a sink
// that the tool installs (the CLI prints them to stderr; tests may capture them).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"

namespace llmc {

enum class LogLevel : uint8_t { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

class LogSink {
 public:
  virtual ~LogSink() = default;
  virtual void log(LogLevel level, std::string_view message) = 0;
  // `done` of `total` units of `task` finished; `unit` names the unit ("layers", "chunks").
  virtual void progress(std::string_view task, int64_t done, int64_t total, std::string_view unit) = 0;
};

// Installs the sink (nullptr = silent). Not thread-safe to change while work runs.
void set_log_sink(LogSink* sink);
LogSink* log_sink();

template <class... Args>
void log_msg(LogLevel level, Args&&... args) {
  if (LogSink* s = log_sink()) s->log(level, str_cat(std::forward<Args>(args)...));
}
template <class... Args>
void log_info(Args&&... args) {
  log_msg(LogLevel::kInfo, std::forward<Args>(args)...);
}
template <class... Args>
void log_warn(Args&&... args) {
  log_msg(LogLevel::kWarn, std::forward<Args>(args)...);
}
inline void report_progress(std::string_view task, int64_t done, int64_t total, std::string_view unit) {
  if (LogSink* s = log_sink()) s->progress(task, done, total, unit);
}

}  // namespace llmc
