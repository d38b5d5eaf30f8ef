// lowrank.svd: truncated SVD of linear weights into LowRank{U, V} — plain (minimises the weight error)
// or activation-aware (method asvd: whitened by the calibration input covariance as in SVD-LLM,
// minimises the output error; layers in order, each calibrated on the already-decomposed ones).
#include <algorithm>
#include <chrono>
#include <map>

#include "core/log.h"
#include "core/lowrank.h"
#include "model/arch.h"
#include "passes/lowrank/lowrank_math.h"
#include "passes/lowrank/lowrank_passes.h"
#include "passes/pass.h"
#include "passes/quant/quant_gptq.h"
#include "pipeline/calibration.h"

namespace llmc {
namespace {

constexpr const char* kMethods[] = {"svd", "asvd"};
constexpr const char* kPassName = "lowrank.svd";

// One tensor to decompose: its input statistics (asvd) and, when already decided, its rank.
struct Job {
  std::string name;
  const LinearInputStats* stats = nullptr;  // null: plain SVD
  int64_t rank = 0;                         // 0: chosen from the spectrum by the rank options
};

// What decomposing one tensor gave (applied to the model in job order, after the parallel loop).
struct Outcome {
  std::shared_ptr<const Encoding> encoding;  // null: the tensor stays as it is
  nlohmann::json details;
};

class LowRankSvdPass final : public Pass {
 public:
  std::string_view name() const override { return kPassName; }
  PassNeeds needs() const override { return {.calibration = method_ == "asvd"}; }
  void visit(OptionVisitor& v) override {
    v.option("method", method_,
             "svd: minimise the weight error; asvd: whiten by the calibration input covariance "
             "and minimise the output error (needs calibration)",
             kMethods);
    ranks_.visit(v, true);
    v.option("damp", damp_, "asvd: fraction of mean(diag XᵀX) added to the covariance's diagonal");
  }
  Result<void> validate_options() const override {
    if (method_ != "svd" && method_ != "asvd")
      return make_error(ErrorCode::kInvalidArgument, kPassName, ": method '", method_, "' is not svd or asvd");
    LLMC_TRY(ranks_.validate(kPassName, true));
    if (!(damp_ > 0 && damp_ < 1))
      return make_error(ErrorCode::kInvalidArgument, kPassName, ": damp ", damp_, " outside (0, 1)");
    return {};
  }

