// Sparse linear kernels (bitmask, CSR, n:m; f32/f16/bf16 and Quant values) against matmul_ref on every SIMD target.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <random>

#include "core/sparse.h"
#include "formats/model_io.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cpu/sparse_index.h"
#include "kernels/cpu/sparse_linear.h"
#include "model/arch.h"
#include "passes/quant/quant_math.h"
#include "runtime/runtime.h"
#include "test_util.h"

using namespace llmc;

namespace {

std::vector<float> normal_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// keep: unstructured with density `density`, or n:m with a random choice per group.
std::vector<uint8_t> random_keep(int64_t rows, int64_t cols, double density, int n, int m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  if (n == 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (auto& k : keep) k = u(rng) < density;
    return keep;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g0 = 0; g0 < cols; g0 += m) {
      const int64_t width = std::min<int64_t>(m, cols - g0);
      std::vector<int64_t> cols_in(static_cast<size_t>(width));
      for (int64_t j = 0; j < width; ++j) cols_in[j] = j;
      std::shuffle(cols_in.begin(), cols_in.end(), rng);
      for (int64_t j = 0; j < std::min<int64_t>(n, width); ++j) keep[r * cols + g0 + cols_in[j]] = 1;
    }
  return keep;
}

// How the kept values are stored: a Dense dtype, or a Quant spec (RTN of the kept values).
struct Values {
  const char* name;
  DType dtype = DType::kF32;
  bool quant = false;
  QuantSpec spec{};
};

QuantSpec quant_spec(int bits, QuantScheme scheme, int64_t group, DType scale_dtype = DType::kF16) {
  QuantSpec s;
  s.bits = bits;
  s.scheme = scheme;
  s.group_size = group;
  s.scale_dtype = scale_dtype;
  return s;
}

const Values kValues[] = {
    {"f32", DType::kF32},
    {"f16", DType::kF16},
    {"bf16", DType::kBF16},
    // 4/8-bit with groups of whole windows: the SIMD dequantizer
    {"q4 asym g32", DType::kF32, true, quant_spec(4, QuantScheme::kAsymmetric, 32)},
    {"q4 sym g16 f32 scales", DType::kF32, true, quant_spec(4, QuantScheme::kSymmetric, 16, DType::kF32)},
    {"q8 sym row", DType::kF32, true, quant_spec(8, QuantScheme::kSymmetric, 0)},
    // the reference decoder: groups that split windows, other widths
    {"q4 asym g12", DType::kF32, true, quant_spec(4, QuantScheme::kAsymmetric, 12)},
    {"q3 sym g32", DType::kF32, true, quant_spec(3, QuantScheme::kSymmetric, 32)},
};

Tensor sparse_tensor(int64_t rows, int64_t cols, const std::vector<uint8_t>& keep, int n, int m, const Values& values,
                     uint32_t seed) {
  const auto w = normal_values(static_cast<size_t>(rows * cols), seed);
  std::vector<float> kept;
  SparseEncoding s;
  if (n == 0) {
    s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
  } else {
    auto r = sparse_nm_pattern(keep.data(), w.data(), rows, cols, n, m, kept);
    REQUIRE(r.ok());
    s = *r;
  }
  if (values.quant)
    s.values = std::make_shared<Encoding>(
        Encoding{quantize_rtn(values.spec, kept, rows, s.kept_stride, {}, ScaleSearch{}, nullptr)});
  else
    sparse_set_dense_values(s, kept, rows, values.dtype);
  Tensor t{"w", Shape{{rows, cols}}, std::make_shared<Encoding>(Encoding{s})};
  REQUIRE(validate_encoding(*t.encoding, t.shape).ok());
  return t;
}

// The kernel against the double-accumulating reference, within f32 accumulation error of the
// kept products (|err| <= 1.01 (cols + 2) u Σ|w x|); below sparse_expand_tokens tokens (the sparse
// kernel, not the expanded rows and the dense kernel) matvec equals each matmul row bit for bit.
void check_against_ref(const Tensor& w, int64_t n, uint32_t seed) {
  const int64_t rows = w.rows(), cols = w.cols();
  const auto x = normal_values(static_cast<size_t>(n * cols), seed);
  std::vector<float> y(static_cast<size_t>(n * rows)), ref(y.size());
  kernels::matmul_ref(w, x.data(), n, ref.data());
  kernels::matmul(w, x.data(), n, y.data());
  const auto wf = w.to_f32();
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += std::fabs(static_cast<double>(wf[r * cols + c]) * x[t * cols + c]);
      const double bound = 1.01 * static_cast<double>(cols + 2) / 16777216.0 * s + 1e-30;
      const double err = std::fabs(static_cast<double>(y[t * rows + r]) - ref[t * rows + r]);
      if (err > bound) {
        INFO("token " << t << " row " << r << " got " << y[t * rows + r] << " ref " << ref[t * rows + r]);
        REQUIRE(err <= bound);
      }
    }
  if (n >= kernels::sparse_expand_tokens(std::get<SparseEncoding>(w.encoding->node))) return;
  std::vector<float> yv(static_cast<size_t>(rows));
  for (int64_t t = 0; t < n; ++t) {
    kernels::matvec(w, x.data() + t * cols, yv.data());
    INFO("token " << t << " of " << n);
    REQUIRE(std::memcmp(yv.data(), y.data() + t * rows, sizeof(float) * rows) == 0);
  }
}

