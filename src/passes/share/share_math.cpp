// Weighted 1-D k-means on sorted values (k-means++ seeding and Lloyd iterations in O(k log n) per
// step through prefix sums) and the fit of a weight matrix into a Palette encoding.
// Eigen's own OpenMP GEMM is off here (as in quant_gptq.cpp): its blocking depends on the thread
// count, and results must not.
#define EIGEN_DONT_PARALLELIZE
#include "passes/share/share_math.h"

#include "passes/pass.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/dtype.h"
#include "core/palette.h"

namespace llmc {
namespace {

// SplitMix64 (Steele, Lea, Flood 2014): a small generator whose output is the same on every
// platform and standard library (std's distributions are implementation-defined).
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  uint64_t state_;
};

float round_f16(double v) { return f16_to_f32(f32_to_f16(static_cast<float>(v))); }

// The distinct values of a group with their summed weights (zero-weight values dropped), ascending,
// and prefix sums of w, w·y and w·y² with y = x - shift (the weighted mean, against cancellation).
class Atoms {
 public:
  Atoms(std::span<const float> x, std::span<const float> w) {
    double total = 0;
    for (float v : w) total += v > 0 ? v : 0;
    const bool uniform = w.empty() || !(total > 0);
    std::vector<std::pair<float, float>> pairs;
    pairs.reserve(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const float wi = uniform ? 1.0f : w[i];
      if (wi > 0) pairs.emplace_back(x[i], wi);
    }
    // Lexicographic order is total, so the merged sums do not depend on the input order.
    std::sort(pairs.begin(), pairs.end());
    for (size_t i = 0; i < pairs.size();) {
      double sum = 0;
      size_t j = i;
      for (; j < pairs.size() && pairs[j].first == pairs[i].first; ++j) sum += pairs[j].second;
      x_.push_back(pairs[i].first);
      pw_.push_back(sum);  // the atom's weight until the prefix sums are formed below
      i = j;
    }
    pairs = {};
    double sw = 0, swx = 0;
    for (size_t i = 0; i < x_.size(); ++i) {
      sw += pw_[i];
      swx += pw_[i] * x_[i];
    }
    shift_ = sw > 0 ? swx / sw : 0;
    const size_t n = x_.size();
    p1_.assign(n + 1, 0);
    p2_.assign(n + 1, 0);
    pw_.insert(pw_.begin(), 0.0);
    double prefix = 0;
    for (size_t i = 0; i < n; ++i) {
      const double w = pw_[i + 1], y = x_[i] - shift_;
      prefix += w;
      pw_[i + 1] = prefix;
      p1_[i + 1] = p1_[i] + w * y;
      p2_[i + 1] = p2_[i] + w * y * y;
    }
  }

  int64_t size() const { return static_cast<int64_t>(x_.size()); }
  double value(int64_t i) const { return x_[i]; }
  double weight(int64_t i) const { return pw_[i + 1] - pw_[i]; }
  double total_weight() const { return pw_.back(); }
  // Σ w (x - c)² over atoms [a, b).
  double cost(int64_t a, int64_t b, double c) const {
    const double y = c - shift_;
    const double v = (p2_[b] - p2_[a]) - 2 * y * (p1_[b] - p1_[a]) + y * y * (pw_[b] - pw_[a]);
    return v > 0 ? v : 0;
  }
  bool empty_range(int64_t a, int64_t b) const { return !(pw_[b] - pw_[a] > 0); }
  double mean(int64_t a, int64_t b) const { return (p1_[b] - p1_[a]) / (pw_[b] - pw_[a]) + shift_; }
  // First atom with value > v.
  int64_t upper(double v) const {
    return std::upper_bound(x_.begin(), x_.end(), v, [](double a, float b) { return a < b; }) - x_.begin();
  }
  // First atom whose weight prefix exceeds u (u in [0, total)).
  int64_t by_weight(double u) const {
    const auto it = std::upper_bound(pw_.begin() + 1, pw_.end(), u);
    return std::min<int64_t>(it - (pw_.begin() + 1), size() - 1);
  }
  // The split points between sorted centroids: atoms [s[j-1], s[j]) are nearest to centroid j
  // (s[-1] = 0, s[m-1] = size); an atom at a midpoint goes to the lower centroid.
  void splits(const std::vector<double>& c, std::vector<int64_t>& s) const {
    s.resize(c.size());
    for (size_t j = 0; j + 1 < c.size(); ++j) s[j] = upper(0.5 * (c[j] + c[j + 1]));
    if (!c.empty()) s.back() = size();
  }
  double error(const std::vector<double>& c) const {
    std::vector<int64_t> s;
    splits(c, s);
    double e = 0;
    for (size_t j = 0; j < c.size(); ++j) e += cost(j == 0 ? 0 : s[j - 1], s[j], c[j]);
    return e;
  }

