// The LowRank and Tucker encodings: builders, hostile-input validation, reference decode and size accounting.
#include "core/lowrank.h"

#include <algorithm>
#include <cstring>

#include "core/tensor.h"

namespace llmc {
namespace {

std::vector<float> decode_all(const Encoding& enc, const Shape& shape) {
  std::vector<float> out(static_cast<size_t>(shape.numel()));
  decode_rows_to_f32(enc, shape, 0, shape.rows(), out.data());
  return out;
}

EncodingPtr dense_part(const std::vector<float>& values, const Shape& shape, DType dtype) {
  return make_dense("", shape, values, dtype).encoding;
}

Result<void> validate_part(const EncodingPtr& part, const Shape& shape, const std::string& role) {
  if (!part) return make_error(ErrorCode::kFormat, role, " is missing");
  if (!is_leaf_encoding(*part))
    return make_error(ErrorCode::kFormat, role, " must be a dense or quant node, not ", encoding_kind_name(*part));
  if (auto v = validate_encoding(*part, shape); !v.ok()) return with_context(v.error(), role);
  return {};
}

// Decoded Tucker factors (they are small: n_k x r_k each).
std::vector<std::vector<float>> decode_factors(const TuckerEncoding& t) {
  std::vector<std::vector<float>> f;
  for (size_t k = 0; k < t.factors.size(); ++k) f.push_back(decode_all(*t.factors[k], tucker_factor_shape(t, k)));
  return f;
}

// cur: [pre, r_{j+1}, …, r_K] -> out: [pre, n_{j+1} ⋯ n_K] by the column factors B_k (M = B_kᵀ).
void expand_columns(const TuckerEncoding& t, const std::vector<std::vector<float>>& f, std::vector<double> cur,
                    int64_t pre, float* out) {
  const size_t modes = t.dims.size(), j = static_cast<size_t>(t.row_modes);
  std::vector<double> next;
  int64_t done = pre;  // pre x already expanded column modes
  for (size_t k = j; k < modes; ++k) {
    const int64_t post = dims_product(t.ranks, k + 1, modes);
    next.resize(static_cast<size_t>(done * t.dims[k] * post));
    mode_product<double>(cur.data(), done, t.ranks[k], post, f[k].data(), t.dims[k], true, next.data());
    cur.swap(next);
    done *= t.dims[k];
  }
  std::copy(cur.begin(), cur.end(), out);
}

// Σ_a weight[a] · core[a, :] over core rows a (streamed, one decoded row at a time): [col rank].
// `weight` has one entry per core row; rows with weight 0 are skipped.
void weighted_core_rows(const TuckerEncoding& t, const std::vector<double>& weight, std::vector<double>& out) {
  const Shape cs = tucker_core_shape(t);
  const int64_t rc = cs.cols();
  std::vector<float> row(static_cast<size_t>(rc));
  std::fill(out.begin(), out.end(), 0.0);
  for (size_t a = 0; a < weight.size(); ++a) {
    if (weight[a] == 0.0) continue;
    decode_rows_to_f32(*t.core, cs, static_cast<int64_t>(a), static_cast<int64_t>(a) + 1, row.data());
    for (int64_t c = 0; c < rc; ++c) out[c] += weight[a] * row[c];
  }
}

}  // namespace

int64_t dims_product(const std::vector<int64_t>& v, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t k = begin; k < end; ++k) p *= v[k];
  return p;
}

bool is_leaf_encoding(const Encoding& enc) {
  return std::holds_alternative<DenseEncoding>(enc.node) || std::holds_alternative<QuantEncoding>(enc.node);
}

bool is_decomposition(const Encoding& enc) {
  return std::holds_alternative<LowRankEncoding>(enc.node) || std::holds_alternative<TuckerEncoding>(enc.node);
}

int64_t tucker_row_rank(const TuckerEncoding& t) {
  return dims_product(t.ranks, 0, static_cast<size_t>(std::clamp<int64_t>(t.row_modes, 0, t.ranks.size())));
}
int64_t tucker_col_rank(const TuckerEncoding& t) {
  return dims_product(t.ranks, static_cast<size_t>(std::clamp<int64_t>(t.row_modes, 0, t.ranks.size())),
                      t.ranks.size());
}

Shape tucker_factor_shape(const TuckerEncoding& t, size_t k) {
  if (static_cast<int64_t>(k) < t.row_modes) return Shape{{t.dims[k], t.ranks[k]}};
  return Shape{{t.ranks[k], t.dims[k]}};
}