struct Pattern {
  const char* name;
  double density;
  int n, m;
};
// Every kernel path: bitmask windows, CSR, n:m halves (1:2, 2:3, 2:4, 4:5 .. 4:8), n:m field windows
// (1:4, 3:4, 1:8, 2:8, 3:8) and n:m through per-row masks (5:8, 7:8, 5:7, 1:16, 8:16).
const Pattern kPatterns[] = {
    {"bitmask 50%", 0.5, 0, 0}, {"bitmask 30%", 0.7, 0, 0}, {"bitmask 90%", 0.1, 0, 0}, {"csr 97%", 0.03, 0, 0},
    {"1:2", 0, 1, 2},           {"2:3", 0, 2, 3},           {"2:4", 0, 2, 4},           {"4:5", 0, 4, 5},
    {"4:7", 0, 4, 7},           {"4:8", 0, 4, 8},           {"1:4", 0, 1, 4},           {"3:4", 0, 3, 4},
    {"1:8", 0, 1, 8},           {"3:8", 0, 3, 8},           {"5:8", 0, 5, 8},           {"7:8", 0, 7, 8},
    {"5:7", 0, 5, 7},           {"1:16", 0, 1, 16},         {"8:16", 0, 8, 16}};

}  // namespace

TEST_CASE("sparse matvec/matmul match _ref on every target, pattern and value type", "[sparse][kernels]") {
  // Widths: shorter than a window, one window, ragged windows and ragged n:m groups, a 32-column step
  // then a 16-column step and an odd window (61), several blocks.
  const int64_t kCols[] = {16, 37, 61, 172, 1031};
  uint32_t seed = 7;
  const auto targets = kernels::simd_targets();
  REQUIRE(!targets.empty());
  for (int64_t target : targets) {
    kernels::force_simd_target(target);
    INFO("SIMD target " << kernels::simd_target_name(target));
    for (const Pattern& p : kPatterns)
      for (int64_t cols : kCols)
        for (const Values& v : kValues) {
          if (cols < p.m) continue;
          INFO(p.name << " cols " << cols << " values " << v.name);
          const int64_t rows = 19;
          const auto keep = random_keep(rows, cols, p.density, p.n, p.m, seed++);
          const Tensor w = sparse_tensor(rows, cols, keep, p.n, p.m, v, seed++);
          CHECK(kernels::has_fast_linear(w));
          check_against_ref(w, 1, seed++);
          check_against_ref(w, 3, seed++);   // every path's sparse kernel, token by token
          check_against_ref(w, 11, seed++);  // a block of 8 tokens, then 3 alone; bitmask rows expanded
          check_against_ref(w, 17, seed++);  // every pattern's rows expanded, the dense kernel
        }
  }
  kernels::force_simd_target(0);
}