 private:
  std::vector<float> x_;
  std::vector<double> pw_, p1_, p2_;  // [n + 1] prefix sums of w, w·y, w·y²
  double shift_ = 0;
};

// k-means++ (Arthur & Vassilvitskii 2007), weighted: each next centroid is an atom drawn with
// probability ∝ w·D², D the distance to the nearest chosen one. In 1-D the atoms nearest to one
// centroid form a contiguous range whose D² mass comes from the prefix sums, so a draw costs
// O(m + log n) for m chosen centroids. Returns at most k values (fewer when fewer atoms carry mass).
std::vector<double> seed_plus_plus(const Atoms& atoms, int64_t k, SplitMix64& rng) {
  std::vector<int64_t> chosen = {atoms.by_weight(rng.uniform() * atoms.total_weight())};
  std::vector<double> c, mass;
  std::vector<int64_t> s;
  while (static_cast<int64_t>(chosen.size()) < k) {
    c.clear();
    for (int64_t i : chosen) c.push_back(atoms.value(i));
    atoms.splits(c, s);
    mass.resize(c.size());
    double total = 0;
    for (size_t j = 0; j < c.size(); ++j) total += mass[j] = atoms.cost(j == 0 ? 0 : s[j - 1], s[j], c[j]);
    if (!(total > 0)) break;
    double u = rng.uniform() * total;
    size_t j = 0;
    while (j + 1 < c.size() && u >= mass[j]) u -= mass[j++];
    const int64_t a = j == 0 ? 0 : s[j - 1], b = s[j];
    // Smallest i in [a, b) whose cumulative mass from a exceeds u (monotone in i).
    int64_t lo = a, hi = b - 1;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (atoms.cost(a, mid + 1, c[j]) > u)
        hi = mid;
      else
        lo = mid + 1;
    }
    if (std::binary_search(chosen.begin(), chosen.end(), lo)) {
      // Rounding put the draw on a chosen atom (zero mass): take the range's heaviest atom instead.
      double best = 0;
      lo = -1;
      for (int64_t i = a; i < b; ++i) {
        const double d = atoms.value(i) - c[j], m = atoms.weight(i) * d * d;
        if (m > best) best = m, lo = i;
      }
      if (lo < 0) break;
    }
    chosen.insert(std::lower_bound(chosen.begin(), chosen.end(), lo), lo);
  }
  c.clear();
  for (int64_t i : chosen) c.push_back(atoms.value(i));
  return c;
}

// Lloyd iterations on sorted centroids c (they stay sorted: each cluster is a contiguous range);
// a centroid whose range is empty keeps its place. Returns the iterations run.
int64_t lloyd(const Atoms& atoms, std::vector<double>& c, int64_t iterations) {
  std::vector<int64_t> s, previous;
  int64_t it = 0;
  for (; it < iterations; ++it) {
    atoms.splits(c, s);
    if (s == previous) break;
    for (size_t j = 0; j < c.size(); ++j) {
      const int64_t a = j == 0 ? 0 : s[j - 1];
      if (!atoms.empty_range(a, s[j])) c[j] = atoms.mean(a, s[j]);
    }
    std::sort(c.begin(), c.end());  // means of ordered ranges are ordered; this only guards rounding
    previous.swap(s);
  }
  return it;
}

uint64_t mix_seed(uint64_t seed, uint64_t salt) { return SplitMix64(seed ^ (salt * 0x9E3779B97F4A7C15ull)).next(); }

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int64_t kGptqRowTile = 16;  // rows per parallel tile (fixed: results do not depend on threads)
constexpr int64_t kGptqBlock = 128;   // columns per lazy-batch update

