// quant.mixed: per-tensor encodings chosen by measured sensitivity under an effective-bpw budget
// (DESIGN.md §6 counting), then one quantization method run with the chosen per-tensor specs.
#include "passes/quant/quant_mixed.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include "core/log.h"
#include "core/lowrank.h"
#include "formats/file_io.h"
#include "formats/scratch_file.h"
#include "model/arch.h"
#include "model/describe.h"
#include "passes/quant/quant_methods.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"

namespace llmc {

// ---- candidates ------------------------------------------------------------------------------

namespace {

struct KeepRow {
  const char* name;
  DType dtype;
};
constexpr KeepRow kKeepRows[] = {{"f16", DType::kF16}, {"bf16", DType::kBF16}, {"f32", DType::kF32}};

// A "-modifier" of a quantized candidate and what it sets.
struct ModifierRow {
  const char* name;
  void (*apply)(QuantSpec&);
};
constexpr ModifierRow kModifiers[] = {
    {"sym", [](QuantSpec& s) { s.scheme = QuantScheme::kSymmetric; }},
    {"asym", [](QuantSpec& s) { s.scheme = QuantScheme::kAsymmetric; }},
    {"binary", [](QuantSpec& s) { s.scheme = QuantScheme::kBinary; }},
    {"ternary", [](QuantSpec& s) { s.scheme = QuantScheme::kTernary; }},
    {"f16", [](QuantSpec& s) { s.scale_dtype = DType::kF16; }},
    {"bf16", [](QuantSpec& s) { s.scale_dtype = DType::kBF16; }},
    {"f32", [](QuantSpec& s) { s.scale_dtype = DType::kF32; }},
    {"u8", [](QuantSpec& s) { s.scale_dtype = DType::kU8; }},
    {"t5", [](QuantSpec& s) { s.trits5 = true; }},
    {"2l", [](QuantSpec& s) { s.binary_two_level = true; }},
};

// Parses a decimal integer occupying all of `s` (no sign, at most 9 digits).
std::optional<int64_t> parse_count(std::string_view s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

Result<MixedCandidate> parse_mixed_candidate(std::string_view text, const QuantSpec& defaults) {
  MixedCandidate c;
  c.name = std::string(text);
  for (const KeepRow& row : kKeepRows)
    if (text == row.name) {
      c.keep = true;
      c.keep_dtype = row.dtype;
      return c;
    }
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::kInvalidArgument, "bad mixed-precision candidate '", text, "': ", why,
                      " (expected f16|bf16|f32 or q<bits>[g<group>|row][-sym|-asym|-binary|-ternary|-f16|-bf16|-"
                      "f32|-u8|-t5|-2l...], e.g. q4g32, q3g64-u8)");
  };
  if (text.empty() || text[0] != 'q') return bad("does not start with 'q'");
  const size_t dash = text.find('-');
  std::string_view head = text.substr(1, dash == std::string_view::npos ? std::string_view::npos : dash - 1);
  c.spec = defaults;
  // Binary/ternary fix their own bits; the scheme modifiers below may change it, so the head's
  // bits are applied first and checked by validate_quant_spec at the end.
  std::string_view bits_text = head, group_text;
  bool row_group = false;
  if (const size_t g = head.find('g'); g != std::string_view::npos) {
    bits_text = head.substr(0, g);
    group_text = head.substr(g + 1);
    if (group_text.empty()) return bad("empty group size after 'g'");
  } else if (head.size() > 3 && head.substr(head.size() - 3) == "row") {
    bits_text = head.substr(0, head.size() - 3);
    row_group = true;
  }
  const auto bits = parse_count(bits_text);
  if (!bits) return bad("bits are not a number");
  c.spec.bits = static_cast<int>(*bits);
  if (row_group) c.spec.group_size = 0;
  if (!group_text.empty()) {
    const auto group = parse_count(group_text);
    if (!group) return bad("group size is not a number");
    c.spec.group_size = *group;
    if (*group == 0) return bad("group size 0 (use 'row' for whole rows)");
  }
  // Schemes with their own level sets default to their natural bit width unless bits say otherwise.
  std::string_view rest = dash == std::string_view::npos ? std::string_view{} : text.substr(dash + 1);
  while (!rest.empty()) {
    const size_t next = rest.find('-');
    const std::string_view mod = rest.substr(0, next);
    const ModifierRow* found = nullptr;
    for (const ModifierRow& row : kModifiers)
      if (mod == row.name) found = &row;
    if (!found) return bad(str_cat("unknown modifier '", mod, "'"));
    found->apply(c.spec);
    rest = next == std::string_view::npos ? std::string_view{} : rest.substr(next + 1);
  }
  if (auto ok = validate_quant_spec(c.spec); !ok) return bad(ok.error().message);
  return c;
}

uint64_t mixed_candidate_bytes(const MixedCandidate& c, int64_t rows, int64_t cols) {
  if (c.keep) return static_cast<uint64_t>(rows * cols) * static_cast<uint64_t>(dtype_bytes(c.keep_dtype));
  return quant_encoded_bytes(c.spec, rows, cols);
}

// ---- allocation ------------------------------------------------------------------------------

Result<std::vector<int>> allocate_budget(const std::vector<AllocationItem>& items, uint64_t budget, int64_t max_units) {
  const size_t n = items.size();
  uint64_t min_total = 0;
  for (size_t i = 0; i < n; ++i) {
    const AllocationItem& it = items[i];
    LLMC_CHECK(!it.bytes.empty() && it.bytes.size() == it.loss.size() && it.bytes.size() < 256);
    min_total += *std::min_element(it.bytes.begin(), it.bytes.end());
  }
  if (min_total > budget)
    return make_error(ErrorCode::kInvalidArgument, "budget of ", budget, " bytes is below the smallest allocation (",
                      min_total, " bytes)");
  if (n == 0) return std::vector<int>{};
  const uint64_t unit = std::max<uint64_t>(1, (budget + static_cast<uint64_t>(max_units) - 1) / max_units);
  const int64_t cap = static_cast<int64_t>(budget / unit);
  auto units_of = [&](uint64_t bytes) { return static_cast<int64_t>((bytes + unit - 1) / unit); };
  // dp[u]: least loss of the items so far using at most u units; choice[i][u]: option of item i.
  constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> dp(static_cast<size_t>(cap) + 1, 0.0), next(dp.size());
  std::vector<std::vector<uint8_t>> choice(n, std::vector<uint8_t>(dp.size(), 0));
  for (size_t i = 0; i < n; ++i) {
    const AllocationItem& it = items[i];
    std::fill(next.begin(), next.end(), kInf);
    for (size_t j = 0; j < it.bytes.size(); ++j) {
      const int64_t w = units_of(it.bytes[j]);
      for (int64_t u = w; u <= cap; ++u) {
        const double v = dp[static_cast<size_t>(u - w)] + it.loss[j];
        if (v < next[static_cast<size_t>(u)]) {
          next[static_cast<size_t>(u)] = v;
          choice[i][static_cast<size_t>(u)] = static_cast<uint8_t>(j);
        }
      }
    }
    dp.swap(next);
  }
  if (!std::isfinite(dp[static_cast<size_t>(cap)]))
    return make_error(ErrorCode::kInvalidArgument, "budget of ", budget, " bytes cannot fit the tensors at a ", unit,
                      "-byte granularity; raise the target");
  std::vector<int> out(n);
  int64_t u = cap;
  for (size_t i = n; i-- > 0;) {
    const int j = choice[i][static_cast<size_t>(u)];
    out[i] = j;
    u -= units_of(items[i].bytes[static_cast<size_t>(j)]);
  }
  return out;
}

// ---- the pass --------------------------------------------------------------------------------

namespace {

constexpr const char* kMethods[] = {"rtn", "gptq", "awq"};
// How predicted loss is measured: "none" = importance-weighted output error Σ_c H_cc ΔW²;
// "scale" = that error times a per-tensor factor KLD/error measured by perturbing the tensor with
// one candidate; "full" = the KLD of every (tensor, candidate) measured directly (small models).
constexpr const char* kProbes[] = {"none", "scale", "full"};
constexpr const char* kAwqThen[] = {"rtn", "gptq"};

// The sensitivity measurements of one selected tensor.
struct TensorPlan {
  std::string name;
  int64_t rows = 0, cols = 0;
  bool counts = true;           // counts towards bpw (DESIGN.md §6)
  std::vector<uint64_t> bytes;  // per candidate
  std::vector<double> error;    // Σ_c H_cc ΔW² per candidate
  std::vector<double> loss;     // predicted loss per candidate
  double kld_scale = 1.0;       // "scale" probe: KLD per unit of error
  int probe = -1;               // candidate probed
  double probe_kld = 0;
};

// Mean KL(p_ref || p) over every position of a few calibration sequences, against the log-probs
// of the model as it was at construction (the one thing kept: [positions, vocab] f32, in a scratch
// file in $TMPDIR, read a position at a time and given back; on the heap when none can be made). The
// model runs block by block and gives back its mapped weight pages as it goes, and the head runs on
// a few rows at a time, so only one block's weights and [kHeadRows, vocab] logits are resident (the
// input file and the reference are not).
class KldProbe {
 public:
  static Result<std::unique_ptr<KldProbe>> create(const Model& model, const CalibrationSet& calib, int64_t tokens,
                                                  int threads) {
    auto p = std::unique_ptr<KldProbe>(new KldProbe());
    int64_t left = tokens, positions = 0;
    for (const auto& seq : calib.sequences()) {
      if (left <= 0) break;
      const int64_t take = std::min<int64_t>(left, static_cast<int64_t>(seq.size()));
      if (take < 2) continue;
      p->seqs_.emplace_back(seq.begin(), seq.begin() + take);
      p->max_len_ = std::max(p->max_len_, take);
      positions += take;
      left -= take;
    }
    if (p->seqs_.empty())
      return make_error(ErrorCode::kInvalidArgument, "quant.mixed: calibration set has no sequences for the probe");
    p->threads_ = threads;
    p->vocab_ = model.config.vocab_size;
    p->positions_ = positions;
    const size_t row_bytes = static_cast<size_t>(p->vocab_) * sizeof(float);
    auto scratch = ScratchFile::create(temp_dir());
    if (!scratch.ok()) log_warn(scratch.error().message, "; the probe's reference stays in memory");
    std::vector<float> heap(scratch.ok() ? 0 : static_cast<size_t>(positions * p->vocab_));
    const ScratchFile::Range range = scratch.ok() ? (*scratch)->reserve(positions * row_bytes) : ScratchFile::Range{};
    std::vector<float> row(static_cast<size_t>(p->vocab_));
    Result<void> written;
    LLMC_TRY(p->forward(model, [&](size_t t, const float* logits) {
      float* r = scratch.ok() ? row.data() : heap.data() + t * static_cast<size_t>(p->vocab_);
      const double lz = log_sum_exp(logits, p->vocab_);
      for (int64_t i = 0; i < p->vocab_; ++i) r[i] = static_cast<float>(double{logits[i]} - lz);
      if (scratch.ok() && written.ok())
        written = (*scratch)->write(range, t * row_bytes, {reinterpret_cast<const uint8_t*>(r), row_bytes});
    }));
    LLMC_TRY(written);
    if (scratch.ok()) {
      LLMC_ASSIGN_OR_RETURN(p->ref_, (*scratch)->view(range));
    } else {
      p->ref_ = Bytes::from_vector(heap);
    }
    return p;
  }

