// quant.qat's block mode (docs/quant_qat.md, "Block mode"): the blocks are trained one at a time,
// in order, each as two units, its attention half and then its FFN half, each unit to reproduce
// the teacher's hidden states after it. Two residual streams go through the units together: the
// teacher's (the original model) and the student's (the units already trained and re-encoded). A
// unit's latent weights train on the student's inputs against the teacher's outputs of the same
// unit (squared error, each position's relative to the teacher's state there); then the unit is
// re-encoded (or keeps its input tensors when that does better on the calibration sequences), and
// the student's stream goes through it as stored. Only one unit's latents, Adam moments and
// gradient exist at a time (its fake-quantized weights are made on demand, FakeQuantRows), and the
// streams live in an ActivationStore (in memory when they fit in --calib-ram next to that state,
// else in a temporary file).
#include <map>

#include "core/log.h"
#include "formats/scratch_file.h"
#include "model/arch.h"
#include "passes/quant/quant_gptq.h"
#include "passes/quant/quant_qat_train.h"
#include "pipeline/activation_store.h"
#include "pipeline/calibration.h"
#include "train/llama_grad.h"

namespace llmc {
namespace {

// The two residual streams, [tokens, dim] per sequence.
struct Streams {
  std::unique_ptr<ActivationStore> teacher, student;
};

// The training state of the largest unit (latents, two Adam moments and the gradient of its
// trained tensors: 16 bytes per weight).
int64_t unit_state_bytes(const Model& model, const std::vector<std::string>& trained) {
  std::map<std::pair<int64_t, bool>, int64_t> weights;  // (block, attention half?) -> weights
  int64_t most = 0;
  for (const std::string& name : trained)
    if (const int64_t l = tensor_layer(name); l >= 0) {
      const Tensor& t = model.get(name);
      most = std::max(most, weights[{l, in_block_part(name, BlockPart::kAttention)}] += t.rows() * t.cols());
    }
  return 16 * most;
}

// The streams stay in memory when they fit in --calib-ram next to the training state (`state`
// bytes), else they go to a temporary file (reading a sequence back costs little next to its
// pass through a block).
Result<Streams> make_streams(const Model& model, const Model& teacher, const std::vector<std::vector<int32_t>>& seqs,
                             int64_t ram_bytes, int64_t state) {
  const int64_t d = model.config.dim;
  std::vector<int64_t> floats;
  int64_t total = 0;
  for (const auto& s : seqs) {
    floats.push_back(std::ssize(s) * d);
    total += floats.back();
  }
  const std::string dir = 2 * total * 4 + state > ram_bytes ? temp_dir() : "";
  if (!dir.empty())
    log_info("quant.qat: the hidden states (", static_cast<double>(2 * total * 4) / (1 << 20),
             " MiB) and the training state (", static_cast<double>(state) / (1 << 20), " MiB) exceed --calib-ram ",
             ram_bytes >> 20, " MiB: the hidden states go to a temporary file in ", dir);
  Streams st;
  LLMC_ASSIGN_OR_RETURN(st.teacher, ActivationStore::create(floats, dir));
  LLMC_ASSIGN_OR_RETURN(st.student, ActivationStore::create(floats, dir));
  const Tensor &te = teacher.get("token_embd.weight"), &se = model.get("token_embd.weight");
  std::vector<float> buf;
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int32_t id : seqs[i])
      if (id < 0 || id >= model.config.vocab_size)
        return make_error(ErrorCode::kInvalidArgument, "token id ", id, " is outside the vocabulary");
    for (auto [store, emb] : {std::pair{st.teacher.get(), &te}, std::pair{st.student.get(), &se}}) {
      float* x = store->slot(i, buf);
      for (size_t t = 0; t < seqs[i].size(); ++t) emb->rows_to_f32(seqs[i][t], seqs[i][t] + 1, x + t * d);
      LLMC_TRY(store->save(i, x));
      // The looked-up rows' mapped pages go back sequence by sequence: all sequences together touch
      // most of an embedding (SmolLM2's f16 one: 54 MiB).
      release_row_pages(*emb, 0, emb->rows());
    }
  }
  return st;
}

// Per position t of one sequence, w[t] = dim / Σ_i target[t, i]²: each position's squared error
// counts relative to the teacher's state there (a few positions, the first above all, carry
// states up to ~27,000 times larger in mean square than the median one in SmolLM2, and would
// otherwise be all the loss sees).
void position_weights(const float* target, int64_t n, int64_t d, std::vector<float>& w) {
  w.resize(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    double e = 0;
    for (int64_t i = 0; i < d; ++i) e += static_cast<double>(target[t * d + i]) * target[t * d + i];
    w[static_cast<size_t>(t)] = e > 0 ? static_cast<float>(static_cast<double>(d) / e) : 0.0f;
  }
}