// GPTQ's column sweep (Frantar et al. 2022) with the codebooks as the grid: column by column every
// weight goes to its nearest codebook entry and the error, scaled by the inverse Hessian's upper
// Cholesky factor U, updates the columns not assigned yet (in-block at once, the rest per block of
// kGptqBlock columns). An outlier keeps its current value exactly (its f16 residual absorbs the
// difference). Fills index[e] and, at outliers, residual[e].
void gptq_assign(std::span<const float> w, int64_t rows, int64_t cols, const GptqHessian& h,
                 const std::vector<float>& codebooks, int64_t k, int64_t group_rows,
                 const std::vector<uint8_t>& outlier, int threads, std::vector<uint8_t>& index,
                 std::vector<float>& residual) {
  Eigen::Map<const RowMatrix> u(h.hinv_u.data(), cols, cols);
  const int64_t tiles = (rows + kGptqRowTile - 1) / kGptqRowTile;
#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(threads))
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t r0 = t * kGptqRowTile, tr = std::min(kGptqRowTile, rows - r0);
    RowMatrix wt(tr, cols);
    for (int64_t r = 0; r < tr; ++r)
      for (int64_t c = 0; c < cols; ++c) wt(r, c) = w[(r0 + r) * cols + c];
    RowMatrix err(tr, std::min(kGptqBlock, cols));
    for (int64_t i1 = 0; i1 < cols; i1 += kGptqBlock) {
      const int64_t i2 = std::min(i1 + kGptqBlock, cols);
      for (int64_t j = i1; j < i2; ++j) {
        const double d = u(j, j);
        for (int64_t r = 0; r < tr; ++r) {
          const int64_t row = r0 + r, e = row * cols + j;
          const std::span<const float> cb(codebooks.data() + (row / group_rows) * k, static_cast<size_t>(k));
          const double x = wt(r, j);
          const uint32_t q = nearest_centroid(cb, static_cast<float>(x));
          float value = cb[q];
          if (outlier[e]) {
            residual[e] = round_f16(x - cb[q]);
            value = cb[q] + residual[e];  // as decode adds them
          }
          index[e] = static_cast<uint8_t>(q);
          const double e_scaled = (x - value) / d;
          err(r, j - i1) = e_scaled;
          for (int64_t c = j + 1; c < i2; ++c) wt(r, c) -= e_scaled * u(j, c);
        }
      }
      if (i2 < cols) wt.rightCols(cols - i2).noalias() -= err.leftCols(i2 - i1) * u.block(i1, i2, i2 - i1, cols - i2);
    }
  }
}

// Least-squares codebooks given the indices: for each codebook group, the entries C minimizing
// Σ_rows (w_r - A_r C - o_r)ᵀ H (w_r - A_r C - o_r) (A_r: the row's one-hot assignment, o_r: its
// outlier values, H the layer input's Hessian) — GPTVQ's codebook update. Entries no weight uses keep
// their value. Outlier residuals are recomputed so that outliers keep their values.
void refit_codebooks(std::span<const float> w, int64_t rows, int64_t cols, const GptqHessian& h,
                     std::vector<float>& codebooks, int64_t k, int64_t group_rows, const std::vector<uint8_t>& outlier,
                     std::vector<uint8_t>& index, std::vector<float>& residual, bool int_grid, int threads) {
  Eigen::Map<const RowMatrix> u(h.hinv_u.data(), cols, cols);
  const RowMatrix uinv = u.triangularView<Eigen::Upper>().solve(RowMatrix::Identity(cols, cols));
  const RowMatrix hm = uinv * uinv.transpose();
  const int64_t groups = (rows + group_rows - 1) / group_rows;
#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(threads))
  for (int64_t g = 0; g < groups; ++g) {
    float* cb = codebooks.data() + g * k;
    Eigen::MatrixXd m = Eigen::MatrixXd::Zero(k, k);
    Eigen::VectorXd b = Eigen::VectorXd::Zero(k);
    Eigen::VectorXd target(cols);
    Eigen::MatrixXd ha(cols, k);
    std::vector<float> old(cb, cb + k);
    for (int64_t r = g * group_rows; r < std::min(rows, (g + 1) * group_rows); ++r) {
      ha.setZero();
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t e = r * cols + c;
        target[c] = w[e] - (outlier[e] ? old[index[e]] + residual[e] : 0.0);
        if (!outlier[e]) ha.col(index[e]) += hm.row(c).transpose();
      }
      const Eigen::VectorXd ht = hm * target;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t e = r * cols + c;
        if (outlier[e]) continue;
        m.row(index[e]) += ha.row(c);
        b[index[e]] += ht[c];
      }
    }
    for (int64_t i = 0; i < k; ++i)
      if (!(m(i, i) > 0)) {
        m.row(i).setZero();
        m.col(i).setZero();
        m(i, i) = 1;
        b[i] = old[i];
      }
    const Eigen::VectorXd c = m.ldlt().solve(b);
    if (!c.allFinite()) continue;
    // New entries, sorted (indices remapped), f16; outliers keep their values.
    std::vector<int64_t> order(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t bb) { return c[a] < c[bb]; });
    std::vector<uint8_t> remap(static_cast<size_t>(k));
    std::vector<double> sorted(static_cast<size_t>(k));
    for (int64_t i = 0; i < k; ++i) {
      sorted[i] = c[order[i]];
      remap[order[i]] = static_cast<uint8_t>(i);
    }
    if (int_grid) palette_snap_to_grid(sorted);  // order kept; falls back to f16 when no grid holds them
    for (int64_t i = 0; i < k; ++i) cb[i] = round_f16(sorted[i]);
    for (int64_t r = g * group_rows; r < std::min(rows, (g + 1) * group_rows); ++r)
      for (int64_t col = 0; col < cols; ++col) {
        const int64_t e = r * cols + col;
        const float value = old[index[e]] + residual[e];
        index[e] = remap[index[e]];
        if (outlier[e]) residual[e] = round_f16(static_cast<double>(value) - cb[index[e]]);
      }
  }
}

}  // namespace