TEST_CASE("sparse bitmask kernels: AVX3_DL equals AVX3 bit for bit", "[sparse][kernels]") {
  const auto targets = kernels::simd_targets();
  const auto has = [&](const char* name) {
    return std::any_of(targets.begin(), targets.end(), [&](int64_t t) { return kernels::simd_target_name(t) == name; });
  };
  if (!has("AVX3_DL") || !has("AVX3")) {
    WARN("skipped: this CPU does not run both AVX3 and AVX3_DL");
    return;
  }
  const auto run = [&](const char* name, const Tensor& w, const std::vector<float>& x, int64_t n) {
    for (int64_t t : targets)
      if (kernels::simd_target_name(t) == name) kernels::force_simd_target(t);
    REQUIRE(kernels::active_simd_target() == name);
    std::vector<float> y(static_cast<size_t>(n * w.rows()));
    kernels::matmul(w, x.data(), n, y.data());
    kernels::force_simd_target(0);
    return y;
  };
  uint32_t seed = 101;
  for (int64_t cols : {61, 1031})
    for (const Values& v : {kValues[1], kValues[2]}) {
      INFO("cols " << cols << " values " << v.name);
      const auto keep = random_keep(23, cols, 0.3, 0, 0, seed++);
      const Tensor w = sparse_tensor(23, cols, keep, 0, 0, v, seed++);
      for (int64_t n : {1, 3}) {  // the sparse kernel (sparse_expand_tokens)
        const auto x = normal_values(static_cast<size_t>(n * cols), seed++);
        const auto a = run("AVX3", w, x, n), b = run("AVX3_DL", w, x, n);
        REQUIRE(std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0);
      }
    }
}

TEST_CASE("sparse n:m quads with Quant values: the same bits as their f32 dequantization", "[sparse][kernels]") {
  // On AVX-512 targets 2:4 and 1:2 rows with 4/8-bit values dequantize in registers
  // (kernels::simd::sparse_avx512); elsewhere the rows are dequantized to f32 first. Both give
  // the bits of the same weight with f32 values (the dequantized codes, one rounding each), for every
  // step/tail split and group layout.
  uint32_t seed = 501;
  for (int64_t target : kernels::simd_targets()) {
    kernels::force_simd_target(target);
    INFO("SIMD target " << kernels::simd_target_name(target));
    for (const auto& [n, m] : {std::pair{2, 4}, std::pair{1, 2}})
      for (int64_t cols : {32, 61, 172, 1031})
        for (const Values& v : {kValues[3], kValues[4], kValues[5]}) {
          INFO(n << ":" << m << " cols " << cols << " values " << v.name);
          const int64_t rows = 13;
          const Tensor wq = sparse_tensor(rows, cols, random_keep(rows, cols, 0, n, m, seed), n, m, v, seed + 1);
          SparseEncoding s = std::get<SparseEncoding>(wq.encoding->node);
          std::vector<float> kept(static_cast<size_t>(rows * s.kept_stride));
          decode_rows_to_f32(*s.values, sparse_values_shape(s, rows), 0, rows, kept.data());
          sparse_set_dense_values(s, kept, rows, DType::kF32);
          const Tensor wf{"w", wq.shape, std::make_shared<Encoding>(Encoding{s})};
          for (int64_t tokens : {1, 3, 9}) {  // below sparse_expand_tokens: the sparse kernel
            const auto x = normal_values(static_cast<size_t>(tokens * cols), seed + 2);
            std::vector<float> yq(static_cast<size_t>(tokens * rows)), yf(yq.size());
            kernels::matmul(wq, x.data(), tokens, yq.data());
            kernels::matmul(wf, x.data(), tokens, yf.data());
            REQUIRE(std::memcmp(yq.data(), yf.data(), sizeof(float) * yq.size()) == 0);
          }
          seed += 3;
        }
  }
  kernels::force_simd_target(0);
}

