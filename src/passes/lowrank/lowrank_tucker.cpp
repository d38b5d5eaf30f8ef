// lowrank.tucker: Tucker decomposition (HOSVD + HOOI) of matrices that have a higher-order view — the
// token embedding / output head folded as [v1, v2 | dim] (or [v1, v2 | d1, d2]) and attention weights
// split by head ([heads, head_dim | dim], attn_output [dim | heads, head_dim]) — into Tucker nodes.
#include <chrono>
#include <cmath>

#include "core/log.h"
#include "core/lowrank.h"
#include "model/arch.h"
#include "passes/lowrank/lowrank_math.h"
#include "passes/lowrank/lowrank_passes.h"
#include "passes/pass.h"

namespace llmc {
namespace {

constexpr const char* kPassName = "lowrank.tucker";

struct Fold {
  std::vector<int64_t> dims;
  int64_t row_modes = 1;
};

// n = a · b with a the largest divisor <= √n; nullopt when n has no such split with a >= 2.
std::optional<std::pair<int64_t, int64_t>> split_in_two(int64_t n) {
  for (auto a = static_cast<int64_t>(std::sqrt(static_cast<double>(n))); a >= 2; --a)
    if (n % a == 0) return std::make_pair(a, n / a);
  return std::nullopt;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The higher-order view of tensor `name` (see the file comment); `ways` 3 or 4 for vocabulary matrices.
Result<Fold> fold_for(const Model& model, const Tensor& t, int64_t ways) {
  const ModelConfig& c = model.config;
  const TensorRole role = tensor_role(t.name);
  if (role == TensorRole::kEmbedding || role == TensorRole::kOutput) {
    const auto v = split_in_two(t.rows());
    if (!v)
      return make_error(ErrorCode::kInvalidArgument, "vocabulary size ", t.rows(), " has no split into two factors");
    Fold f{{v->first, v->second, t.cols()}, 2};
    if (ways == 4) {
      const auto d = split_in_two(t.cols());
      if (!d) return make_error(ErrorCode::kInvalidArgument, "width ", t.cols(), " has no split into two factors");
      f.dims = {v->first, v->second, d->first, d->second};
    }
    return f;
  }
  const struct {
    const char* suffix;
    bool kv;
    bool heads_in_columns;
  } kAttention[] = {{"attn_q.weight", false, false},
                    {"attn_k.weight", true, false},
                    {"attn_v.weight", true, false},
                    {"attn_output.weight", false, true}};
  for (const auto& a : kAttention) {
    if (!ends_with(t.name, a.suffix)) continue;
    const int64_t heads = a.kv ? c.n_kv_heads : c.n_heads;
    if (a.heads_in_columns && t.cols() == heads * c.head_dim) return Fold{{t.rows(), heads, c.head_dim}, 1};
    if (!a.heads_in_columns && t.rows() == heads * c.head_dim) return Fold{{heads, c.head_dim, t.cols()}, 2};
  }
  return make_error(ErrorCode::kInvalidArgument, "'", t.name,
                    "' has no higher-order view (lowrank.tucker folds the token embedding, the output head and the "
                    "attention weights by head)");
}

class LowRankTuckerPass final : public Pass {
 public:
  std::string_view name() const override { return kPassName; }
  PassNeeds needs() const override { return {}; }
  void visit(OptionVisitor& v) override {
    ranks_.visit(v, false);
    v.option("ways", ways_, "Vocabulary matrices: 3 ([v1, v2 | dim]) or 4 ([v1, v2 | d1, d2]) modes");
    v.option("iterations", iterations_, "HOOI sweeps after the HOSVD start (0 = plain truncated HOSVD)");
  }
  Result<void> validate_options() const override {
    LLMC_TRY(ranks_.validate(kPassName, false));
    if (ways_ != 3 && ways_ != 4)
      return make_error(ErrorCode::kInvalidArgument, kPassName, ": ways ", ways_, " is not 3 or 4");
    if (iterations_ < 0 || iterations_ > 100)
      return make_error(ErrorCode::kInvalidArgument, kPassName, ": iterations ", iterations_, " outside 0..100");
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    LLMC_TRY(ctx.selector.compile());
    std::vector<std::string> targets;
    for (const Tensor& t : model.tensors()) {
      if (t.shape.dims.size() != 2 || !ctx.selector.selects(t.name)) continue;
      const TensorRole role = tensor_role(t.name);
      if (ctx.selector.has_targets() || role == TensorRole::kEmbedding || role == TensorRole::kOutput)
        targets.push_back(t.name);
    }
    std::vector<Fold> folds;
    for (const std::string& name : targets) {
      auto f = fold_for(model, model.get(name), ways_);
      if (!f.ok()) return with_context(f.error(), kPassName);
      folds.push_back(std::move(f).value());
    }
    const int threads = resolve_threads(ctx.threads);
    const int64_t n = static_cast<int64_t>(targets.size());
    std::vector<std::shared_ptr<const Encoding>> encodings(targets.size());
    std::vector<nlohmann::json> details(targets.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) decompose_one(model.get(targets[i]), folds[i], encodings[i], details[i]);
    PassReport report;
    report.pass = kPassName;
    for (size_t i = 0; i < targets.size(); ++i) {
      const Tensor& t = model.get(targets[i]);
      if (encodings[i]) replace_and_release(model, Tensor{t.name, t.shape, encodings[i]});
      report.details[targets[i]] = std::move(details[i]);
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  void decompose_one(const Tensor& t, const Fold& fold, std::shared_ptr<const Encoding>& out,
                     nlohmann::json& details) const {
    const std::vector<float> w = t.to_f32();
    const auto spectra = mode_energies(w, fold.dims);
    const std::vector<int64_t> ranks = ranks_.energy > 0
                                           ? tucker_ranks_for_energy(spectra, ranks_.energy)
                                           : tucker_ranks_for_ratio(spectra, fold.dims, ranks_.rank_ratio);
    const TuckerResult r = tucker_decompose(w, fold.dims, ranks, iterations_);
    // Row modes keep U_k [n_k, r_k]; column modes store B_k = U_kᵀ [r_k, n_k].
    std::vector<std::vector<float>> factors;
    for (size_t k = 0; k < fold.dims.size(); ++k) {
      const int64_t nk = fold.dims[k], rk = ranks[k];
      std::vector<float> f(static_cast<size_t>(nk * rk));
      for (int64_t i = 0; i < nk; ++i)
        for (int64_t a = 0; a < rk; ++a) {
          const float v = static_cast<float>(r.factors[k][i * rk + a]);
          if (static_cast<int64_t>(k) < fold.row_modes)
            f[i * rk + a] = v;
          else
            f[a * nk + i] = v;
        }
      factors.push_back(std::move(f));
    }
    const std::vector<float> core(r.core.begin(), r.core.end());
    auto enc = std::make_shared<Encoding>(Encoding{
        make_tucker_dense(fold.dims, fold.row_modes, ranks, core, factors, factor_dtype_for(t, ranks_.factor_dtype))});
    const size_t before = t.encoded_bytes(), after = encoded_bytes(*enc);
    details = {{"fold", tucker_dims_name(fold.dims, fold.row_modes)},
               {"ranks", ranks},
               {"params", static_cast<double>(tucker_params(fold.dims, ranks)) / static_cast<double>(t.numel())},
               {"rel_err", r.rel_err},
               {"bytes_before", before},
               {"bytes_after", after < before ? after : before},
               {"replaced", after < before}};
    if (after < before)
      out = std::move(enc);
    else
      log_info(kPassName, ": '", t.name, "' kept: Tucker factors take ", after, " bytes, the weight ", before);
  }

  RankOptions ranks_;
  int64_t ways_ = 3;
  int64_t iterations_ = 2;
};

}  // namespace

std::unique_ptr<Pass> make_lowrank_tucker_pass() { return std::make_unique<LowRankTuckerPass>(); }

}  // namespace llmc
