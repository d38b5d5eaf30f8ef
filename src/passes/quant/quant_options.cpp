// QuantOptions: the option declarations shared by every quantization pass and their QuantSpec.
#include <array>
#include <variant>

#include "passes/quant/quant_methods.h"

namespace llmc {

namespace {

constexpr const char* kSchemes[] = {"sym", "asym", "binary", "ternary"};
constexpr const char* kScaleDtypes[] = {"f16", "bf16", "f32", "u8"};

// One row per option: name, help, the member it sets and (for strings) its choices.
struct QuantOptionRow {
  const char* name;
  const char* help;
  std::variant<int64_t QuantOptions::*, bool QuantOptions::*, std::string QuantOptions::*> member;
  std::span<const char* const> choices;
};

const QuantOptionRow kQuantOptionRows[] = {
    {"bits", "bits per weight code: 2..8 (binary is 1 and ternary 2 whatever this says)", &QuantOptions::bits, {}},
    {"scheme", "sym: (q - 2^(b-1)) * scale; asym: q * scale + min; binary: ±scale; ternary: {-1,0,1} * scale",
     &QuantOptions::scheme, kSchemes},
    {"group_size",
     "columns per scale (0 = whole row; the last group of a row may be shorter)",
     &QuantOptions::group_size,
     {}},
    {"scale_dtype", "dtype of scales and mins; u8 = double quantization (u8 * step + base per scale_block)",
     &QuantOptions::scale_dtype, kScaleDtypes},
    {"scale_block", "u8 scales: consecutive scales sharing one f32 (step, base) pair", &QuantOptions::scale_block, {}},
    {"trits5", "ternary: pack 5 codes per byte (1.6 bits) instead of 2 bits each", &QuantOptions::trits5, {}},
    {"two_level",
     "binary: a per-group min as well, so the two levels min ± scale are free",
     &QuantOptions::two_level,
     {}},
    {"clip_search",
     "clipping-ratio grid steps in [0.7, 1] for the scale search (0 = plain min/max)",
     &QuantOptions::clip_search,
     {}},
    {"importance",
     "weight the rounding error by calibration activation statistics (needs calibration)",
     &QuantOptions::importance,
     {}},
};

struct RowVisitor {
  OptionVisitor& v;
  QuantOptions& o;
  const QuantOptionRow& row;
  void operator()(int64_t QuantOptions::*m) const { v.option(row.name, o.*m, row.help); }
  void operator()(bool QuantOptions::*m) const { v.option(row.name, o.*m, row.help); }
  void operator()(std::string QuantOptions::*m) const { v.option(row.name, o.*m, row.help, row.choices); }
};

}  // namespace

void QuantOptions::visit(OptionVisitor& v) { visit_only(v, {}); }

void QuantOptions::visit_only(OptionVisitor& v, std::initializer_list<std::string_view> names) {
  for (const QuantOptionRow& row : kQuantOptionRows) {
    bool wanted = names.size() == 0;
    for (std::string_view n : names) wanted = wanted || n == row.name;
    if (wanted) std::visit(RowVisitor{v, *this, row}, row.member);
  }
}

Result<QuantSpec> QuantOptions::spec() const {
  struct SchemeRow {
    const char* name;
    QuantScheme scheme;
    int forced_bits;  // 0 = from `bits`
  };
  static constexpr SchemeRow kSchemeRows[] = {
      {"sym", QuantScheme::kSymmetric, 0},
      {"asym", QuantScheme::kAsymmetric, 0},
      {"binary", QuantScheme::kBinary, 1},
      {"ternary", QuantScheme::kTernary, 2},
  };
  const SchemeRow* row = nullptr;
  for (const SchemeRow& r : kSchemeRows)
    if (scheme == r.name) row = &r;
  if (!row)
    return make_error(ErrorCode::kInvalidArgument, "unknown scheme '", scheme, "' (sym, asym, binary, ternary)");
  if (bits < 1 || bits > 8) return make_error(ErrorCode::kInvalidArgument, "bits must be 2..8, not ", bits);
  const auto dtype = dtype_from_name(scale_dtype);
  if (!dtype) return make_error(ErrorCode::kInvalidArgument, "unknown scale dtype '", scale_dtype, "'");
  if (clip_search < 0 || clip_search > 1000)
    return make_error(ErrorCode::kInvalidArgument, "clip_search must be 0..1000, not ", clip_search);
  QuantSpec s;
  s.scheme = row->scheme;
  s.bits = row->forced_bits ? row->forced_bits : static_cast<int>(bits);
  s.group_size = group_size;
  s.scale_dtype = *dtype;
  s.scale_block = scale_block;
  s.trits5 = trits5;
  s.binary_two_level = two_level;
  LLMC_TRY(validate_quant_spec(s));
  return s;
}

}  // namespace llmc