  Result<double> measure(const Model& model) {
    double sum = 0;
    const auto positions = static_cast<size_t>(positions_);
    LLMC_TRY(forward(model, [&](size_t t, const float* logits) {
      const float* r = ref_.as<float>() + t * static_cast<size_t>(vocab_);
      const double lz = log_sum_exp(logits, vocab_);
      double kl = 0;
      for (int64_t i = 0; i < vocab_; ++i) {
        const auto q = static_cast<float>(double{logits[i]} - lz);
        kl += std::exp(static_cast<double>(r[i])) * (double{r[i]} - double{q});
      }
      release_file_pages(r, static_cast<size_t>(vocab_) * sizeof(float));
      sum += kl;
    }));
    return positions ? sum / static_cast<double>(positions) : 0.0;
  }

 private:
  static constexpr int64_t kHeadRows = 64;

  KldProbe() = default;

  static double log_sum_exp(const float* l, int64_t n) {
    const double mx = *std::max_element(l, l + n);
    double z = 0;
    for (int64_t i = 0; i < n; ++i) z += std::exp(double{l[i]} - mx);
    return mx + std::log(z);
  }

  // Calls use(position, logits [vocab]) for every position of every sequence, in order.
  template <typename Use>
  Result<void> forward(const Model& model, Use&& use) {
    LLMC_ASSIGN_OR_RETURN(auto runner, BlockRunner::create(model, max_len_, threads_));
    const int64_t dim = model.config.dim;
    std::vector<float> x(static_cast<size_t>(max_len_ * dim)), normed(x.size());
    std::vector<float> logits(static_cast<size_t>(kHeadRows * vocab_));
    size_t position = 0;
    for (const auto& seq : seqs_) {
      const auto n = static_cast<int64_t>(seq.size());
      LLMC_TRY(runner->embed(seq, x.data()));
      for (int64_t l = 0; l < model.config.n_layers; ++l) {
        LLMC_TRY(runner->forward_layer(l, x.data(), n, nullptr));
        runner->release_layer_pages(l);
      }
      runner->final_norm(x.data(), n, normed.data());
      for (int64_t r0 = 0; r0 < n; r0 += kHeadRows) {
        const int64_t rows = std::min(kHeadRows, n - r0);
        runner->head(normed.data() + r0 * dim, rows, logits.data());
        for (int64_t t = 0; t < rows; ++t) use(position++, logits.data() + t * vocab_);
      }
      runner->release_embedding_pages();
    }
    return {};
  }