TEST_CASE("sparse_beats_dense: f16 bitmask rows pay from 40 % on AVX-512, from 50 % elsewhere", "[sparse][kernels]") {
  const int64_t rows = 8, cols = 256;
  const auto at = [&](double sparsity, const Values& v) {
    return sparse_tensor(rows, cols, random_keep(rows, cols, 1.0 - sparsity, 0, 0, 41), 0, 0, v, 42);
  };
  const Tensor f16_45 = at(0.45, kValues[1]), f16_55 = at(0.55, kValues[1]), f32_45 = at(0.45, kValues[0]);
  const Tensor f16_35 = at(0.35, kValues[1]);
  for (int64_t target : kernels::simd_targets()) {
    kernels::force_simd_target(target);
    const std::string name = kernels::simd_target_name(target);
    INFO("SIMD target " << name);
    CHECK(kernels::sparse_beats_dense(f16_45) == (name.rfind("AVX3", 0) == 0));  // AVX3, AVX3_DL, ..._ZEN4
    CHECK(kernels::sparse_beats_dense(f16_55));
    CHECK_FALSE(kernels::sparse_beats_dense(f16_35));
    CHECK(kernels::sparse_beats_dense(f32_45));
  }
  kernels::force_simd_target(0);
}

TEST_CASE("window index of bitmask rows: counts and in-window columns of every kept entry", "[sparse][kernels]") {
  const int64_t rows = 5, cols = 75;  // two full windows and a ragged one
  const Tensor w = sparse_tensor(rows, cols, random_keep(rows, cols, 0.4, 0, 0, 51), 0, 0, kValues[1], 52);
  const auto& s = std::get<SparseEncoding>(w.encoding->node);
  REQUIRE(s.pattern == SparsePattern::kBitmask);
  const auto wi = kernels::build_window_index(s, rows, cols);
  REQUIRE(wi->windows == 3);
  REQUIRE(wi->stride == s.kept_stride);
  std::vector<int32_t> where(static_cast<size_t>(s.kept_stride));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t kept = sparse_row_columns(s, cols, r, where.data());
    int64_t per_window[3] = {0, 0, 0};
    for (int64_t k = 0; k < kept; ++k) {
      INFO("row " << r << " entry " << k << " column " << where[k]);
      REQUIRE(wi->columns[r * wi->stride + k] == where[k] % 32);
      ++per_window[where[k] / 32];
    }
    for (int64_t j = 0; j < 3; ++j) REQUIRE(wi->counts[r * 3 + j] == per_window[j]);
  }
}