std::string tucker_dims_name(const std::vector<int64_t>& dims, int64_t row_modes) {
  std::string s;
  for (size_t k = 0; k < dims.size(); ++k) {
    if (k > 0) s += static_cast<int64_t>(k) == row_modes ? "|" : "x";
    s += std::to_string(dims[k]);
  }
  return s;
}

std::vector<DecompositionPart> decomposition_parts(const Encoding& enc, const Shape& shape) {
  std::vector<DecompositionPart> parts;
  if (const auto* lr = std::get_if<LowRankEncoding>(&enc.node)) {
    parts.push_back({"u", lowrank_u_shape(*lr, shape), lr->u});
    parts.push_back({"v", lowrank_v_shape(*lr, shape), lr->v});
  } else if (const auto* t = std::get_if<TuckerEncoding>(&enc.node)) {
    parts.push_back({"core", tucker_core_shape(*t), t->core});
    for (size_t k = 0; k < t->factors.size(); ++k)
      parts.push_back({str_cat("factor", k), tucker_factor_shape(*t, k), t->factors[k]});
  }
  return parts;
}

Encoding with_decomposition_parts(const Encoding& enc, const std::vector<EncodingPtr>& parts) {
  Encoding out = enc;
  if (auto* lr = std::get_if<LowRankEncoding>(&out.node)) {
    LLMC_CHECK(parts.size() == 2, "LowRank has two parts");
    lr->u = parts[0];
    lr->v = parts[1];
  } else if (auto* t = std::get_if<TuckerEncoding>(&out.node)) {
    LLMC_CHECK(parts.size() == t->factors.size() + 1, "Tucker has core + K factors");
    t->core = parts[0];
    std::copy(parts.begin() + 1, parts.end(), t->factors.begin());
  }
  return out;
}

LowRankEncoding make_lowrank_dense(const std::vector<float>& u, const std::vector<float>& v, int64_t rows, int64_t rank,
                                   int64_t cols, DType dtype) {
  LowRankEncoding lr;
  lr.rank = rank;
  lr.u = dense_part(u, Shape{{rows, rank}}, dtype);
  lr.v = dense_part(v, Shape{{rank, cols}}, dtype);
  return lr;
}

TuckerEncoding make_tucker_dense(std::vector<int64_t> dims, int64_t row_modes, std::vector<int64_t> ranks,
                                 const std::vector<float>& core, const std::vector<std::vector<float>>& factors,
                                 DType dtype) {
  TuckerEncoding t;
  t.dims = std::move(dims);
  t.row_modes = row_modes;
  t.ranks = std::move(ranks);
  t.core = dense_part(core, tucker_core_shape(t), dtype);
  for (size_t k = 0; k < factors.size(); ++k)
    t.factors.push_back(dense_part(factors[k], tucker_factor_shape(t, k), dtype));
  return t;
}

// ---- LowRank ----

Result<void> check_lowrank_rank(int64_t rank, const Shape& shape) {
  const int64_t rows = shape.rows(), cols = shape.cols();
  // A rank above min(rows, cols) never helps; the bound also keeps the factor shapes small.
  if (rank < 1 || rank > std::min(rows, cols))
    return make_error(ErrorCode::kFormat, "low-rank rank ", rank, " outside 1..", std::min(rows, cols), " for shape ",
                      shape.str());
  return {};
}

Result<void> validate_lowrank(const LowRankEncoding& lr, const Shape& shape) {
  LLMC_TRY(check_lowrank_rank(lr.rank, shape));
  LLMC_TRY(validate_part(lr.u, lowrank_u_shape(lr, shape), "low-rank U"));
  LLMC_TRY(validate_part(lr.v, lowrank_v_shape(lr, shape), "low-rank V"));
  return {};
}

// out[i, :] = Σ_a U[i, a] V[a, :], summed in double over a in increasing order.
void decode_lowrank_rows(const LowRankEncoding& lr, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const int64_t cols = shape.cols(), rank = lr.rank;
  std::vector<float> u(static_cast<size_t>((r1 - r0) * rank));
  decode_rows_to_f32(*lr.u, lowrank_u_shape(lr, shape), r0, r1, u.data());
  const std::vector<float> v = decode_all(*lr.v, lowrank_v_shape(lr, shape));
  std::vector<double> acc(static_cast<size_t>(cols));
  for (int64_t i = 0; i < r1 - r0; ++i) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t a = 0; a < rank; ++a) {
      const double w = u[i * rank + a];
      const float* vr = v.data() + a * cols;
      for (int64_t c = 0; c < cols; ++c) acc[c] += w * vr[c];
    }
    for (int64_t c = 0; c < cols; ++c) out[i * cols + c] = static_cast<float>(acc[c]);
  }
}