  std::vector<std::vector<int32_t>> seqs_;
  int64_t max_len_ = 0;
  int64_t vocab_ = 0;
  int threads_ = 0;
  int64_t positions_ = 0;
  Bytes ref_;  // [positions, vocab] f32 log-probs of the model at construction
};

// A candidate encoding of `original` (rows read through `load`): the Quant tensor RTN gives, or a
// Dense copy in the kept dtype (the original itself when it already is one).
Tensor candidate_tensor(const MixedCandidate& c, const Tensor& original, const RowLoader& load,
                        std::span<const float> col_imp, const ScaleSearch& search) {
  if (c.keep) {
    const auto* dense = std::get_if<DenseEncoding>(&original.encoding->node);
    if (dense && dense->dtype == c.keep_dtype) return original;
    return to_dense(original, c.keep_dtype);
  }
  QuantEncoding enc =
      quantize_rtn_rows(c.spec, original.rows(), original.cols(), load, col_imp, search, nullptr, nullptr);
  return Tensor{original.name, original.shape, std::make_shared<const Encoding>(Encoding{std::move(enc)})};
}

// Adds Σ h_c (w - q)² over `count` row-major values of rows `cols` wide (h empty = 1) to e, in order.
void add_weighted_error(const float* w, const float* q, size_t count, int64_t cols, const std::vector<float>& h,
                        double& e) {
  for (size_t i = 0; i < count; ++i) {
    const double d = double{w[i]} - double{q[i]};
    e += (h.empty() ? 1.0 : double{h[i % static_cast<size_t>(cols)]}) * d * d;
  }
}

// Rows a block of weighted_error reads (about 256K weights).
int64_t error_block_rows(int64_t cols) { return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, cols)); }

