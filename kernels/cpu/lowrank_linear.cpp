// Linear kernels of LowRank and Tucker weights: chains of dispatched matmuls over their Dense/Quant parts.
#include "kernels/cpu/lowrank_linear.h"

#include <vector>

#include "core/lowrank.h"
#include "kernels/cpu/kernels.h"

namespace llmc::kernels {
namespace {

// A part of a decomposition as a weight the dispatch table can run.
Tensor part_tensor(const EncodingPtr& enc, Shape shape) { return Tensor{std::string(), std::move(shape), enc}; }

// One mode step over a [pre, in_dim, post] array: out[p, o, q] = Σ_i M[o, i] in[p, i, q] with the
// part M [out_dim, in_dim]. With post == 1 this is Y = X · Mᵀ over `pre` tokens: the part's own
// dispatched kernel; otherwise the part (small) is decoded and multiplied in f32.
void mode_step(const EncodingPtr& part, int64_t out_dim, int64_t in_dim, const float* in, int64_t pre, int64_t post,
               float* out) {
  const Tensor m = part_tensor(part, Shape{{out_dim, in_dim}});
  if (post == 1) {
    linear(m, in, pre, out);
    return;
  }
  const std::vector<float> values = m.to_f32();
  mode_product<float>(in, pre, in_dim, post, values.data(), out_dim, false, out);
}

}  // namespace

void lowrank_linear(const Tensor& w, const float* x, int64_t n, float* y) {
  const auto& lr = std::get<LowRankEncoding>(w.encoding->node);
  thread_local std::vector<float> z;
  z.resize(static_cast<size_t>(n * lr.rank));
  linear(part_tensor(lr.v, lowrank_v_shape(lr, w.shape)), x, n, z.data());
  linear(part_tensor(lr.u, lowrank_u_shape(lr, w.shape)), z.data(), n, y);
}

void tucker_linear(const Tensor& w, const float* x, int64_t n, float* y) {
  const auto& t = std::get<TuckerEncoding>(w.encoding->node);
  const size_t modes = t.dims.size(), j = static_cast<size_t>(t.row_modes);
  std::vector<float> cur(x, x + n * w.cols()), next;
  // Column modes, innermost first: [n, n_{j+1}.., n_k, r_{k+1}..] -> [.., r_k, ..].
  for (size_t k = modes; k-- > j;) {
    const int64_t pre = n * dims_product(t.dims, j, k), post = dims_product(t.ranks, k + 1, modes);
    next.resize(static_cast<size_t>(pre * t.ranks[k] * post));
    mode_step(t.factors[k], t.ranks[k], t.dims[k], cur.data(), pre, post, next.data());
    cur.swap(next);
  }
  // Core: [n, col rank] -> [n, row rank].
  const Shape core = tucker_core_shape(t);
  next.resize(static_cast<size_t>(n * core.rows()));
  linear(part_tensor(t.core, core), cur.data(), n, next.data());
  cur.swap(next);
  // Row modes, outermost first: [n, n_1.., r_k, r_{k+1}..] -> [.., n_k, ..]; the last writes y.
  for (size_t k = 0; k < j; ++k) {
    const int64_t pre = n * dims_product(t.dims, 0, k), post = dims_product(t.ranks, k + 1, j);
    float* out = y;
    if (k + 1 < j) {
      next.resize(static_cast<size_t>(pre * t.dims[k] * post));
      out = next.data();
    }
    mode_step(t.factors[k], t.dims[k], t.ranks[k], cur.data(), pre, post, out);
    if (k + 1 < j) cur.swap(next);
  }
}

}  // namespace llmc::kernels