namespace {

std::string describe_lowrank_parts(const LowRankEncoding& lr) {
  return str_cat("(U ", lr.u ? describe_encoding(*lr.u) : "?", ", V ", lr.v ? describe_encoding(*lr.v) : "?", ")");
}

std::string describe_tucker_parts(const TuckerEncoding& t) {
  std::string factors;
  for (size_t k = 0; k < t.factors.size(); ++k) {
    const std::string d = t.factors[k] ? describe_encoding(*t.factors[k]) : "?";
    if (factors.empty() || factors.find(d) == std::string::npos) factors += (factors.empty() ? "" : ", ") + d;
  }
  return str_cat("(core ", t.core ? describe_encoding(*t.core) : "?", ", factors ", factors, ")");
}

}  // namespace

std::string describe_lowrank(const LowRankEncoding& lr) {
  return str_cat("lowrank r", lr.rank, " ", describe_lowrank_parts(lr));
}

std::string describe_decomposition_group(const Encoding& enc) {
  if (const auto* lr = std::get_if<LowRankEncoding>(&enc.node)) return "lowrank " + describe_lowrank_parts(*lr);
  if (const auto* t = std::get_if<TuckerEncoding>(&enc.node)) return "tucker " + describe_tucker_parts(*t);
  return describe_encoding(enc);
}

size_t lowrank_bytes(const LowRankEncoding& lr) {
  return (lr.u ? encoded_bytes(*lr.u) : 0) + (lr.v ? encoded_bytes(*lr.v) : 0);
}

// ---- Tucker ----

Result<void> check_tucker_layout(const std::vector<int64_t>& dims, int64_t row_modes, const std::vector<int64_t>& ranks,
                                 size_t factors, const Shape& shape) {
  const size_t modes = dims.size();
  if (modes < 2 || modes > 8) return make_error(ErrorCode::kFormat, "tucker with ", modes, " modes (allowed 2..8)");
  if (ranks.size() != modes || factors != modes)
    return make_error(ErrorCode::kFormat, "tucker with ", modes, " modes has ", ranks.size(), " ranks and ", factors,
                      " factors");
  if (row_modes < 1 || row_modes >= static_cast<int64_t>(modes))
    return make_error(ErrorCode::kFormat, "tucker row_modes ", row_modes, " outside 1..", modes - 1);
  // Products are built step by step against rows/cols so that no hostile value overflows.
  int64_t prod[2] = {1, 1};
  const int64_t want[2] = {shape.rows(), shape.cols()};
  for (size_t k = 0; k < modes; ++k) {
    const int side = static_cast<int64_t>(k) < row_modes ? 0 : 1;
    if (dims[k] < 1 || dims[k] > want[side] || prod[side] > want[side] / dims[k])
      return make_error(ErrorCode::kFormat, "tucker dims ", tucker_dims_name(dims, row_modes), " do not fold shape ",
                        shape.str());
    prod[side] *= dims[k];
    // r_k <= n_k keeps the core no larger than the tensor.
    if (ranks[k] < 1 || ranks[k] > dims[k])
      return make_error(ErrorCode::kFormat, "tucker rank ", ranks[k], " of mode ", k, " outside 1..", dims[k]);
  }
  if (prod[0] != want[0] || prod[1] != want[1])
    return make_error(ErrorCode::kFormat, "tucker dims ", tucker_dims_name(dims, row_modes), " do not fold shape ",
                      shape.str());
  return {};
}

Result<void> validate_tucker(const TuckerEncoding& t, const Shape& shape) {
  LLMC_TRY(check_tucker_layout(t.dims, t.row_modes, t.ranks, t.factors.size(), shape));
  const size_t modes = t.dims.size();
  LLMC_TRY(validate_part(t.core, tucker_core_shape(t), "tucker core"));
  for (size_t k = 0; k < modes; ++k)
    LLMC_TRY(validate_part(t.factors[k], tucker_factor_shape(t, k), str_cat("tucker factor ", k)));
  return {};
}

