// quant.qat: quantization-aware distillation of an already quantized model (docs/quant_qat.md).
// The quantized tensors get latent f32 weights (starting on their grid, so the first step sees
// the input model exactly) and trainable group scales and mins; the forward pass uses the
// fake-quantized weights Q(w; s, m), and the loss is KL(p_teacher || p_student) over the
// calibration sequences, the teacher being the model before the pipeline's first stage. Gradients
// reach w through the straight-through estimator inside the clipping range and s, m through the
// LSQ derivative; Adam with a cosine-decayed step; optional training of the norm gains. At the end
// every tensor is re-encoded with its own spec (bits, scheme, group size, scale dtype), so the
// file has exactly the input's layout and size. That is model mode; block mode (quant_qat_block.cpp)
// trains one half-block at a time on the teacher's hidden states instead, in the memory of one
// half-block.
#include <algorithm>
#include <chrono>
#include <optional>

#include <omp.h>

#include "core/log.h"
#include "model/arch.h"
#include "passes/pass.h"
#include "passes/quant/quant_passes.h"
#include "passes/quant/quant_qat_train.h"
#include "pipeline/calibration.h"
#include "train/llama_grad.h"

namespace llmc {
namespace {

// auto mode: model mode while its estimated training memory stays within this.
constexpr double kModelModeBytes = double(int64_t{1} << 30);
constexpr const char* kModes[] = {"auto", "model", "block"};

class QuantQatPass : public Pass {
 public:
  std::string_view name() const override { return "quant.qat"; }
  PassNeeds needs() const override { return PassNeeds{.calibration = true, .teacher = true}; }
  void visit(OptionVisitor& v) override {
    v.option("steps", o_.steps, "optimizer steps");
    v.option("batch", o_.batch, "calibration sequences per step");
    v.option("lr", o_.lr, "latent-weight step, as a fraction of the group's scale");
    v.option("lr_scales", o_.lr_scales, "scale and min step, as a fraction of the group's scale");
    v.option("norms", o_.norms, "also train the RMSNorm gains");
    v.option("lr_norms", o_.lr_norms, "norm-gain step");
    v.option("noise", o_.noise,
             "fraction of calibration tokens replaced by uniformly random ids (teacher and student see the same "
             "sequences: matching on unusual contexts too)");
    v.option("mode", o_.mode,
             "model: train the whole model on the teacher's logits (KL); block: block by block, each as its "
             "attention and FFN halves, on the teacher's hidden states (memory of one half-block); auto: model "
             "while its estimate stays within 1 GiB",
             kModes);
  }
  Result<void> validate_options() const override {
    if (std::find(std::begin(kModes), std::end(kModes), o_.mode) == std::end(kModes))
      return make_error(ErrorCode::kInvalidArgument, "quant.qat: mode must be auto, model or block, not '", o_.mode,
                        "'");
    if (o_.steps < 1) return make_error(ErrorCode::kInvalidArgument, "quant.qat: steps must be >= 1");
    if (o_.batch < 1 || o_.batch > 256)
      return make_error(ErrorCode::kInvalidArgument, "quant.qat: batch must be in [1, 256]");
    if (!(o_.noise >= 0 && o_.noise < 1))
      return make_error(ErrorCode::kInvalidArgument, "quant.qat: noise must be in [0, 1)");
    if (!(o_.lr >= 0 && o_.lr_scales >= 0 && o_.lr_norms >= 0))
      return make_error(ErrorCode::kInvalidArgument, "quant.qat: learning rates must be >= 0");
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override;

 private:
  // Model mode: the report details.
  Result<nlohmann::json> train_model(Model& model, const PassContext& ctx, const std::vector<std::string>& trained,
                                     const std::vector<std::vector<int32_t>>& seqs);
  QatOptions o_;
};

// Bytes model mode would hold: the f32 student, each trained weight's latent copy and Adam moments,
// one gradient copy of the model per batch slot, the teacher's logits of every sequence and each
// slot's logits and their gradient.
double model_mode_bytes(const Model& model, const std::vector<std::string>& trained,
                        const std::vector<std::vector<int32_t>>& seqs, int64_t batch) {
  double params = 0, latent = 0, tokens = 0, longest = 0;
  for (const Tensor& t : model.tensors()) params += static_cast<double>(t.numel());
  for (const std::string& name : trained) latent += static_cast<double>(model.get(name).numel());
  for (const auto& s : seqs) {
    tokens += static_cast<double>(s.size());
    longest = std::max(longest, static_cast<double>(s.size()));
  }
  const double V = static_cast<double>(model.config.vocab_size);
  return 4 * (params * (1 + static_cast<double>(batch)) + 3 * latent + tokens * V + 2 * longest * V * batch);
}

Result<PassReport> QuantQatPass::run(Model& model, PassContext& ctx) {
  const auto start = std::chrono::steady_clock::now();
  if (!ctx.calib)
    return make_error(ErrorCode::kInvalidArgument, "quant.qat needs calibration data (--calib or --calib-self)");
  if (!ctx.teacher)
    return make_error(ErrorCode::kInvalidArgument, "quant.qat needs the original model (the pipeline's teacher)");
  std::vector<std::string> trained;
  nlohmann::json skipped = nlohmann::json::array();
  for (const Tensor& t : model.tensors()) {
    if (!ctx.selector.selects(t.name) || !is_default_weight_target(model, t.name)) continue;
    if (std::holds_alternative<QuantEncoding>(t.encoding->node))
      trained.push_back(t.name);
    else
      skipped.push_back(t.name);
  }
  if (trained.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "quant.qat: no selected tensor is quantized (run a quantization stage before it)");
  const std::vector<std::vector<int32_t>> seqs =
      noisy_sequences(ctx.calib->sequences(), o_.noise, ctx.seed, model.config.vocab_size);
  std::string mode = o_.mode;
  if (mode == "auto") {
    const double bytes = model_mode_bytes(model, trained, seqs, std::min<int64_t>(o_.batch, std::ssize(seqs)));
    mode = bytes <= kModelModeBytes ? "model" : "block";
    log_info("quant.qat: ", mode, " mode (training the whole model would take about ", bytes / double(1 << 20),
             " MiB; model mode up to ", kModelModeBytes / double(1 << 20), " MiB)");
  }
  nlohmann::json details;
  if (mode == "model") {
    LLMC_ASSIGN_OR_RETURN(details, train_model(model, ctx, trained, seqs));
  } else {
    LLMC_ASSIGN_OR_RETURN(details, qat_blocks(model, ctx, o_, seqs, trained));
  }
  details["mode"] = mode;
  details["skipped"] = skipped;
  PassReport report;
  report.pass = "quant.qat";
  report.details = std::move(details);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

Result<nlohmann::json> QuantQatPass::train_model(Model& model, const PassContext& ctx,
                                                 const std::vector<std::string>& trained,
                                                 const std::vector<std::vector<int32_t>>& seqs) {
  LLMC_ASSIGN_OR_RETURN(LlamaParams student, LlamaParams::from_model(model));
  const ModelConfig& cfg = model.config;
  std::vector<QatTensor> qt;
  for (const std::string& name : trained) {
    const size_t param = static_cast<size_t>(student.index(name));
    qt.push_back(make_qat_tensor(model.get(name), student.values(param), param));
  }
  std::vector<size_t> norm_params;
  if (o_.norms)
    for (size_t i = 0; i < student.count(); ++i)
      if (tensor_role(student.name(i)) == TensorRole::kNorm) norm_params.push_back(i);
  std::vector<Adam> norm_adam(norm_params.size());
  for (size_t k = 0; k < norm_params.size(); ++k) norm_adam[k].resize(student.values(norm_params[k]).size());

  const int64_t n_seq = static_cast<int64_t>(seqs.size()), V = cfg.vocab_size;
  const int64_t B = std::min<int64_t>(o_.batch, n_seq);
  const int threads = resolve_threads(ctx.threads);

  // Teacher logits of every sequence, computed once (the teacher's f32 weights live only here).
  std::vector<std::vector<float>> teacher_logits(seqs.size());
  {
    LLMC_ASSIGN_OR_RETURN(const LlamaParams teacher, LlamaParams::from_model(*ctx.teacher));
    std::vector<std::unique_ptr<LlamaGrad>> g(static_cast<size_t>(threads));
    std::vector<std::optional<Error>> errors(seqs.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n_seq; ++i) {
      auto& gi = g[static_cast<size_t>(omp_get_thread_num())];
      if (!gi) gi = std::make_unique<LlamaGrad>(cfg);
      teacher_logits[i].resize(seqs[i].size() * V);
      auto r = gi->forward(teacher, seqs[i], teacher_logits[i].data(), false);
      if (!r.ok()) errors[i] = r.error();
    }
    for (const auto& e : errors)
      if (e) return *e;
  }

  // One step's work: student forward/backward of sequences [first, first + B) (cyclic), each
  // sequence's gradient in its own slot, summed in slot order (independent of the thread count).
  std::vector<std::unique_ptr<LlamaGrad>> grads_of(static_cast<size_t>(B));
  std::vector<LlamaParams> slot_grad;
  for (int64_t b = 0; b < B; ++b) {
    grads_of[b] = std::make_unique<LlamaGrad>(cfg);
    slot_grad.push_back(student.zeros_like());
  }
  std::vector<double> slot_kl(static_cast<size_t>(B));
  // Sequences [first, first + count) (cyclic); returns their summed KL and token count.
  auto run_batch = [&](int64_t first, int64_t count, bool backward, int64_t* tokens) -> double {
#pragma omp parallel for schedule(static, 1) num_threads(threads)
    for (int64_t b = 0; b < count; ++b) {
      const size_t i = static_cast<size_t>((first + b) % n_seq);
      const int64_t n = static_cast<int64_t>(seqs[i].size());
      std::vector<float> logits(n * V), dlogits(backward ? n * V : 0);
      (void)grads_of[b]->forward(student, seqs[i], logits.data(), backward);  // ids checked by the teacher
      slot_kl[b] = kl_loss(teacher_logits[i].data(), logits.data(), n, V, 1.0f, backward ? dlogits.data() : nullptr);
      if (backward) {
        slot_grad[b].fill_zero();
        grads_of[b]->backward(student, dlogits.data(), slot_grad[b]);
      }
    }
    double kl = 0;
    *tokens = 0;
    for (int64_t b = 0; b < count; ++b) {
      kl += slot_kl[b];
      *tokens += static_cast<int64_t>(seqs[static_cast<size_t>((first + b) % n_seq)].size());
    }
    return kl;
  };
  auto set_fake_quant = [&] {
    for (QatTensor& t : qt) fake_quant(t, student.values(t.param).data());
  };
  // Mean KL over all sequences with the student's current values.
  auto mean_kl = [&]() {
    double kl = 0;
    int64_t tokens = 0;
    for (int64_t first = 0; first < n_seq; first += B) {
      int64_t n = 0;
      kl += run_batch(first, std::min(B, n_seq - first), false, &n);
      tokens += n;
    }
    return kl / static_cast<double>(std::max<int64_t>(tokens, 1));
  };
  set_fake_quant();
  const double kl_before = mean_kl();

  for (int64_t step = 1; step <= o_.steps; ++step) {
    set_fake_quant();
    int64_t tokens_per_step = 0;
    const double kl = run_batch(((step - 1) * B) % n_seq, B, true, &tokens_per_step);
    LlamaParams& grad = slot_grad[0];
    for (int64_t b = 1; b < B; ++b) grad.add(slot_grad[b]);
    const float inv_tokens = 1.0f / static_cast<float>(tokens_per_step);
    const double decay = cosine_decay(step, o_.steps);
    for (QatTensor& t : qt) {
      std::vector<float>& g = grad.values(t.param);
      for (float& v : g) v *= inv_tokens;
      qat_update(t, g, o_, decay, step);
    }
    for (size_t k = 0; k < norm_params.size(); ++k) {
      std::vector<float>& g = grad.values(norm_params[k]);
      for (float& v : g) v *= inv_tokens;
      norm_update(student.values(norm_params[k]), norm_adam[k], g, o_, decay, step);
    }
    if (step == 1 || step % 50 == 0 || step == o_.steps)
      log_msg(LogLevel::kDebug, "quant.qat step ", step, "/", o_.steps, ": batch KL ",
              kl / static_cast<double>(tokens_per_step));
    report_progress("quant.qat", step, o_.steps, "steps");
  }
  nlohmann::json tensors = nlohmann::json::object();
  for (QatTensor& t : qt) {
    store_trained(model, t, tensors);
    student.values(t.param) = model.get(t.name).to_f32();
  }
  for (size_t k : norm_params) {
    store_norm(model, student.name(k), student.values(k));
    student.values(k) = model.get(student.name(k)).to_f32();
  }
  const double kl_after = mean_kl();  // of the model as encoded
  return nlohmann::json{{"steps", o_.steps},
                        {"batch", B},
                        {"train_kld_before", kl_before},
                        {"train_kld_after", kl_after},
                        {"norms_trained", !norm_params.empty()},
                        {"tensors", tensors}};
}

}  // namespace

std::unique_ptr<Pass> make_quant_qat_pass() { return std::make_unique<QuantQatPass>(); }

}  // namespace llmc