TEST_CASE("window index path: AVX-512 from 60 % sparsity, every window count 0..32, against _ref",
          "[sparse][kernels]") {
  // Row r keeps the first (3r + k) % 33 columns of window k: counts 0..32, so one and two 16-lane steps
  // and empty windows; widths with a ragged last window of 1, 13 and 17 columns.
  for (int64_t cols : {int64_t{64}, int64_t{97}, int64_t{109}, int64_t{177}}) {
    const int64_t rows = 23, windows = (cols + 31) / 32;
    std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < windows; ++k)
        for (int64_t c = 32 * k; c < std::min(cols, 32 * k + (3 * r + k) % 33); ++c) keep[r * cols + c] = 1;
    // Sparse enough for the path: every other row emptied beyond its first window.
    for (int64_t r = 0; r < rows; r += 2) std::fill(keep.begin() + r * cols + 32, keep.begin() + (r + 1) * cols, 0);
    uint32_t seed = 60;
    for (int64_t target : kernels::simd_targets()) {
      kernels::force_simd_target(target);
      const std::string name = kernels::simd_target_name(target);
      for (const Values& v : kValues) {
        INFO("SIMD target " << name << " cols " << cols << " values " << v.name);
        const Tensor w = sparse_tensor(rows, cols, keep, 0, 0, v, seed++);
        const double sparsity = 1.0 - static_cast<double>(std::get<SparseEncoding>(w.encoding->node).nnz) /
                                          static_cast<double>(rows * cols);
        REQUIRE(sparsity >= 0.6);
        const bool indexed = name.rfind("AVX3", 0) == 0;
        CHECK(kernels::sparse_window_index_path(w) == indexed);
        // A one-token call reads the values and the index (columns and counts) instead of the mask.
        const auto wi = kernels::build_window_index(std::get<SparseEncoding>(w.encoding->node), rows, cols);
        const uint64_t via_index =
            sparse_values_bytes(std::get<SparseEncoding>(w.encoding->node)) + wi->counts.size() + rows * wi->stride;
        CHECK(kernels::decode_read_bytes(w) == (indexed ? via_index : w.encoded_bytes()));
        for (int64_t n : {1, 2, 3}) check_against_ref(w, n, seed++);
      }
    }
    kernels::force_simd_target(0);
  }
  // Below 60 % the mask kernel stays.
  const Tensor dense_ish = sparse_tensor(8, 256, random_keep(8, 256, 0.45, 0, 0, 70), 0, 0, kValues[1], 71);
  for (int64_t target : kernels::simd_targets()) {
    kernels::force_simd_target(target);
    CHECK_FALSE(kernels::sparse_window_index_path(dense_ish));
  }
  kernels::force_simd_target(0);
}

TEST_CASE("sparse kernels: rows with no kept entries and fully kept rows", "[sparse][kernels]") {
  const int64_t rows = 6, cols = 45;
  std::vector<uint8_t> keep(static_cast<size_t>(rows * cols), 0);
  for (int64_t c = 0; c < cols; ++c) keep[2 * cols + c] = 1;  // row 2 dense, rows 0, 1, 3.. empty but 5
  keep[5 * cols + 44] = 1;                                    // a single entry in the ragged tail
  for (const Values& v : kValues) {
    INFO(v.name);
    check_against_ref(sparse_tensor(rows, cols, keep, 0, 0, v, 3), 9, 4);
  }
}

TEST_CASE("sparse kernels give the same bits on 1 and 2 threads", "[sparse][kernels]") {
  const int64_t rows = 301, cols = 1031;
  for (const Pattern& p : kPatterns) {
    INFO(p.name);
    const auto keep = random_keep(rows, cols, p.density, p.n, p.m, 11);
    const Tensor w = sparse_tensor(rows, cols, keep, p.n, p.m, kValues[1], 12);
    // The decode kernels (1 token), the prefill expansion (9).
    test::require_thread_independent(w, normal_values(static_cast<size_t>(9 * cols), 13), {1, 9});
  }
}

TEST_CASE("sparse CSR with u32 column indices (rows wider than 65536)", "[sparse][kernels]") {
  const int64_t rows = 3, cols = 70001;
  const auto keep = random_keep(rows, cols, 0.01, 0, 0, 99);
  const Tensor w = sparse_tensor(rows, cols, keep, 0, 0, kValues[0], 100);
  REQUIRE(std::get<SparseEncoding>(w.encoding->node).pattern == SparsePattern::kCsr);
  check_against_ref(w, 2, 101);
}