  Result<PassReport> run(Model& model, PassContext& ctx) override {
    const auto start = std::chrono::steady_clock::now();
    LLMC_TRY(validate_options());
    LLMC_TRY(ctx.selector.compile());
    threads_ = resolve_threads(ctx.threads);
    const std::vector<std::string> targets = decomposition_targets(model, ctx.selector);
    for (const std::string& name : targets) {
      const Tensor& t = model.get(name);
      if (ranks_.rank > 0 && ranks_.rank >= std::min(t.rows(), t.cols()))
        return make_error(ErrorCode::kInvalidArgument, kPassName, ": rank ", ranks_.rank,
                          " is not below the smaller dimension of '", name, "' ", t.shape.str());
    }
    PassReport report;
    report.pass = kPassName;
    if (ranks_.target_params > 0) {
      LLMC_ASSIGN_OR_RETURN(allocated_, allocate(model, ctx, targets));
    }
    if (method_ == "svd") {
      LLMC_TRY(run_plain(model, targets, report.details));
    } else {
      LLMC_TRY(run_sequential(model, ctx, targets, report.details));
    }
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  // Plain SVD, one layer's tensors at a time (bounds the memory of the spectra).
  Result<void> run_plain(Model& model, const std::vector<std::string>& targets, nlohmann::json& details) {
    std::map<int64_t, std::vector<Job>> by_layer;
    for (const std::string& name : targets) by_layer[tensor_layer(name)].push_back(job_for(name, nullptr));
    int64_t done = 0;
    for (auto& [layer, jobs] : by_layer) {
      LLMC_TRY(decompose(model, jobs, details));
      report_progress(kPassName, ++done, static_cast<int64_t>(by_layer.size()), "groups");
    }
    return {};
  }

  // Activation-aware: block by block, each calibrated on the outputs of the blocks already
  // decomposed; the output head on the final hidden states; the token embedding (a lookup, no
  // input) by plain SVD.
  Result<void> run_sequential(Model& model, PassContext& ctx, const std::vector<std::string>& targets,
                              nlohmann::json& details) {
    if (!ctx.calib)
      return make_error(ErrorCode::kInvalidArgument, kPassName,
                        ": method asvd needs calibration data (--calib FILE or --calib-self N)");
    std::vector<Job> plain;
    bool head = false;
    int64_t layers = 0;
    for (const std::string& name : targets) {
      const int64_t l = tensor_layer(name);
      if (l >= 0)
        layers = std::max(layers, l + 1);
      else if (tensor_role(name) == TensorRole::kOutput)
        head = true;
      else
        plain.push_back(job_for(name, nullptr));
    }
    if (!plain.empty()) LLMC_TRY(decompose(model, plain, details));
    if (layers == 0 && !head) return {};
    if (head) layers = model.config.n_layers;
    LLMC_ASSIGN_OR_RETURN(auto seq, ctx.calib->sequential(model, threads_));
    StatsRequest request;
    request.xtx = true;
    auto layer_jobs = [&](const LayerStats& stats, auto&& pick) -> Result<std::vector<Job>> {
      std::vector<Job> jobs;
      for (const std::string& name : targets) {
        if (!pick(name)) continue;
        auto it = stats.find(name);
        if (it == stats.end() && stats.size() == 1) it = stats.begin();  // the head's one input
        if (it == stats.end() || !it->second || it->second->xtx.empty())
          return make_error(ErrorCode::kInternal, kPassName, ": no input covariance for '", name, "'");
        jobs.push_back(job_for(name, it->second.get()));
      }
      return jobs;
    };
    for (int64_t l = 0; l < layers; ++l) {
      const bool any = std::any_of(targets.begin(), targets.end(), [&](const auto& n) { return tensor_layer(n) == l; });
      if (any) {
        LLMC_ASSIGN_OR_RETURN(const LayerStats stats, seq->collect(l, request));
        LLMC_ASSIGN_OR_RETURN(auto jobs, layer_jobs(stats, [&](const std::string& n) { return tensor_layer(n) == l; }));
        LLMC_TRY(decompose(model, jobs, details));
      }
      LLMC_TRY(seq->advance(l));
      report_progress(kPassName, l + 1, layers, "layers");
    }
    if (head) {
      LLMC_ASSIGN_OR_RETURN(const LayerStats stats, seq->collect_head(request));
      LLMC_ASSIGN_OR_RETURN(
          auto jobs, layer_jobs(stats, [&](const std::string& n) { return tensor_role(n) == TensorRole::kOutput; }));
      LLMC_TRY(decompose(model, jobs, details));
    }
    return {};
  }

  Job job_for(const std::string& name, const LinearInputStats* stats) const {
    Job job{name, stats, ranks_.rank};
    if (auto it = allocated_.find(name); it != allocated_.end()) job.rank = it->second;
    return job;
  }

  // Global budget: ranks from the spectra of the model as it is now (asvd: whitened by one
  // calibration forward over the uncompressed model), before any tensor changes.
  Result<std::map<std::string, int64_t>> allocate(const Model& model, PassContext& ctx,
                                                  const std::vector<std::string>& targets) {
    LayerStats stats;
    if (method_ == "asvd") {
      if (!ctx.calib)
        return make_error(ErrorCode::kInvalidArgument, kPassName,
                          ": method asvd needs calibration data (--calib FILE or --calib-self N)");
      StatsRequest request;
      request.xtx = true;
      LLMC_ASSIGN_OR_RETURN(stats, ctx.calib->collect_all(model, request, threads_));
    }
    std::vector<BudgetItem> items(targets.size());
    std::vector<Error> errors(targets.size());
    std::vector<char> failed(targets.size(), 0);
    const int64_t n = static_cast<int64_t>(targets.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_)
    for (int64_t i = 0; i < n; ++i) {
      const Tensor& t = model.get(targets[i]);
      SpectrumOptions so;
      so.keep = 0;
      so.damp = damp_;
      if (auto it = stats.find(targets[i]); it != stats.end() && tensor_role(targets[i]) != TensorRole::kEmbedding) {
        so.xtx = it->second->xtx;
        so.tokens = it->second->tokens;
      }
      auto s = weight_spectrum(t.to_f32(), t.rows(), t.cols(), so);
      if (!s.ok()) {
        errors[i] = with_context(s.error(), str_cat(kPassName, ": tensor '", targets[i], "'"));
        failed[i] = 1;
        continue;
      }
      items[i] = BudgetItem{t.rows(), t.cols(), std::move(s->sigma)};
    }
    for (int64_t i = 0; i < n; ++i)
      if (failed[i]) return errors[i];
    auto ranks = allocate_ranks(items, ranks_.target_params);
    if (!ranks.ok()) return with_context(ranks.error(), kPassName);
    std::map<std::string, int64_t> out;
    for (size_t i = 0; i < targets.size(); ++i) out[targets[i]] = (*ranks)[i];
    return out;
  }

  // Decomposes the jobs in parallel (each alone: the result does not depend on the thread count),
  // then replaces, in job order, every tensor whose factors take fewer bytes than it does now.
  Result<void> decompose(Model& model, const std::vector<Job>& jobs, nlohmann::json& details) {
    std::vector<Result<Outcome>> outcomes(jobs.size(), Result<Outcome>(Outcome{}));
    const int64_t n = static_cast<int64_t>(jobs.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_)
    for (int64_t i = 0; i < n; ++i) outcomes[i] = decompose_one(model.get(jobs[i].name), jobs[i]);
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (!outcomes[i].ok())
        return with_context(outcomes[i].error(), str_cat(kPassName, ": tensor '", jobs[i].name, "'"));
      Outcome& o = *outcomes[i];
      const Tensor& t = model.get(jobs[i].name);
      if (o.encoding) replace_and_release(model, Tensor{t.name, t.shape, std::move(o.encoding)});
      details[jobs[i].name] = std::move(o.details);
    }
    return {};
  }

