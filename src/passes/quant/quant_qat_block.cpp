// quant.qat's block mode (docs/quant_qat.md, "Block mode"): the blocks are trained one at a time,
// in order, each to reproduce the teacher's hidden states. Two residual streams go through the
// blocks together: the teacher's (the original model, block by block) and the student's (the
// blocks already trained and re-encoded). Block l's latent weights train on the student's inputs
// against the teacher's outputs of block l (squared error, each position's relative to the
// teacher's state there);
// then the block is re-encoded (or keeps its input tensors when that does better on the
// calibration sequences), and the student's stream goes through it as stored. Only one
// block's f32 weights, latents, Adam moments and gradient exist at a time, and the streams live
// in an ActivationStore (in memory up to --calib-ram, else in a temporary file).
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

Result<Streams> make_streams(const Model& model, const Model& teacher, const std::vector<std::vector<int32_t>>& seqs,
                             int64_t ram_bytes) {
  const int64_t d = model.config.dim;
  std::vector<int64_t> floats;
  int64_t total = 0;
  for (const auto& s : seqs) {
    floats.push_back(std::ssize(s) * d);
    total += floats.back();
  }
  const std::string dir = 2 * total * 4 > ram_bytes ? temp_dir() : "";
  if (!dir.empty())
    log_info("quant.qat: ", static_cast<double>(2 * total * 4) / (1 << 20), " MiB of hidden states beyond --calib-ram ",
             ram_bytes >> 20, " MiB go to a temporary file in ", dir);
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
    }
  }
  release_row_pages(te, 0, te.rows());
  release_row_pages(se, 0, se.rows());
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

// Block `layer`'s tensors decoded to f32; their mapped pages (file or scratch) are given back.
Result<LlamaParams> decode_block(const Model& model, int64_t layer) {
  LLMC_ASSIGN_OR_RETURN(LlamaParams p, LlamaParams::block_of(model, layer));
  for (size_t i = 0; i < p.count(); ++i) {
    const Tensor& t = model.get(p.name(i));
    release_row_pages(t, 0, t.rows());
  }
  return p;
}

// One block being trained: its f32 values (the quantized ones fake-quantized), its quantized
// tensors' latents and its norm gains.
struct BlockState {
  LlamaParams values;
  std::vector<QatTensor> quant;
  std::vector<size_t> norms;
  std::vector<Adam> norm_adam;
};

}  // namespace