// Σ over positions of w[t] Σ_i (y - target)²: the loss, times dim.
double weighted_error(const std::vector<float>& y, const float* target, const std::vector<float>& w, int64_t d) {
  double err = 0;
  for (size_t t = 0; t < w.size(); ++t) {
    double e = 0;
    for (int64_t i = 0; i < d; ++i) {
      const double diff = static_cast<double>(y[t * d + i]) - target[t * d + i];
      e += diff * diff;
    }
    err += w[t] * e;
  }
  return err;
}

// The tensors of block `layer`'s `part` decoded to f32; their mapped pages (file or scratch) are
// given back.
Result<LlamaParams> decode_part(const Model& model, int64_t layer, BlockPart part) {
  LLMC_ASSIGN_OR_RETURN(LlamaParams p, LlamaParams::block_of(model, layer, part));
  for (size_t i = 0; i < p.count(); ++i) {
    const Tensor& t = model.get(p.name(i));
    release_row_pages(t, 0, t.rows());
  }
  return p;
}

// What training one half-block (one unit) works with.
struct Unit {
  const Model& teacher;
  Model& model;
  const QatOptions& o;
  const std::vector<std::vector<int32_t>>& seqs;
  const std::vector<std::string>& trained;
  Streams& st;
  BlockGrad& grad_of;
  int64_t layer = 0;
  BlockPart part = BlockPart::kWhole;
};

// The unit's f32 values (the quantized ones made on demand from their latents, `sources`), its
// quantized tensors' latents and its norm gain.
struct UnitState {
  LlamaParams values;
  std::vector<QatTensor> quant;
  std::vector<FakeQuantRows> sources;  // of quant[k]
  std::vector<size_t> norms;
  std::vector<Adam> norm_adam;
};

// Trains one unit (docs/quant_qat.md, "Block mode"): the teacher's stream goes through the
// teacher's unit (the targets), the student's unit trains on the student's stream, is re-encoded
// (or keeps its input when that does better), and the student's stream goes through it as stored.
// Returns the unit's report entry; `tensors` gets the trained tensors' entries.
Result<nlohmann::json> train_unit(const Unit& u, nlohmann::json& tensors) {
  const int64_t n_seq = std::ssize(u.seqs), B = std::min(u.o.batch, n_seq), d = u.model.config.dim;
  std::vector<float> x, load_buf, target_buf, dy, weights;
  {
    LLMC_ASSIGN_OR_RETURN(const LlamaParams tp, decode_part(u.teacher, u.layer, u.part));
    for (int64_t i = 0; i < n_seq; ++i) {
      LLMC_ASSIGN_OR_RETURN(float* xi, u.st.teacher->load(static_cast<size_t>(i), target_buf));
      x.assign(xi, xi + u.st.teacher->floats(static_cast<size_t>(i)));
      u.grad_of.forward(tp, u.layer, x, std::ssize(u.seqs[i]), u.part);
      LLMC_TRY(u.st.teacher->save(static_cast<size_t>(i), x.data()));
    }
  }
  UnitState b;
  LLMC_ASSIGN_OR_RETURN(b.values, decode_part(u.model, u.layer, u.part));
  for (const std::string& name : u.trained)
    if (const int64_t param = b.values.index(name); param >= 0)
      b.quant.push_back(
          make_qat_tensor(u.model.get(name), b.values.values(static_cast<size_t>(param)), static_cast<size_t>(param)));
  for (QatTensor& t : b.quant) fake_quant(t, b.values.values(t.param).data());
  if (u.o.norms && !b.quant.empty())
    for (size_t i = 0; i < b.values.count(); ++i)
      if (tensor_role(b.values.name(i)) == TensorRole::kNorm) b.norms.push_back(i);
  b.norm_adam.resize(b.norms.size());
  for (size_t k = 0; k < b.norms.size(); ++k) b.norm_adam[k].resize(b.values.values(b.norms[k]).size());

  // Sequence si through the student's unit: its output in x, its position weights in `weights`;
  // returns the teacher's output (the target).
  auto forward_seq = [&](size_t si) -> Result<const float*> {
    LLMC_ASSIGN_OR_RETURN(const float* xi, u.st.student->load(si, load_buf));
    x.assign(xi, xi + u.st.student->floats(si));
    u.grad_of.forward(b.values, u.layer, x, std::ssize(u.seqs[si]), u.part);
    LLMC_ASSIGN_OR_RETURN(const float* target, u.st.teacher->load(si, target_buf));
    position_weights(target, std::ssize(u.seqs[si]), d, weights);
    return target;
  };
  // Mean over all positions of |student - teacher|² / |teacher|² after the unit; with `advance`
  // the unit's outputs replace its inputs in the student's stream.
  auto unit_error = [&](bool advance) -> Result<double> {
    double err = 0;
    int64_t positions = 0;
    for (int64_t i = 0; i < n_seq; ++i) {
      const size_t si = static_cast<size_t>(i);
      LLMC_ASSIGN_OR_RETURN(const float* target, forward_seq(si));
      err += weighted_error(x, target, weights, d) / static_cast<double>(d);
      positions += std::ssize(u.seqs[si]);
      if (advance) LLMC_TRY(u.st.student->save(si, x.data()));
    }
    return err / static_cast<double>(std::max<int64_t>(positions, 1));
  };
  nlohmann::json entry = nlohmann::json::object();
  if (!b.quant.empty()) {
    LLMC_ASSIGN_OR_RETURN(const double before, unit_error(false));
    entry["rel_error_before"] = before;
    // From here on the fake-quantized weights are made from the latents when a product needs them.
    b.sources.reserve(b.quant.size());
    for (const QatTensor& t : b.quant) b.values.set_source(t.param, &b.sources.emplace_back(t));
    LlamaParams grad = b.values.zeros_like();
    for (int64_t step = 1; step <= u.o.steps; ++step) {
      grad.fill_zero();
      const int64_t first = ((step - 1) * B) % n_seq;
      int64_t tokens = 0;
      for (int64_t k = 0; k < B; ++k) tokens += std::ssize(u.seqs[static_cast<size_t>((first + k) % n_seq)]);
      const float scale = 2.0f / static_cast<float>(tokens * d);  // of the mean weighted squared error
      for (int64_t k = 0; k < B; ++k) {
        LLMC_ASSIGN_OR_RETURN(const float* target, forward_seq(static_cast<size_t>((first + k) % n_seq)));
        dy.resize(x.size());
        for (size_t j = 0; j < x.size(); ++j) dy[j] = scale * weights[j / static_cast<size_t>(d)] * (x[j] - target[j]);
        u.grad_of.backward(b.values, dy, grad);
      }
      const double decay = cosine_decay(step, u.o.steps);
      for (QatTensor& t : b.quant) qat_update(t, grad.values(t.param), u.o, decay, step);
      for (size_t k = 0; k < b.norms.size(); ++k)
        norm_update(b.values.values(b.norms[k]), b.norm_adam[k], grad.values(b.norms[k]), u.o, decay, step);
    }
    std::vector<Tensor> inputs;  // the unit as it came, kept in case training made it worse
    for (QatTensor& t : b.quant) {
      inputs.push_back(u.model.get(t.name));
      store_trained(u.model, t, tensors);
      t = QatTensor{};  // its latents and moments are done with
    }
    for (size_t k : b.norms) {
      inputs.push_back(u.model.get(b.values.name(k)));
      store_norm(u.model, b.values.name(k), b.values.values(k));
    }
    LLMC_ASSIGN_OR_RETURN(b.values, decode_part(u.model, u.layer, u.part));  // the unit as stored
    // Re-encoded, the unit must do better on the calibration sequences than it did before
    // training; else it keeps its input tensors.
    LLMC_ASSIGN_OR_RETURN(const double trained_error, unit_error(false));
    if (trained_error > before) {
      entry["kept_input"] = true;
      entry["rel_error_trained"] = trained_error;
      for (Tensor& t : inputs) {
        if (tensors.contains(t.name)) tensors[t.name]["kept_input"] = true;
        u.model.replace(std::move(t));
      }
      LLMC_ASSIGN_OR_RETURN(b.values, decode_part(u.model, u.layer, u.part));
    }
  }
  LLMC_ASSIGN_OR_RETURN(const double after, unit_error(true));
  entry[b.quant.empty() ? "rel_error" : "rel_error_after"] = after;
  return entry;
}

}  // namespace

