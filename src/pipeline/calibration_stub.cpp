// TEMPORARY weak stand-ins for calibration.cpp (wt/calib) so the pipeline links before it lands;
// the real definitions override them, and this file goes when wt/calib is merged.
#include "pipeline/calibration.h"

namespace llmc {
__attribute__((weak)) Result<std::unique_ptr<CalibrationSet>> CalibrationSet::create(const Model&,
                                                                                     const CalibOptions&) {
  return make_error(ErrorCode::kUnsupported, "calibration is not built yet (wt/calib)");
}
__attribute__((weak)) int64_t CalibrationSet::tokens() const { return 0; }
__attribute__((weak)) Result<LayerStats> CalibrationSet::collect_all(const Model&, const StatsRequest&, int) {
  return make_error(ErrorCode::kUnsupported, "calibration is not built yet (wt/calib)");
}
__attribute__((weak)) Result<std::unique_ptr<CalibrationSet::Sequential>> CalibrationSet::sequential(const Model&,
                                                                                                     int) {
  return make_error(ErrorCode::kUnsupported, "calibration is not built yet (wt/calib)");
}
}  // namespace llmc
