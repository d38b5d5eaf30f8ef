// Calibration flags shared by llmc quantize and llmc share.
#include "calib_flags.h"

namespace llmc::cli {

void add_calib_flags(CLI::App& sub, CalibFlags& flags) {
  sub.add_option("--calib", flags.file, "Calibration text file (tokenized with the model's tokenizer)");
  sub.add_option("--calib-self", flags.self, "Calibrate on N sequences sampled from the model itself (temperature 1)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-samples", flags.samples, "Calibration sequences (default 128)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--calib-ctx", flags.ctx, "Tokens per calibration sequence (default 512)")
      ->check(CLI::Range(int64_t{2}, int64_t{1} << 20));
}

Result<std::optional<CalibOptions>> calib_from_flags(const CalibFlags& flags, uint64_t seed) {
  auto bad = [](auto&&... parts) { return make_error(ErrorCode::kInvalidArgument, parts...); };
  const bool any = !flags.file.empty() || flags.self > 0 || flags.samples > 0 || flags.ctx > 0;
  if (!flags.file.empty() && flags.self > 0) return bad("--calib and --calib-self exclude each other");
  if (!any) return std::optional<CalibOptions>();
  if (flags.file.empty() && flags.self == 0)
    return bad("--calib-samples/--calib-ctx need --calib FILE or --calib-self N");
  CalibOptions c;
  c.file = flags.file;
  c.self_samples = flags.self;
  if (flags.self > 0) c.samples = flags.self;
  if (flags.samples > 0) {
    if (flags.self > 0 && flags.samples != flags.self)
      return bad("--calib-samples ", flags.samples, " disagrees with --calib-self ", flags.self);
    c.samples = flags.samples;
  }
  if (flags.ctx > 0) c.ctx = flags.ctx;
  c.seed = seed;
  return std::optional<CalibOptions>(c);
}

}  // namespace llmc::cli