// Σ_r Σ_c h_c (w - q)² (h empty = 1), summed in one accumulator in row-major order; the rows of
// both are read a block at a time.
double weighted_error(const RowLoader& w_rows, const RowLoader& q_rows, int64_t rows, int64_t cols,
                      const std::vector<float>& h) {
  const int64_t block = error_block_rows(cols);
  std::vector<float> w(static_cast<size_t>(std::min(rows, block) * cols)), q(w.size());
  double e = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
    w_rows(r0, r1, w.data());
    q_rows(r0, r1, q.data());
    add_weighted_error(w.data(), q.data(), static_cast<size_t>((r1 - r0) * cols), cols, h, e);
  }
  return e;
}

// weighted_error of RTN candidate `spec` without building it: RTN is row-independent (but for u8
// scales, whose grid spans the tensor: callers build those), so the rows are quantized and compared
// a block at a time, in weighted_error's blocks and order; RTN's dequantized values are the
// encoding's decode, bit for bit.
double streamed_rtn_error(const QuantSpec& spec, const RowLoader& load, int64_t rows, int64_t cols,
                          const std::vector<float>& h, std::span<const float> col_imp, const ScaleSearch& search) {
  const int64_t block = error_block_rows(cols);
  std::vector<float> w(static_cast<size_t>(std::min(rows, block) * cols)), q(w.size());
  double e = 0;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block), n = r1 - r0;
    load(r0, r1, w.data());
    const RowLoader part = [&](int64_t a, int64_t b, float* out) {
      std::copy(w.begin() + a * cols, w.begin() + b * cols, out);
    };
    quantize_rtn_rows(spec, n, cols, part, col_imp, search, q.data(), nullptr);
    add_weighted_error(w.data(), q.data(), static_cast<size_t>(n * cols), cols, h, e);
  }
  return e;
}