KmeansResult weighted_kmeans_1d(std::span<const float> x, std::span<const float> w, const KmeansOptions& options) {
  LLMC_CHECK(options.k >= 1 && (w.empty() || w.size() == x.size()));
  KmeansResult best;
  const Atoms atoms(x, w);
  if (atoms.size() == 0) {
    best.centroids.assign(static_cast<size_t>(options.k), 0.0f);
    return best;
  }
  SplitMix64 rng(options.seed);
  const int64_t inits = std::max<int64_t>(1, options.inits);
  bool have = false;
  for (int64_t i = 0; i < inits; ++i) {
    std::vector<double> c = seed_plus_plus(atoms, options.k, rng);
    const int64_t iterations = lloyd(atoms, c, options.iterations);
    // The stored codebook is f16 (on the integer grid when asked; f16 when no grid holds the values):
    // keep the seeding whose rounded centroids fit best.
    if (!options.int_grid || !palette_snap_to_grid(c))
      for (double& v : c) v = round_f16(v);
    const double error = atoms.error(c);
    if (!have || error < best.error) {
      have = true;
      best.error = error;
      best.iterations = iterations;
      best.centroids.assign(c.begin(), c.end());
    }
    if (static_cast<int64_t>(c.size()) < options.k) break;  // every atom is a centroid: nothing to improve
  }
  // Fewer atoms than k: the spare entries repeat the largest centroid (never the nearest of a tie).
  best.centroids.resize(static_cast<size_t>(options.k), best.centroids.back());
  return best;
}

uint32_t nearest_centroid(std::span<const float> centroids, float v) {
  const auto first = [&](size_t j) {  // the lowest index holding centroids[j] (duplicates)
    return static_cast<uint32_t>(std::lower_bound(centroids.begin(), centroids.end(), centroids[j]) -
                                 centroids.begin());
  };
  const size_t j = std::lower_bound(centroids.begin(), centroids.end(), v) - centroids.begin();
  if (j == 0) return 0;
  if (j == centroids.size()) return first(j - 1);
  const double below = static_cast<double>(v) - centroids[j - 1], above = static_cast<double>(centroids[j]) - v;
  return above < below ? static_cast<uint32_t>(j) : first(j - 1);
}

Result<void> validate_palette_spec(const PaletteSpec& spec) {
  if (spec.bits < 1 || spec.bits > 8)
    return make_error(ErrorCode::kInvalidArgument, "bits must be 1..8 (codebooks of 2..256 entries), not ", spec.bits);
  if (spec.group_rows < 0)
    return make_error(ErrorCode::kInvalidArgument, "rows per codebook must be >= 0, not ", spec.group_rows);
  if (!(spec.outliers >= 0 && spec.outliers < 1))
    return make_error(ErrorCode::kInvalidArgument, "outliers must be a fraction in [0, 1), not ", spec.outliers);
  if (spec.iterations < 1 || spec.iterations > 100000)
    return make_error(ErrorCode::kInvalidArgument, "iterations must be 1..100000, not ", spec.iterations);
  if (spec.inits < 1 || spec.inits > 1000)
    return make_error(ErrorCode::kInvalidArgument, "inits must be 1..1000, not ", spec.inits);
  return {};
}