  Result<Outcome> decompose_one(const Tensor& t, const Job& job) const {
    const int64_t rows = t.rows(), cols = t.cols();
    SpectrumOptions so;
    so.damp = damp_;
    if (job.stats) {
      so.xtx = job.stats->xtx;
      so.tokens = job.stats->tokens;
    }
    int64_t rank = job.rank;
    if (rank == 0 && ranks_.rank_ratio > 0) rank = rank_for_ratio(rows, cols, ranks_.rank_ratio);
    so.keep = rank > 0 ? rank : -1;
    LLMC_ASSIGN_OR_RETURN(WeightSpectrum s, weight_spectrum(t.to_f32(), rows, cols, so));
    if (rank == 0) rank = rank_for_energy(s.sigma, ranks_.energy);
    rank = std::min(rank, s.kept);
    std::vector<float> u, v;
    spectrum_factors(s, rank, u, v);
    auto enc = std::make_shared<Encoding>(
        Encoding{make_lowrank_dense(u, v, rows, rank, cols, factor_dtype_for(t, ranks_.factor_dtype))});
    const size_t before = t.encoded_bytes(), after = encoded_bytes(*enc);
    Outcome o;
    o.details = {{"method", job.stats ? "asvd" : "svd"},
                 {"rank", rank},
                 {"params", static_cast<double>(rank * (rows + cols)) / static_cast<double>(rows * cols)},
                 {"retained_energy", retained_energy(s.sigma, rank)},
                 {"bytes_before", before},
                 {"bytes_after", after < before ? after : before},
                 {"replaced", after < before}};
    if (job.stats) o.details["damp"] = s.damp_used;
    if (after < before)
      o.encoding = std::move(enc);
    else
      log_info(kPassName, ": '", t.name, "' kept: rank ", rank, " factors take ", after, " bytes, the weight ", before);
    return o;
  }

  std::string method_ = "svd";
  RankOptions ranks_;
  double damp_ = 0.01;
  int threads_ = 1;
  std::map<std::string, int64_t> allocated_;  // target_params: rank per tensor
};

}  // namespace

std::unique_ptr<Pass> make_lowrank_svd_pass() { return std::make_unique<LowRankSvdPass>(); }

}  // namespace llmc