// The rows of candidate `c` of a weight whose f32 rows `load` gives: the kept dtype's rounding of
// them, or the rows of the encoded candidate.
RowLoader candidate_rows(const MixedCandidate& c, const RowLoader& load, const Tensor& encoded) {
  if (!c.keep) return [&encoded](int64_t r0, int64_t r1, float* out) { encoded.rows_to_f32(r0, r1, out); };
  return [&c, &load, cols = encoded.cols()](int64_t r0, int64_t r1, float* out) {
    load(r0, r1, out);
    for (int64_t i = 0; i < (r1 - r0) * cols; ++i) {
      switch (c.keep_dtype) {
        case DType::kF16: out[i] = f16_to_f32(f32_to_f16(out[i])); break;
        case DType::kBF16: out[i] = bf16_to_f32(f32_to_bf16(out[i])); break;
        default: break;
      }
    }
  };
}

class QuantMixedPass final : public Pass {
 public:
  std::string_view name() const override { return "quant.mixed"; }

  PassNeeds needs() const override {
    PassNeeds n;
    n.calibration = method_ != "rtn" || quant_.importance || probe_ != "none";
    return n;
  }

  void visit(OptionVisitor& v) override {
    v.option("target_bpw", target_bpw_,
             "effective bits per weight to stay at or below (all linear/embedding weight bytes incl. scales and "
             "mins, x 8, / their elements)");
    v.option("method", method_, "quantization method run with the chosen per-tensor specs", kMethods);
    v.option("candidates", candidates_,
             "encodings a tensor may get: f16|bf16|f32 (keep dense) or q<bits>[g<group>|row][-sym|-asym|-u8|...]; "
             "empty = q{2,3,4,5,6,8} at group_size and 4 x group_size, plus f16");
    v.option("probe", probe_,
             "sensitivity: none = activation-weighted weight error; scale = that error scaled per tensor by the "
             "KLD of one perturbation; full = KLD of every candidate (small models)",
             kProbes);
    v.option("probe_tokens", probe_tokens_, "calibration tokens the KLD probe runs on");
    quant_.visit(v);
    v.option("damp", gptq_.damp, "gptq, awq then=gptq: fraction of mean(diag H) added to the Hessian diagonal");
    v.option("block_size", gptq_.block_size, "gptq: columns per lazy-batch update");
    v.option("act_order", gptq_.act_order, "gptq: process columns by decreasing activation energy (static groups)");
    v.option("true_sequential", gptq_.true_sequential,
             "gptq: calibrate each group of a block's linears with the block's earlier groups already quantized");
    v.option("grid", awq_.grid, "awq: steps of the scale exponent alpha over [0, 1]");
    v.option("then", awq_.then, "awq: how the scaled weights are quantized", kAwqThen);
    v.option("max_samples", awq_.max_samples, "awq: calibration inputs kept per linear for the scale search");
  }