std::string describe_palette_spec(const PaletteSpec& spec) {
  PaletteEncoding p;
  p.group_rows = spec.group_rows;
  std::string out = str_cat("p", spec.bits, " ", palette_granularity_name(p));
  if (spec.outliers > 0) out += str_cat(" +", spec.outliers * 100, "% outliers");
  if (spec.int_grid) out += " int grid";
  return out;
}

Result<int64_t> parse_palette_granularity(const std::string& text) {
  if (text == "tensor") return int64_t{0};
  if (text == "row") return int64_t{1};
  if (text.rfind("rows:", 0) == 0 && text.size() > 5 && text.size() <= 5 + 12) {
    int64_t n = 0;
    for (size_t i = 5; i < text.size(); ++i) {
      if (text[i] < '0' || text[i] > '9') n = -1;
      if (n >= 0) n = n * 10 + (text[i] - '0');
    }
    if (n >= 1) return n;
  }
  return make_error(ErrorCode::kInvalidArgument, "granularity '", text,
                    "' is not tensor, row or rows:N (N >= 1 rows per codebook)");
}

Result<PaletteFit> fit_palette(std::span<const float> w_in, int64_t rows, int64_t cols,
                               std::span<const float> col_weight, std::span<const int32_t> columns,
                               const PaletteSpec& spec, uint64_t seed, int threads, const GptqHessian* hessian) {
  LLMC_TRY(validate_palette_spec(spec));
  const int64_t numel = rows * cols;
  LLMC_CHECK(static_cast<int64_t>(w_in.size()) == numel && (columns.empty() || columns.size() == w_in.size()));
  for (int64_t e = 0; e < numel; ++e)
    if (!std::isfinite(w_in[e]))
      return make_error(ErrorCode::kInvalidArgument, "weight at row ", e / cols, ", column ", e % cols, " is ", w_in[e],
                        ": cannot be clustered");
  if (hessian && !columns.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "GPTQ error compensation does not apply to the values of a "
                      "Sparse tensor");
  std::span<const float> w = w_in;
  std::vector<float> zeroed;
  if (hessian) {  // as GPTQ: inputs that never fire get zero weights (their error cannot matter)
    LLMC_CHECK(hessian->cols == cols && hessian->hinv_u.size() == static_cast<size_t>(cols * cols));
    for (int64_t c = 0; c < cols; ++c) LLMC_CHECK(hessian->perm[c] == c, "palette GPTQ needs the natural column order");
    zeroed.assign(w_in.begin(), w_in.end());
    for (int64_t e = 0; e < numel; ++e)
      if (hessian->dead[e % cols]) zeroed[e] = 0;
    w = zeroed;
  }
  if (spec.outliers > 0 && static_cast<uint64_t>(numel) > UINT32_MAX)
    return make_error(ErrorCode::kInvalidArgument, "outliers need a tensor of fewer than 2^32 elements, this one has ",
                      numel);
  const int64_t k = palette_entries(spec.bits);
  const int64_t group_rows = spec.group_rows == 0 ? std::max<int64_t>(rows, 1) : spec.group_rows;
  const int64_t groups = palette_codebook_count(spec.group_rows, rows);
  auto column_of = [&](int64_t e) -> int64_t { return columns.empty() ? e % cols : columns[e]; };
  auto sensitivity = [&](int64_t e) -> float { return col_weight.empty() ? 1.0f : col_weight[column_of(e)]; };

  std::vector<float> codebooks(static_cast<size_t>(groups * k));
  std::vector<uint8_t> index(static_cast<size_t>(numel));
  std::vector<std::vector<uint64_t>> out_pos(static_cast<size_t>(groups));
  std::vector<std::vector<float>> out_val(static_cast<size_t>(groups));
  std::vector<char> bad(static_cast<size_t>(groups), 0);
  std::vector<uint8_t> outlier_flag(hessian ? static_cast<size_t>(numel) : 0);

#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(threads))
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t e0 = std::min(numel, g * group_rows * cols), e1 = std::min(numel, (g + 1) * group_rows * cols);
    int64_t n_valid = 0;
    for (int64_t e = e0; e < e1; ++e) n_valid += column_of(e) >= 0;
    // Outliers: the largest |w| (ties: the lower position), then back in position order.
    const auto n_out = static_cast<int64_t>(std::llround(spec.outliers * static_cast<double>(n_valid)));
    std::vector<int64_t> outliers;
    if (n_out > 0) {
      for (int64_t e = e0; e < e1; ++e)
        if (column_of(e) >= 0) outliers.push_back(e);
      auto larger = [&](int64_t a, int64_t b) {
        const float fa = std::fabs(w[a]), fb = std::fabs(w[b]);
        return fa != fb ? fa > fb : a < b;
      };
      std::nth_element(outliers.begin(), outliers.begin() + (n_out - 1), outliers.end(), larger);
      outliers.resize(static_cast<size_t>(n_out));
      outliers.shrink_to_fit();
      std::sort(outliers.begin(), outliers.end());
    }
    std::vector<float> xs, ws;
    xs.reserve(static_cast<size_t>(n_valid - n_out));
    ws.reserve(static_cast<size_t>(n_valid - n_out));
    auto next_outlier = outliers.begin();
    for (int64_t e = e0; e < e1; ++e) {
      if (column_of(e) < 0) continue;
      if (next_outlier != outliers.end() && *next_outlier == e) {
        ++next_outlier;
        continue;
      }
      xs.push_back(w[e]);
      ws.push_back(sensitivity(e));
    }
    KmeansOptions o;
    o.k = k;
    o.iterations = spec.iterations;
    o.inits = spec.inits;
    o.int_grid = spec.int_grid;
    o.seed = mix_seed(seed, static_cast<uint64_t>(g));
    const KmeansResult km = weighted_kmeans_1d(xs, ws, o);
    std::copy(km.centroids.begin(), km.centroids.end(), codebooks.begin() + g * k);
    if (hessian) {  // assigned by the sweep below
      for (int64_t e : outliers) outlier_flag[e] = 1;
      continue;
    }
    for (int64_t e = e0; e < e1; ++e) index[e] = static_cast<uint8_t>(nearest_centroid(km.centroids, w[e]));
    for (int64_t e : outliers) {
      const float residual = round_f16(static_cast<double>(w[e]) - km.centroids[index[e]]);
      if (!std::isfinite(residual)) bad[g] = 1;
      out_pos[g].push_back(static_cast<uint64_t>(e));
      out_val[g].push_back(residual);
    }
  }
  for (int64_t g = 0; g < groups; ++g)
    if (bad[g])
      return make_error(ErrorCode::kInvalidArgument, "an outlier of codebook group ", g, " exceeds f16 range");

  std::vector<uint64_t> positions;
  std::vector<float> values;
  if (hessian) {
    std::vector<float> residual(static_cast<size_t>(numel));
    gptq_assign(w, rows, cols, *hessian, codebooks, k, group_rows, outlier_flag, threads, index, residual);
    refit_codebooks(w, rows, cols, *hessian, codebooks, k, group_rows, outlier_flag, index, residual, spec.int_grid,
                    threads);
    for (int64_t e = 0; e < numel; ++e)
      if (outlier_flag[e]) {
        if (!std::isfinite(residual[e]))
          return make_error(ErrorCode::kInvalidArgument, "an outlier at row ", e / cols, " exceeds f16 range");
        positions.push_back(static_cast<uint64_t>(e));
        values.push_back(residual[e]);
      }
  }
  for (int64_t g = 0; g < groups; ++g) {
    positions.insert(positions.end(), out_pos[g].begin(), out_pos[g].end());
    values.insert(values.end(), out_val[g].begin(), out_val[g].end());
  }
  PaletteFit fit;
  fit.encoding = make_palette(spec.bits, spec.group_rows, codebooks, index, rows, cols);
  if (!positions.empty()) {
    LLMC_ASSIGN_OR_RETURN(fit.encoding.outliers, make_palette_outliers(positions, values, numel, DType::kF16));
  }
  fit.outliers = static_cast<int64_t>(positions.size());
  fit.dequant.resize(static_cast<size_t>(numel));
  if (numel > 0) decode_palette_rows(fit.encoding, Shape{{rows, cols}}, 0, rows, fit.dequant.data());
  for (int64_t e = 0; e < numel; ++e)
    if (column_of(e) >= 0) {
      const double d = static_cast<double>(w[e]) - fit.dequant[e];
      fit.weighted_error += sensitivity(e) * d * d;
    }
  return fit;
}

}  // namespace llmc