Result<nlohmann::json> qat_blocks(Model& model, const PassContext& ctx, const QatOptions& o,
                                  const std::vector<std::vector<int32_t>>& seqs,
                                  const std::vector<std::string>& trained) {
  const ModelConfig& cfg = model.config;
  const int threads = resolve_threads(ctx.threads);
  const int64_t n_seq = std::ssize(seqs), B = std::min(o.batch, n_seq), d = cfg.dim;
  LLMC_ASSIGN_OR_RETURN(Streams st, make_streams(model, *ctx.teacher, seqs, ctx.calib->options().ram_bytes));
  BlockGrad grad_of(cfg, threads);
  std::vector<float> x, load_buf, target_buf, dy, weights;
  nlohmann::json blocks = nlohmann::json::array(), tensors = nlohmann::json::object(),
                 outside = nlohmann::json::array();
  for (const std::string& name : trained)
    if (tensor_layer(name) < 0) outside.push_back(name);

  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    // The teacher's stream through its block l: the targets of the student's block l.
    {
      LLMC_ASSIGN_OR_RETURN(const LlamaParams tp, decode_block(*ctx.teacher, l));
      for (int64_t i = 0; i < n_seq; ++i) {
        LLMC_ASSIGN_OR_RETURN(float* xi, st.teacher->load(static_cast<size_t>(i), target_buf));
        x.assign(xi, xi + st.teacher->floats(static_cast<size_t>(i)));
        grad_of.forward(tp, l, x, std::ssize(seqs[i]));
        LLMC_TRY(st.teacher->save(static_cast<size_t>(i), x.data()));
      }
    }
    BlockState b;
    LLMC_ASSIGN_OR_RETURN(b.values, decode_block(model, l));
    for (const std::string& name : trained)
      if (tensor_layer(name) == l) {
        const size_t param = static_cast<size_t>(b.values.index(name));
        b.quant.push_back(make_qat_tensor(model.get(name), b.values.values(param), param));
      }
    if (o.norms && !b.quant.empty())
      for (size_t i = 0; i < b.values.count(); ++i)
        if (tensor_role(b.values.name(i)) == TensorRole::kNorm) b.norms.push_back(i);
    b.norm_adam.resize(b.norms.size());
    for (size_t k = 0; k < b.norms.size(); ++k) b.norm_adam[k].resize(b.values.values(b.norms[k]).size());
    for (QatTensor& t : b.quant) fake_quant(t, b.values.values(t.param).data());

    // Sequence si through the student's block l: its output in x, its position weights in
    // `weights`; returns the teacher's output (the target).
    auto forward_seq = [&](size_t si) -> Result<const float*> {
      LLMC_ASSIGN_OR_RETURN(const float* xi, st.student->load(si, load_buf));
      x.assign(xi, xi + st.student->floats(si));
      grad_of.forward(b.values, l, x, std::ssize(seqs[si]));
      LLMC_ASSIGN_OR_RETURN(const float* target, st.teacher->load(si, target_buf));
      position_weights(target, std::ssize(seqs[si]), d, weights);
      return target;
    };
    // Mean over all positions of |student - teacher|² / |teacher|² after block l; with `advance`
    // the block's outputs replace its inputs in the student's stream.
    auto block_error = [&](bool advance) -> Result<double> {
      double err = 0;
      int64_t positions = 0;
      for (int64_t i = 0; i < n_seq; ++i) {
        const size_t si = static_cast<size_t>(i);
        const int64_t n = std::ssize(seqs[si]);
        LLMC_ASSIGN_OR_RETURN(const float* target, forward_seq(si));
        err += weighted_error(x, target, weights, d) / static_cast<double>(d);
        positions += n;
        if (advance) LLMC_TRY(st.student->save(si, x.data()));
      }
      return err / static_cast<double>(std::max<int64_t>(positions, 1));
    };
    nlohmann::json entry = {{"block", l}};
    if (!b.quant.empty()) {
      LLMC_ASSIGN_OR_RETURN(const double before, block_error(false));
      entry["rel_error_before"] = before;
      LlamaParams grad = b.values.zeros_like();
      for (int64_t step = 1; step <= o.steps; ++step) {
        grad.fill_zero();
        const int64_t first = ((step - 1) * B) % n_seq;
        int64_t tokens = 0;
        for (int64_t k = 0; k < B; ++k) tokens += std::ssize(seqs[static_cast<size_t>((first + k) % n_seq)]);
        const float scale = 2.0f / static_cast<float>(tokens * d);  // of the mean weighted squared error
        for (int64_t k = 0; k < B; ++k) {
          LLMC_ASSIGN_OR_RETURN(const float* target, forward_seq(static_cast<size_t>((first + k) % n_seq)));
          dy.resize(x.size());
          for (size_t j = 0; j < x.size(); ++j)
            dy[j] = scale * weights[j / static_cast<size_t>(d)] * (x[j] - target[j]);
          grad_of.backward(b.values, dy, grad);
        }
        const double decay = cosine_decay(step, o.steps);
        for (QatTensor& t : b.quant) {
          qat_update(t, grad.values(t.param), o, decay, step);
          fake_quant(t, b.values.values(t.param).data());
        }
        for (size_t k = 0; k < b.norms.size(); ++k)
          norm_update(b.values.values(b.norms[k]), b.norm_adam[k], grad.values(b.norms[k]), o, decay, step);
      }
      std::vector<Tensor> inputs;  // the block as it came, kept in case training made it worse
      for (QatTensor& t : b.quant) {
        inputs.push_back(model.get(t.name));
        store_trained(model, t, tensors);
        t = QatTensor{};  // its latents and moments are done with
      }
      for (size_t k : b.norms) {
        inputs.push_back(model.get(b.values.name(k)));
        store_norm(model, b.values.name(k), b.values.values(k));
      }
      LLMC_ASSIGN_OR_RETURN(b.values, decode_block(model, l));  // the block as stored
      // Re-encoded, the block must do better on the calibration sequences than it did before
      // training; else it keeps its input tensors.
      LLMC_ASSIGN_OR_RETURN(const double trained_error, block_error(false));
      if (trained_error > before) {
        entry["kept_input"] = true;
        entry["rel_error_trained"] = trained_error;
        for (Tensor& t : inputs) {
          if (tensors.contains(t.name)) tensors[t.name]["kept_input"] = true;
          model.replace(std::move(t));
        }
        LLMC_ASSIGN_OR_RETURN(b.values, decode_block(model, l));
      }
    }
    LLMC_ASSIGN_OR_RETURN(const double after, block_error(true));
    entry[b.quant.empty() ? "rel_error" : "rel_error_after"] = after;
    blocks.push_back(entry);
    report_progress("quant.qat", l + 1, cfg.n_layers, "blocks");
  }
  return nlohmann::json{{"steps_per_block", o.steps}, {"batch", B},         {"norms_trained", o.norms},
                        {"blocks", blocks},           {"tensors", tensors}, {"not_trained_outside_blocks", outside}};
}

}  // namespace llmc