  Result<void> validate_options() const override {
    if (!(target_bpw_ > 0) || target_bpw_ > 32)
      return make_error(ErrorCode::kInvalidArgument, "quant.mixed: target_bpw must be in (0, 32], got ", target_bpw_);
    if (probe_tokens_ < 2 || probe_tokens_ > (int64_t{1} << 20))
      return make_error(ErrorCode::kInvalidArgument, "quant.mixed: probe_tokens must be in [2, 1048576], got ",
                        probe_tokens_);
    if (gptq_.damp < 0 || gptq_.block_size < 1 || awq_.grid < 1 || awq_.max_samples < 1)
      return make_error(ErrorCode::kInvalidArgument,
                        "quant.mixed: needs damp >= 0, block_size >= 1, grid >= 1 and max_samples >= 1");
    LLMC_ASSIGN_OR_RETURN(auto cands, candidates());
    (void)cands;
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override;

 private:
  Result<std::vector<MixedCandidate>> candidates() const;
  Result<nlohmann::json> run_method(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                    const ScaleSearch& search) const;

  double target_bpw_ = 0;
  std::string method_ = "rtn";
  std::vector<std::string> candidates_;
  std::string probe_ = "scale";
  int64_t probe_tokens_ = 512;
  QuantOptions quant_;
  GptqOptions gptq_;
  AwqOptions awq_;
};

Result<std::vector<MixedCandidate>> QuantMixedPass::candidates() const {
  LLMC_ASSIGN_OR_RETURN(QuantSpec defaults, quant_.spec());
  std::vector<std::string> names = candidates_;
  if (names.empty()) {
    static constexpr int kBits[] = {2, 3, 4, 5, 6, 8};
    for (int b : kBits) {
      if (defaults.group_size == 0) {
        names.push_back(str_cat("q", b, "row"));
        continue;
      }
      names.push_back(str_cat("q", b, "g", defaults.group_size));
      names.push_back(str_cat("q", b, "g", defaults.group_size * 4));
    }
    names.emplace_back("f16");
  }
  if (names.size() > 200) return make_error(ErrorCode::kInvalidArgument, "quant.mixed: at most 200 candidates");
  std::vector<MixedCandidate> out;
  for (const std::string& n : names) {
    LLMC_ASSIGN_OR_RETURN(MixedCandidate c, parse_mixed_candidate(n, defaults));
    out.push_back(std::move(c));
  }
  return out;
}

Result<nlohmann::json> QuantMixedPass::run_method(Model& model, PassContext& ctx, const SpecFor& spec_for,
                                                  const ScaleSearch& search) const {
  GptqOptions gptq = gptq_;
  gptq.importance = quant_.importance;
  if (method_ == "gptq") return quantize_model_gptq(model, ctx, spec_for, search, gptq);
  if (method_ == "awq") return quantize_model_awq(model, ctx, spec_for, search, awq_, gptq);
  return quantize_model_rtn(model, ctx, spec_for, search, quant_.importance);
}

Result<PassReport> QuantMixedPass::run(Model& model, PassContext& ctx) {
  const auto start = std::chrono::steady_clock::now();
  LLMC_TRY(validate_options());
  LLMC_ASSIGN_OR_RETURN(const std::vector<MixedCandidate> cands, candidates());
  if (needs().calibration && !ctx.calib)
    return make_error(ErrorCode::kInvalidArgument,
                      "quant.mixed needs calibration data (--calib FILE or --calib-self N) for method '", method_,
                      "', probe '", probe_, "'", quant_.importance ? " and importance" : "");
  LLMC_TRY(ctx.selector.compile());
  const ScaleSearch search{static_cast<int>(quant_.clip_search), 0.7};

  // Selected tensors in model order.
  std::vector<TensorPlan> plans;
  for (const Tensor& t : model.tensors()) {
    if (t.shape.dims.size() != 2) continue;
    if (!ctx.selector.has_targets() && !is_default_weight_target(model, t.name)) continue;
    if (!ctx.selector.selects(t.name)) continue;
    if (is_decomposition(*t.encoding))
      return make_error(ErrorCode::kInvalidArgument, "quant.mixed: '", t.name, "' is a ",
                        encoding_kind_name(*t.encoding),
                        " decomposition; its parts are quantized by quant.rtn or quant.gptq");
    TensorPlan p;
    p.name = t.name;
    p.rows = t.rows();
    p.cols = t.cols();
    p.counts = counts_for_bpw(tensor_role(t.name));
    plans.push_back(std::move(p));
  }
  if (plans.empty()) return make_error(ErrorCode::kInvalidArgument, "quant.mixed: no tensor selected");

  // Budget (DESIGN.md §6): every counted weight's bytes; tensors not selected keep theirs.
  const SizeSummary size = summarize_size(model);
  uint64_t fixed_bytes = size.bpw_bytes;
  for (const TensorPlan& p : plans)
    if (p.counts) fixed_bytes -= model.get(p.name).encoded_bytes();
  const auto budget_total = static_cast<uint64_t>(std::floor(target_bpw_ * static_cast<double>(size.bpw_elements) / 8));
  uint64_t min_bytes = fixed_bytes;
  for (TensorPlan& p : plans) {
    for (const MixedCandidate& c : cands) p.bytes.push_back(p.counts ? mixed_candidate_bytes(c, p.rows, p.cols) : 0);
    min_bytes += *std::min_element(p.bytes.begin(), p.bytes.end());
  }
  const double elements = static_cast<double>(std::max<int64_t>(1, size.bpw_elements));
  if (min_bytes > budget_total)
    return make_error(ErrorCode::kInvalidArgument, "quant.mixed: target_bpw ", target_bpw_,
                      " is below the minimum reachable with these candidates and tensors: ",
                      8.0 * static_cast<double>(min_bytes) / elements, " bpw");

  // Activation statistics: h_c = mean x_c² of each linear input.
  LayerStats stats;
  if (ctx.calib) {
    LLMC_ASSIGN_OR_RETURN(stats, ctx.calib->collect_all(model, StatsRequest{}, ctx.threads));
  }
  std::unique_ptr<KldProbe> probe;
  if (probe_ != "none") {
    LLMC_ASSIGN_OR_RETURN(probe, KldProbe::create(model, *ctx.calib, probe_tokens_, ctx.threads));
  }
  Model work;
  if (probe) work = model;

  for (size_t ti = 0; ti < plans.size(); ++ti) {
    TensorPlan& p = plans[ti];
    const Tensor original = model.get(p.name);
    // Rows are decoded a block at a time: the weight is never whole in f32, and its mapped pages
    // are given back as they are read (every candidate reads it again).
    const RowLoader load = [&original](int64_t r0, int64_t r1, float* out) {
      tensor_rows_to_f32(original, r0, r1, out);
      release_row_pages(original, r0, r1);
    };
    std::vector<float> h;
    if (auto it = stats.find(p.name); it != stats.end() && it->second && it->second->cols == p.cols &&
                                      it->second->tokens > 0 &&
                                      it->second->sq_sum.size() == static_cast<size_t>(p.cols)) {
      h.resize(static_cast<size_t>(p.cols));
      for (int64_t c = 0; c < p.cols; ++c)
        h[static_cast<size_t>(c)] =
            static_cast<float>(it->second->sq_sum[static_cast<size_t>(c)] / static_cast<double>(it->second->tokens));
    }
    const std::span<const float> col_imp = quant_.importance ? std::span<const float>(h) : std::span<const float>();
    if (probe_ == "scale") {
      // Probe with the quantized candidate closest to the target's bits on this tensor.
      double best = std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < cands.size(); ++j) {
        if (cands[j].keep) continue;
        const double bpw =
            8.0 * static_cast<double>(mixed_candidate_bytes(cands[j], p.rows, p.cols)) / (p.rows * p.cols);
        const double d = std::fabs(bpw - target_bpw_);
        if (d < best) best = d, p.probe = static_cast<int>(j);
      }
    }
    p.error.assign(cands.size(), 0.0);
    p.loss.assign(cands.size(), 0.0);
    for (size_t j = 0; j < cands.size(); ++j) {
      // The probe runs the candidate as it would be stored (Quant or Dense), not as f32 values.
      const bool probed = probe_ == "full" || static_cast<int>(j) == p.probe;
      if (!probed && !cands[j].keep && cands[j].spec.scale_dtype != DType::kU8) {
        p.error[j] = p.loss[j] = streamed_rtn_error(cands[j].spec, load, p.rows, p.cols, h, col_imp, search);
        continue;
      }
      const Tensor encoded =
          cands[j].keep && !probed ? original : candidate_tensor(cands[j], original, load, col_imp, search);
      p.error[j] = weighted_error(load, candidate_rows(cands[j], load, encoded), p.rows, p.cols, h);
      p.loss[j] = p.error[j];
      if (probed && p.error[j] > 0) {
        work.replace(encoded);
        LLMC_ASSIGN_OR_RETURN(const double kld, probe->measure(work));
        if (probe_ == "full")
          p.loss[j] = kld;
        else
          p.probe_kld = kld;
      }
    }
    if (probe_ == "scale") {
      p.kld_scale = p.probe >= 0 && p.error[static_cast<size_t>(p.probe)] > 0
                        ? p.probe_kld / p.error[static_cast<size_t>(p.probe)]
                        : 0;
      for (size_t j = 0; j < cands.size(); ++j) p.loss[j] = p.kld_scale * p.error[j];
    }
    if (probe) work.replace(original);
    report_progress("quant.mixed sensitivity", static_cast<int64_t>(ti + 1), static_cast<int64_t>(plans.size()),
                    "tensors");
  }
  // The method below holds its own calibration state: free the probe's reference and the stats.
  work = Model();
  probe.reset();
  stats = LayerStats();