// Two exact orders of the same sums (double accumulation, one rounding to f32 at the end):
//   row by row: u = A_1[i_1,:] ⊗ … ⊗ A_j[i_j,:], v = uᵀ G, then the column modes — cost R_row·R_col per row;
//   by slice of fixed i_1: H = A_1[i_1,:]ᵀ G, then the other row modes and the column modes for all
//   n_2 ⋯ n_j rows at once — cost R_row·R_col once plus expansions.
// Single rows (embedding lookups) go row by row; long ranges by slice. A row decoded alone and in a
// range may differ in the last bit.
void decode_tucker_rows(const TuckerEncoding& t, const Shape& shape, int64_t r0, int64_t r1, float* out) {
  const auto f = decode_factors(t);
  const size_t j = static_cast<size_t>(t.row_modes);
  const int64_t cols = shape.cols(), rc = tucker_col_rank(t), rr = tucker_row_rank(t);
  const int64_t slice_rows = shape.rows() / t.dims[0];  // n_2 ⋯ n_j
  const int64_t slice_rank = rr / t.ranks[0];           // r_2 ⋯ r_j
  std::vector<double> u, v(static_cast<size_t>(rc));
  const int64_t max_rank = *std::max_element(t.ranks.begin(), t.ranks.end());
  std::vector<float> slice, core_row;
  for (int64_t r = r0; r < r1;) {
    const int64_t i1 = r / slice_rows;
    const int64_t lo = r - i1 * slice_rows, hi = std::min(slice_rows, r1 - i1 * slice_rows);
    const bool by_slice = j >= 2 && (hi - lo) * rr > rr + slice_rows * max_rank;
    if (!by_slice) {
      // Row r alone.
      u.assign(1, 1.0);
      int64_t rest = r;
      std::vector<int64_t> idx(j);
      for (size_t k = j; k-- > 0;) {
        idx[k] = rest % t.dims[k];
        rest /= t.dims[k];
      }
      for (size_t k = 0; k < j; ++k) {
        std::vector<double> next(u.size() * static_cast<size_t>(t.ranks[k]));
        const float* a = f[k].data() + idx[k] * t.ranks[k];
        for (size_t p = 0; p < u.size(); ++p)
          for (int64_t b = 0; b < t.ranks[k]; ++b) next[p * t.ranks[k] + b] = u[p] * a[b];
        u.swap(next);
      }
      weighted_core_rows(t, u, v);
      expand_columns(t, f, v, 1, out + (r - r0) * cols);
      ++r;
      continue;
    }
    // Slice i1: H [r_2 ⋯ r_j, R_col] = Σ_a A_1[i1, a] G[(a, ·), :].
    std::vector<double> h(static_cast<size_t>(slice_rank * rc), 0.0);
    core_row.resize(static_cast<size_t>(rc));
    for (int64_t a = 0; a < t.ranks[0]; ++a) {
      const double w = f[0][i1 * t.ranks[0] + a];
      for (int64_t b = 0; b < slice_rank; ++b) {
        const int64_t g = a * slice_rank + b;
        decode_rows_to_f32(*t.core, tucker_core_shape(t), g, g + 1, core_row.data());
        for (int64_t c = 0; c < rc; ++c) h[b * rc + c] += w * core_row[c];
      }
    }
    // Row modes 2..j: [n_2.., r_k, .., R_col] -> [.., n_k, ..].
    int64_t done = 1;
    std::vector<double> next;
    for (size_t k = 1; k < j; ++k) {
      const int64_t post = dims_product(t.ranks, k + 1, j) * rc;
      next.resize(static_cast<size_t>(done * t.dims[k] * post));
      mode_product<double>(h.data(), done, t.ranks[k], post, f[k].data(), t.dims[k], false, next.data());
      h.swap(next);
      done *= t.dims[k];
    }
    slice.resize(static_cast<size_t>(slice_rows * cols));
    expand_columns(t, f, h, slice_rows, slice.data());
    std::copy(slice.begin() + lo * cols, slice.begin() + hi * cols, out + (r - r0) * cols);
    r += hi - lo;
  }
}

std::string describe_tucker(const TuckerEncoding& t) {
  return str_cat("tucker ", tucker_dims_name(t.dims, t.row_modes), " r", tucker_dims_name(t.ranks, t.row_modes), " ",
                 describe_tucker_parts(t));
}

size_t tucker_bytes(const TuckerEncoding& t) {
  size_t b = t.core ? encoded_bytes(*t.core) : 0;
  for (const auto& f : t.factors) b += f ? encoded_bytes(*f) : 0;
  return b;
}

}  // namespace llmc
