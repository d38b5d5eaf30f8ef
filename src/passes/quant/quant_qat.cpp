// quant.qat: quantization-aware distillation of an already quantized model (docs/quant_qat.md).
// The quantized tensors get latent f32 weights (starting on their grid, so the first step sees
// the input model exactly) and trainable group scales and mins; the forward pass uses the
// fake-quantized weights Q(w; s, m), and the loss is KL(p_teacher || p_student) over the
// calibration sequences, the teacher being the model before the pipeline's first stage. Gradients
// reach w through the straight-through estimator inside the clipping range and s, m through the
// LSQ derivative; Adam with a cosine-decayed step; optional training of the norm gains. At the end
// every tensor is re-encoded with its own spec (bits, scheme, group size, scale dtype), so the
// file has exactly the input's layout and size.
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <random>

#include <omp.h>

#include "core/log.h"
#include "model/arch.h"
#include "passes/pass.h"
#include "passes/quant/quant_math.h"
#include "passes/quant/quant_passes.h"
#include "pipeline/calibration.h"
#include "train/llama_grad.h"

namespace llmc {
namespace {

struct QatOptions {
  int64_t steps = 200;
  int64_t batch = 4;
  double lr = 0.01;          // latent weights: Adam step as a fraction of the group's initial scale
  double lr_scales = 0.002;  // scales and mins: fraction of the group's initial scale
  bool norms = true;         // also train the RMSNorm gains
  double lr_norms = 0.001;   // norm gains: absolute Adam step
  double noise = 0.05;       // fraction of each training sequence's tokens replaced by random ids
};

// Adam moments of a parameter vector; `unit` scales the step of each entry.
struct Adam {
  std::vector<float> m, v;
  void resize(size_t n) {
    m.assign(n, 0.0f);
    v.assign(n, 0.0f);
  }
  void step(float* x, const float* g, size_t n, const std::function<float(size_t)>& lr, int64_t t) {
    constexpr double b1 = 0.9, b2 = 0.999, eps = 1e-20;
    const double c1 = 1.0 - std::pow(b1, static_cast<double>(t)), c2 = 1.0 - std::pow(b2, static_cast<double>(t));
    for (size_t i = 0; i < n; ++i) {
      m[i] = static_cast<float>(b1 * m[i] + (1 - b1) * g[i]);
      v[i] = static_cast<float>(b2 * v[i] + (1 - b2) * static_cast<double>(g[i]) * g[i]);
      const double mh = m[i] / c1, vh = v[i] / c2;
      x[i] -= static_cast<float>(lr(i) * mh / (std::sqrt(vh) + eps));
    }
  }
};

// One quantized tensor being trained.
struct QatTensor {
  std::string name;
  size_t param = 0;  // index in LlamaParams
  QuantSpec spec;
  int64_t rows = 0, cols = 0, gpr = 0, gsize = 0;
  std::vector<float> w, s, m, s0;  // latent [rows, cols]; scales, mins, initial scales [rows, gpr]
  // u8 scales: the input's grids, (step, base) per block of spec.scale_block groups. They stay:
  // trained scales are snapped onto them in every forward pass (straight through) and at the end.
  std::vector<float> scale_grid, min_grid;
  Adam aw, as, am;
  bool has_mins() const {
    return spec.scheme == QuantScheme::kAsymmetric || (spec.scheme == QuantScheme::kBinary && spec.binary_two_level);
  }
};

QuantSpec spec_of(const QuantEncoding& q) {
  QuantSpec s;
  s.bits = q.bits;
  s.scheme = q.scheme;
  s.group_size = q.group_size;
  s.scale_dtype = q.scale_dtype;
  s.scale_block = q.scale_dtype == DType::kU8 ? q.scale_block : 256;
  s.trits5 = q.packing == QuantPacking::kTrits5;
  s.binary_two_level = q.scheme == QuantScheme::kBinary && !q.mins.empty();
  return s;
}

// Code-axis geometry of a scheme: value = (q - centre) · s + m with q in [0, qmax].
void code_axis(const QuantSpec& spec, float* centre, float* qmax) {
  switch (spec.scheme) {
    case QuantScheme::kSymmetric:
      *centre = static_cast<float>(1 << (spec.bits - 1));
      *qmax = static_cast<float>((1 << spec.bits) - 1);
      return;
    case QuantScheme::kAsymmetric:
      *centre = 0;
      *qmax = static_cast<float>((1 << spec.bits) - 1);
      return;
    case QuantScheme::kTernary:
      *centre = 1;
      *qmax = 2;
      return;
    case QuantScheme::kBinary:
      *centre = 0.5f;  // value = (2q - 1) s + m = (q - 1/2) (2s) + m
      *qmax = 1;
      return;
  }
}

std::vector<float> meta_floats(const Bytes& b) {
  std::vector<float> out(b.size() / sizeof(float));
  if (!out.empty()) std::memcpy(out.data(), b.data(), out.size() * sizeof(float));
  return out;
}

// Entry gi of a u8 grid nearest to v (the stored value); v itself without a grid.
float on_grid(const std::vector<float>& grid, int64_t block, size_t gi, float v) {
  if (grid.empty()) return v;
  const size_t b = 2 * (gi / static_cast<size_t>(block));
  const float step = grid[b], base = grid[b + 1];
  if (!(step > 0)) return base;
  return base + step * std::clamp(std::nearbyint((v - base) / step), 0.0f, 255.0f);
}

// Visits every weight of t with its group's stored (on-grid) params: f(i, gi, s, m, x, q, k) with
// x the unrounded code and q the code (both unused when s == 0, an all-zero group), the value
// being (q - centre) · s + m and k the scale's factor in s (2 for binary).
template <class F>
void for_each_weight(const QatTensor& t, const F& f) {
  float centre = 0, qmax = 1;
  code_axis(t.spec, &centre, &qmax);
  const float k = t.spec.scheme == QuantScheme::kBinary ? 2.0f : 1.0f;
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t c = 0; c < t.cols; ++c) {
      const size_t gi = static_cast<size_t>(r * t.gpr + c / t.gsize), i = static_cast<size_t>(r * t.cols + c);
      const float s = on_grid(t.scale_grid, t.spec.scale_block, gi, t.s[gi]) * k;
      const float m = t.has_mins() ? on_grid(t.min_grid, t.spec.scale_block, gi, t.m[gi]) : 0.0f;
      const float x = s == 0.0f ? 0.0f : (t.w[i] - m) / s + centre;
      f(i, gi, s, m, x, std::clamp(std::nearbyint(x), 0.0f, qmax), centre, qmax, k);
    }
}

// out = the fake-quantized weights.
void fake_quant(const QatTensor& t, float* out) {
  for_each_weight(t, [&](size_t i, size_t, float s, float m, float, float q, float centre, float, float) {
    out[i] = s == 0.0f ? m : (q - centre) * s + m;
  });
}

// Given g = dL/d(fake-quantized weights): dL/dw into gw, dL/ds and dL/dm added to gs, gm.
// Straight through for w inside the clipping range; LSQ for s.
void fake_quant_backward(const QatTensor& t, const float* g, float* gw, float* gs, float* gm) {
  for_each_weight(t, [&](size_t i, size_t gi, float s, float, float x, float q, float centre, float qmax, float k) {
    if (s == 0.0f) {
      gw[i] = 0.0f;
      gm[gi] += g[i];
    } else if (x >= 0.0f && x <= qmax) {
      gw[i] = g[i];
      gs[gi] += g[i] * (q - x) * k;
    } else {
      gw[i] = 0.0f;
      gs[gi] += g[i] * (q - centre) * k;
      gm[gi] += g[i];
    }
  });
}

// The tensor re-encoded with its own spec from the trained latent weights and params.
QuantEncoding encode(const QatTensor& t, int64_t* changed, const QuantEncoding& before) {
  QuantRowsBuilder b(t.spec, t.rows, t.cols);
  if (t.spec.scale_dtype == DType::kU8) b.set_scale_grid_meta(t.scale_grid, t.min_grid);
  const int64_t stride = quant_row_stride(before, t.cols);
  *changed = 0;
  for (int64_t r = 0; r < t.rows; ++r)
    for (int64_t g = 0; g < t.gpr; ++g) {
      const size_t gi = static_cast<size_t>(r * t.gpr + g);
      const GroupParams p = b.set_params(r, g, GroupParams{t.s[gi], t.has_mins() ? t.m[gi] : 0.0f});
      for (int64_t c = g * t.gsize; c < std::min(t.cols, (g + 1) * t.gsize); ++c) {
        const uint32_t q = quantize_value(t.spec, p, t.w[static_cast<size_t>(r * t.cols + c)]);
        b.set_code(r, c, q);
        *changed += q != quant_code_at(before, before.codes.data() + r * stride, c);
      }
    }
  return b.finish();
}

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
  }
  Result<void> validate_options() const override {
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
  QatOptions o_;
};