  // Allocation over the bytes left once the unselected tensors are paid for.
  std::vector<AllocationItem> items;
  for (const TensorPlan& p : plans) items.push_back({p.bytes, p.loss});
  LLMC_ASSIGN_OR_RETURN(const std::vector<int> choice, allocate_budget(items, budget_total - fixed_bytes));

  nlohmann::json allocation = nlohmann::json::object();
  std::map<std::string, QuantSpec> specs;
  uint64_t planned_bytes = fixed_bytes;
  double predicted_loss = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    const TensorPlan& p = plans[i];
    const size_t j = static_cast<size_t>(choice[i]);
    const MixedCandidate& c = cands[j];
    planned_bytes += p.bytes[j];
    predicted_loss += p.loss[j];
    nlohmann::json row = {{"choice", c.name},
                          {"spec", c.keep ? std::string(dtype_name(c.keep_dtype)) : describe_quant_spec(c.spec)},
                          {"bytes", mixed_candidate_bytes(c, p.rows, p.cols)},
                          {"bpw", 8.0 * static_cast<double>(mixed_candidate_bytes(c, p.rows, p.cols)) /
                                      static_cast<double>(p.rows * p.cols)},
                          {"predicted_loss", p.loss[j]},
                          {"weighted_error", p.error[j]}};
    if (probe_ == "scale") {
      row["probe"] = p.probe >= 0 ? cands[static_cast<size_t>(p.probe)].name : "";
      row["probe_kld"] = p.probe_kld;
    }
    allocation[p.name] = std::move(row);
    if (c.keep) {
      const Tensor& t = model.get(p.name);
      const auto* dense = std::get_if<DenseEncoding>(&t.encoding->node);
      if (!dense || dense->dtype != c.keep_dtype) replace_and_release(model, to_dense(t, c.keep_dtype));
    } else {
      specs[p.name] = c.spec;
    }
  }

  const SpecFor spec_for = [&specs](const std::string& tensor) -> std::optional<QuantSpec> {
    auto it = specs.find(tensor);
    if (it == specs.end()) return std::nullopt;
    return it->second;
  };
  LLMC_ASSIGN_OR_RETURN(nlohmann::json method_details, run_method(model, ctx, spec_for, search));

  const SizeSummary after = summarize_size(model);
  if (after.bits_per_weight() > target_bpw_ + 1e-12)
    return make_error(ErrorCode::kInternal, "quant.mixed: result has ", after.bits_per_weight(),
                      " bpw, above the target ", target_bpw_, " (planned ", 8.0 * planned_bytes / elements, ")");

  PassReport report;
  report.pass = std::string(name());
  report.details = {{"target_bpw", target_bpw_},
                    {"min_bpw", 8.0 * static_cast<double>(min_bytes) / elements},
                    {"planned_bpw", 8.0 * static_cast<double>(planned_bytes) / elements},
                    {"effective_bpw", after.bits_per_weight()},
                    {"method", method_},
                    {"probe", probe_},
                    {"predicted_loss", predicted_loss},
                    {"allocation", std::move(allocation)},
                    {"tensors", std::move(method_details)}};
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log_info("quant.mixed: ", plans.size(), " tensors at ", after.bits_per_weight(), " bpw (target ", target_bpw_, ")");
  return report;
}

}  // namespace

std::unique_ptr<Pass> make_quant_mixed_pass() { return std::make_unique<QuantMixedPass>(); }

}  // namespace llmc