namespace {

// stories260K with every block linear weight pruned by magnitude (per row: the largest |w| of each
// group of m for n:m, the largest fraction `density` of the row otherwise), values f32.
Model pruned_stories(double density, int n, int m) {
  auto loaded = load_model(test::fixture("models/stories260K/stories260K.bin"));
  REQUIRE(loaded.ok());
  Model model = std::move(*loaded);
  for (const Tensor& t : std::vector<Tensor>(model.tensors())) {
    if (tensor_role(t.name) != TensorRole::kLinear) continue;
    const int64_t rows = t.rows(), cols = t.cols();
    const std::vector<float> w = t.to_f32();
    std::vector<uint8_t> keep(w.size(), 0);
    std::vector<int64_t> order(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = w.data() + r * cols;
      const int64_t span = n > 0 ? m : cols;
      for (int64_t g0 = 0; g0 < cols; g0 += span) {
        const int64_t width = std::min(span, cols - g0);
        const int64_t want = n > 0 ? std::min<int64_t>(n, width) : static_cast<int64_t>(density * cols + 0.5);
        order.resize(static_cast<size_t>(width));
        for (int64_t j = 0; j < width; ++j) order[j] = g0 + j;
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t a, int64_t b) { return std::fabs(row[a]) > std::fabs(row[b]); });
        for (int64_t j = 0; j < want; ++j) keep[r * cols + order[j]] = 1;
      }
    }
    std::vector<float> kept;
    SparseEncoding s;
    if (n > 0) {
      auto nm = sparse_nm_pattern(keep.data(), w.data(), rows, cols, n, m, kept);
      REQUIRE(nm.ok());
      s = *nm;
    } else {
      s = sparse_unstructured_pattern(keep.data(), w.data(), rows, cols, kept);
    }
    sparse_set_dense_values(s, kept, rows, DType::kF32);
    model.replace(Tensor{t.name, t.shape, std::make_shared<Encoding>(Encoding{std::move(s)})});
  }
  return model;
}

// The same model with every Sparse weight decoded to Dense f32.
Model densified(const Model& sparse) {
  Model model = sparse;
  for (const Tensor& t : sparse.tensors())
    if (std::holds_alternative<SparseEncoding>(t.encoding->node))
      model.replace(make_dense(t.name, t.shape, t.to_f32(), DType::kF32));
  return model;
}

}  // namespace

TEST_CASE("runtime on sparse weights: logits of the dense expansion, fewer weight bytes", "[sparse][runtime][heavy]") {
  struct Case {
    const char* name;
    double density;
    int n, m;
  };
  for (const Case& c : {Case{"2:4", 0, 2, 4}, Case{"4:8", 0, 4, 8}, Case{"70 % bitmask", 0.3, 0, 0}}) {
    INFO(c.name);
    const Model sparse = pruned_stories(c.density, c.n, c.m);
    const Model dense = densified(sparse);
    auto rs = Runtime::create(sparse, RuntimeOptions{.threads = 2});
    auto rd = Runtime::create(dense, RuntimeOptions{.threads = 2});
    REQUIRE(rs.ok());
    REQUIRE(rd.ok());
    // The runtime keeps these sparse (f32 values at or above their break-even): fewer bytes a token.
    CHECK((*rs)->weight_bytes_per_token() < (*rd)->weight_bytes_per_token());
    const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 34, 264, 10, 90};
    const int64_t vocab = (*rs)->vocab_size();
    std::vector<float> ls(prompt.size() * vocab), ld(ls.size());
    REQUIRE((*rs)->forward(prompt, 0, ls.data(), true).ok());
    REQUIRE((*rd)->forward(prompt, 0, ld.data(), true).ok());
    // then 8 decode steps on the sparse model's greedy tokens
    for (int step = 0; step < 8; ++step) {
      const float* last = ls.data() + (ls.size() - vocab);
      const int32_t next = static_cast<int32_t>(std::max_element(last, last + vocab) - last);
      std::vector<float> s1(vocab), d1(vocab);
      REQUIRE((*rs)->forward(std::span(&next, 1), static_cast<int64_t>(prompt.size()) + step, s1.data(), false).ok());
      REQUIRE((*rd)->forward(std::span(&next, 1), static_cast<int64_t>(prompt.size()) + step, d1.data(), false).ok());
      ls.insert(ls.end(), s1.begin(), s1.end());
      ld.insert(ld.end(), d1.begin(), d1.end());
    }
    double max_diff = 0, max_abs = 0;
    for (size_t i = 0; i < ls.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(ls[i] - ld[i])));
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(ld[i])));
    }
    INFO("max |sparse - dense| " << max_diff << " of max |logit| " << max_abs);
    CHECK(max_diff <= 1e-4 * max_abs);
  }
}
