// quant.qat's training pieces shared by its two modes (docs/quant_qat.md): the options, Adam, a
// quantized tensor's latent weights and trainable group params, the fake quantization with its
// straight-through / LSQ backward, and the final re-encoding with the tensor's own spec.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/tensor.h"
#include "passes/pass.h"
#include "passes/quant/quant_math.h"
#include "train/llama_grad.h"

namespace llmc {

struct QatOptions {
  int64_t steps = 200;        // optimizer steps (block mode: per half-block)
  int64_t batch = 4;          // sequences per step
  double lr = 0.01;           // latent weights: Adam step as a fraction of the group's initial scale
  double lr_scales = 0.002;   // scales and mins: fraction of the group's initial scale
  bool norms = true;          // also train the RMSNorm gains
  double lr_norms = 0.001;    // norm gains: absolute Adam step
  double noise = 0.05;        // fraction of each training sequence's tokens replaced by random ids
  std::string mode = "auto";  // model | block | auto
};

// Adam moments of a parameter vector; `lr(i)` is entry i's step.
struct Adam {
  std::vector<float> m, v;
  void resize(size_t n);
  void step(float* x, const float* g, size_t n, const std::function<float(size_t)>& lr, int64_t t);
};

// One quantized tensor being trained.
struct QatTensor {
  std::string name;
  size_t param = 0;  // index in the LlamaParams holding its fake-quantized values
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

// A QatTensor for t (a Quant tensor) whose decoded values are `values`.
QatTensor make_qat_tensor(const Tensor& t, std::vector<float> values, size_t param);
// out = t's fake-quantized weights.
void fake_quant(const QatTensor& t, float* out);
// out [r1 - r0, cols] = rows [r0, r1) of them.
void fake_quant_rows(const QatTensor& t, int64_t r0, int64_t r1, float* out);
// out [c1 - c0, rows] = columns [c0, c1) of them, each as a row.
void fake_quant_cols(const QatTensor& t, int64_t c0, int64_t c1, float* out);

// t's fake-quantized weights made on demand from its current latents and params (block mode:
// they are not stored).
class FakeQuantRows : public RowSource {
 public:
  explicit FakeQuantRows(const QatTensor& t) : t_(&t) {}
  void rows(int64_t r0, int64_t r1, float* out) const override { fake_quant_rows(*t_, r0, r1, out); }
  void cols(int64_t c0, int64_t c1, float* out) const override { fake_quant_cols(*t_, c0, c1, out); }

 private:
  const QatTensor* t_;
};
// One Adam step of t's latent weights, scales and mins. g: dL/d(fake-quantized weights), already
// divided by the batch's token count; overwritten (it becomes dL/dw). decay: the cosine factor.
void qat_update(QatTensor& t, std::vector<float>& g, const QatOptions& o, double decay, int64_t step);
// One Adam step of a norm gain vector.
void norm_update(std::vector<float>& gain, Adam& adam, std::vector<float>& g, const QatOptions& o, double decay,
                 int64_t step);
// 0.5 (1 + cos(pi (step - 1) / steps)).
double cosine_decay(int64_t step, int64_t steps);
// Replaces t's tensor in `model` by its re-encoding (replace_and_release) and records its report
// entry (spec, fraction of codes changed) in tensors[t.name].
void store_trained(Model& model, const QatTensor& t, nlohmann::json& tensors);
// Replaces the norm gain `name` by `values`, in the tensor's own dtype.
void store_norm(Model& model, const std::string& name, const std::vector<float>& values);
// Calibration sequences with `noise` of their tokens (never the first) replaced by random ids.
std::vector<std::vector<int32_t>> noisy_sequences(std::vector<std::vector<int32_t>> seqs, double noise, uint64_t seed,
                                                  int64_t vocab);

// Block mode (docs/quant_qat.md): trains block by block to reproduce the teacher's hidden states;
// `trained` lists the quantized tensors to train (selected weight targets). Returns the report
// details specific to the mode.
Result<nlohmann::json> qat_blocks(Model& model, const PassContext& ctx, const QatOptions& o,
                                  const std::vector<std::vector<int32_t>>& seqs,
                                  const std::vector<std::string>& trained);

}  // namespace llmc