Result<nlohmann::json> qat_blocks(Model& model, const PassContext& ctx, const QatOptions& o,
                                  const std::vector<std::vector<int32_t>>& seqs,
                                  const std::vector<std::string>& trained) {
  const ModelConfig& cfg = model.config;
  LLMC_ASSIGN_OR_RETURN(Streams st, make_streams(model, *ctx.teacher, seqs, ctx.calib->options().ram_bytes,
                                                 unit_state_bytes(model, trained)));
  BlockGrad grad_of(cfg, resolve_threads(ctx.threads));
  nlohmann::json blocks = nlohmann::json::array(), tensors = nlohmann::json::object(),
                 outside = nlohmann::json::array();
  for (const std::string& name : trained)
    if (tensor_layer(name) < 0) outside.push_back(name);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    nlohmann::json entry = {{"block", l}};
    for (const auto& [part, key] : {std::pair{BlockPart::kAttention, "attention"}, std::pair{BlockPart::kFfn, "ffn"}}) {
      const Unit u{*ctx.teacher, model, o, seqs, trained, st, grad_of, l, part};
      LLMC_ASSIGN_OR_RETURN(entry[key], train_unit(u, tensors));
    }
    blocks.push_back(entry);
    report_progress("quant.qat", l + 1, cfg.n_layers, "blocks");
  }
  return nlohmann::json{{"steps_per_half_block", o.steps},
                        {"batch", std::min(o.batch, std::ssize(seqs))},
                        {"norms_trained", o.norms},
                        {"blocks", blocks},
                        {"tensors", tensors},
                        {"not_trained_outside_blocks", outside}};
}

}  // namespace llmc