Result<PassReport> QuantQatPass::run(Model& model, PassContext& ctx) {
  const auto start = std::chrono::steady_clock::now();
  if (!ctx.calib)
    return make_error(ErrorCode::kInvalidArgument, "quant.qat needs calibration data (--calib or --calib-self)");
  if (!ctx.teacher)
    return make_error(ErrorCode::kInvalidArgument, "quant.qat needs the original model (the pipeline's teacher)");
  LLMC_ASSIGN_OR_RETURN(LlamaParams student, LlamaParams::from_model(model));
  const ModelConfig& cfg = model.config;

  std::vector<QatTensor> qt;
  nlohmann::json skipped = nlohmann::json::array();
  for (const Tensor& t : model.tensors()) {
    if (!ctx.selector.selects(t.name) || !is_default_weight_target(model, t.name)) continue;
    const auto* q = std::get_if<QuantEncoding>(&t.encoding->node);
    if (!q) {
      skipped.push_back(t.name);
      continue;
    }
    QatTensor x;
    x.name = t.name;
    x.param = static_cast<size_t>(student.index(t.name));
    x.spec = spec_of(*q);
    x.rows = t.rows();
    x.cols = t.cols();
    x.gpr = quant_groups_per_row(*q, x.cols);
    x.gsize = q->group_size > 0 ? q->group_size : x.cols;
    x.w = student.values(x.param);
    x.s.resize(static_cast<size_t>(x.rows * x.gpr));
    x.m.resize(x.s.size());
    for (size_t g = 0; g < x.s.size(); ++g) {
      x.s[g] = quant_group_scale(*q, static_cast<int64_t>(g));
      x.m[g] = quant_group_min(*q, static_cast<int64_t>(g));
    }
    x.s0 = x.s;
    if (q->scale_dtype == DType::kU8) {
      x.scale_grid = meta_floats(q->scale_meta);
      x.min_grid = meta_floats(q->min_meta);
    }
    x.aw.resize(x.w.size());
    x.as.resize(x.s.size());
    x.am.resize(x.m.size());
    qt.push_back(std::move(x));
  }
  if (qt.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "quant.qat: no selected tensor is quantized (run a quantization stage before it)");
  std::vector<size_t> norm_params;
  if (o_.norms)
    for (size_t i = 0; i < student.count(); ++i)
      if (tensor_role(student.name(i)) == TensorRole::kNorm) norm_params.push_back(i);
  std::vector<Adam> norm_adam(norm_params.size());
  for (size_t k = 0; k < norm_params.size(); ++k) norm_adam[k].resize(student.values(norm_params[k]).size());

  std::vector<std::vector<int32_t>> seqs = ctx.calib->sequences();
  if (o_.noise > 0) {
    std::mt19937_64 rng(ctx.seed ^ 0x71a7u);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(cfg.vocab_size - 1));
    for (auto& seq : seqs)
      for (size_t i = 1; i < seq.size(); ++i)
        if (u(rng) < o_.noise) seq[i] = id(rng);
  }
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
    const double decay = 0.5 * (1.0 + std::cos(M_PI * static_cast<double>(step - 1) / static_cast<double>(o_.steps)));
    for (QatTensor& t : qt) {
      std::vector<float>& g = grad.values(t.param);
      for (float& v : g) v *= inv_tokens;
      std::vector<float> gw(t.w.size()), gs(t.s.size(), 0.0f), gm(t.m.size(), 0.0f);
      fake_quant_backward(t, g.data(), gw.data(), gs.data(), gm.data());
      auto unit = [&](size_t gi) { return static_cast<float>(std::abs(t.s0[gi])); };
      t.aw.step(
          t.w.data(), gw.data(), gw.size(),
          [&](size_t i) {
            return static_cast<float>(o_.lr * decay) *
                   unit(static_cast<size_t>((i / t.cols) * t.gpr + (i % t.cols) / t.gsize));
          },
          step);
      t.as.step(
          t.s.data(), gs.data(), gs.size(),
          [&](size_t gi) { return static_cast<float>(o_.lr_scales * decay) * unit(gi); }, step);
      if (t.has_mins())
        t.am.step(
            t.m.data(), gm.data(), gm.size(),
            [&](size_t gi) { return static_cast<float>(o_.lr_scales * decay) * unit(gi); }, step);
      // Scales keep their sign (symmetric fits may choose a negative one) and stay away from 0.
      for (size_t gi = 0; gi < t.s.size(); ++gi)
        if (t.s[gi] * t.s0[gi] < 1e-3f * t.s0[gi] * t.s0[gi]) t.s[gi] = 1e-3f * t.s0[gi];
    }
    for (size_t k = 0; k < norm_params.size(); ++k) {
      std::vector<float>& g = grad.values(norm_params[k]);
      for (float& v : g) v *= inv_tokens;
      norm_adam[k].step(
          student.values(norm_params[k]).data(), g.data(), g.size(),
          [&](size_t) { return static_cast<float>(o_.lr_norms * decay); }, step);
    }
    if (step == 1 || step % 50 == 0 || step == o_.steps)
      log_msg(LogLevel::kDebug, "quant.qat step ", step, "/", o_.steps, ": batch KL ",
              kl / static_cast<double>(tokens_per_step));
    report_progress("quant.qat", step, o_.steps, "steps");
  }
  PassReport report;
  report.pass = "quant.qat";
  nlohmann::json tensors = nlohmann::json::object();
  for (QatTensor& t : qt) {
    const Tensor old = model.get(t.name);
    int64_t changed = 0;
    QuantEncoding enc = encode(t, &changed, std::get<QuantEncoding>(old.encoding->node));
    tensors[t.name] = {{"spec", describe_quant_spec(t.spec)},
                       {"codes_changed", static_cast<double>(changed) / static_cast<double>(t.rows * t.cols)}};
    replace_and_release(model, Tensor{t.name, old.shape, std::make_shared<const Encoding>(Encoding{std::move(enc)})});
    student.values(t.param) = model.get(t.name).to_f32();
  }
  for (size_t k : norm_params) {
    const Tensor& old = model.get(student.name(k));
    const auto* dense = std::get_if<DenseEncoding>(&old.encoding->node);
    replace_and_release(model, make_dense(old.name, old.shape, student.values(k), dense ? dense->dtype : DType::kF32));
    student.values(k) = model.get(student.name(k)).to_f32();
  }
  const double kl_after = mean_kl();  // of the model as encoded
  report.details = {{"steps", o_.steps},
                    {"batch", B},
                    {"train_kld_before", kl_before},
                    {"train_kld_after", kl_after},
                    {"norms_trained", !norm_params.empty()},
                    {"skipped", skipped},
                    {"tensors", tensors}};
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace

std::unique_ptr<Pass> make_quant_qat_pass() { return std::make_unique<QuantQatPass>(); }

}  // namespace llmc
