// --zstd / --entropy for every command that writes .llmc (tools/llmc/writer_flags.h).
#include "writer_flags.h"

namespace llmc::cli {

void WriterFlags::add(CLI::App& sub) {
  sub.add_option("--zstd", zstd,
                 "zstd level for .llmc sections (0 = raw, mmap-able); alone: zstd of the raw bytes where smaller; "
                 "with --entropy zstd|auto: the level of the zstd candidates (default 3)")
      ->check(CLI::Range(0, 22));
  sub.add_option("--entropy", entropy,
                 "How .llmc sections are stored: none (raw, mmap-able), zstd, huffman, rans (each where smaller "
                 "than raw, over packed codes unpacked to b-bit symbols or byte planes where that pays), auto (per "
                 "section the smallest of all); decoded once at load (docs/storage.md)")
      ->check(CLI::IsMember({"none", "zstd", "huffman", "rans", "auto"}));
}

Result<void> WriterFlags::check(FileFormat output) const {
  if (output != FileFormat::kLlmc) {
    if (zstd != 0) return make_error(ErrorCode::kInvalidArgument, "--zstd applies to .llmc output only");
    if (!entropy.empty() && entropy != "none" && entropy != "auto")
      return make_error(ErrorCode::kInvalidArgument, "--entropy ", entropy, " applies to .llmc output only (",
                        file_format_name(output), " stores tensors as its own types)");
    return {};
  }
  if (zstd != 0 && (entropy == "none" || entropy == "huffman" || entropy == "rans"))
    return make_error(ErrorCode::kInvalidArgument, "--zstd ", zstd, " has no effect with --entropy ", entropy,
                      " (it sets the level of zstd candidates: use --entropy zstd or auto)");
  return {};
}

void WriterFlags::apply(LlmcWriteOptions& options) const {
  options.zstd_level = zstd;
  if (!entropy.empty()) options.coding = *parse_section_coding(entropy);
}

std::string WriterFlags::describe() const {
  return str_cat("zstd: ", zstd, ", entropy: ", entropy.empty() ? (zstd > 0 ? "zstd-bytes" : "none") : entropy);
}

}  // namespace llmc::cli
