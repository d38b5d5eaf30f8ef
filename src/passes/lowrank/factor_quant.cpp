// Quantizing the parts of LowRank/Tucker weights in place of the product (see factor_quant.h).
// Eigen's own OpenMP GEMM is off: results must not depend on the thread count.
#define EIGEN_DONT_PARALLELIZE
#include "passes/lowrank/factor_quant.h"

#include <Eigen/Dense>
#include <cmath>

#include "core/lowrank.h"
#include "passes/pass.h"

namespace llmc {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double relative_error(std::span<const float> w, const std::vector<float>& q) {
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    num += (static_cast<double>(w[i]) - q[i]) * (static_cast<double>(w[i]) - q[i]);
    den += static_cast<double>(w[i]) * w[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

// Input moments of z = V̂ x: Σ z zᵀ = V̂ (Σ x xᵀ) V̂ᵀ, Σ z_a² its diagonal.
PartInput projected_input(const std::vector<float>& v_hat, int64_t rank, int64_t cols, const PartInput& x) {
  PartInput z;
  z.tokens = x.tokens;
  if (x.xtx.empty()) return z;
  const RowMatrix v =
      Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v_hat.data(), rank, cols)
          .cast<double>();
  const RowMatrix h = v * Eigen::Map<const RowMatrix>(x.xtx.data(), cols, cols) * v.transpose();
  z.xtx.assign(h.data(), h.data() + rank * rank);
  z.sq_sum.resize(static_cast<size_t>(rank));
  for (int64_t a = 0; a < rank; ++a) z.sq_sum[a] = h(a, a);
  return z;
}

}  // namespace

Result<nlohmann::json> quantize_decomposition(Model& model, const std::string& name, const LinearInputStats* stats,
                                              const PartQuantizer& quantize) {
  const Tensor& t = model.get(name);
  std::vector<DecompositionPart> parts = decomposition_parts(*t.encoding, t.shape);
  if (parts.empty()) return make_error(ErrorCode::kInternal, "tensor '", name, "' is not a decomposition");
  const bool lowrank = std::holds_alternative<LowRankEncoding>(t.encoding->node);
  PartInput x;
  if (stats && lowrank) {
    x.xtx = stats->xtx;
    x.sq_sum = stats->sq_sum;
    x.tokens = stats->tokens;
  }
  // LowRank: V (index 1) first, so that U's input statistics can use the quantized V.
  std::vector<size_t> order(parts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (lowrank) order = {1, 0};
  std::vector<EncodingPtr> encodings(parts.size());
  nlohmann::json details = {{"decomposition", encoding_kind_name(*t.encoding)}, {"parts", nlohmann::json::object()}};
  const PartInput none;
  PartInput input_u;
  for (size_t i : order) {
    const DecompositionPart& p = parts[i];
    const std::vector<float> w = Tensor{"", p.shape, p.encoding}.to_f32();
    const PartInput& input = !lowrank ? none : i == 1 ? x : input_u;
    std::vector<float> dequant;
    auto q = quantize(w, p.shape.rows(), p.shape.cols(), input, dequant);
    if (!q.ok()) return with_context(q.error(), str_cat("tensor '", name, "' part ", p.role));
    auto enc = std::make_shared<const Encoding>(Encoding{std::move(q).value()});
    const size_t bytes = encoded_bytes(*enc);
    details["parts"][p.role] = {
        {"rel_err", relative_error(w, dequant)},
        {"bpw", p.shape.numel() ? 8.0 * static_cast<double>(bytes) / static_cast<double>(p.shape.numel()) : 0.0},
        {"weighted", !input.xtx.empty() || !input.sq_sum.empty()}};
    if (lowrank && i == 1) input_u = projected_input(dequant, p.shape.rows(), p.shape.cols(), x);
    encodings[i] = std::move(enc);
  }
  auto out = std::make_shared<const Encoding>(with_decomposition_parts(*t.encoding, encodings));
  details["bpw"] = t.numel() ? 8.0 * static_cast<double>(encoded_bytes(*out)) / static_cast<double>(t.numel()) : 0.0;
  replace_and_release(model, Tensor{t.name, t.shape, std::move(out)});
  return details;
}

}  // namespace llmc
