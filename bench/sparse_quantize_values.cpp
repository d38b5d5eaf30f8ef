// Benchmark helper: "prune, then quantize" for the sparse decode table (bench/sparse_decode.sh). The quantization
// passes do not keep a Sparse tensor sparse today (they quantize its decoded dense weight), so this rebuilds the
// composition directly: every Sparse tensor of PRUNED gets its Dense kept values re-encoded with RTN (same spec as
// `llmc quantize` defaults: 4-bit asymmetric, groups of 32 kept values, f16 scales); every other tensor is taken
// from DENSE_Q (the `llmc quantize` output of the unpruned model), so the two models differ only in sparsity.
// usage: sparse_quantize_values PRUNED.llmc DENSE_Q.llmc OUT.llmc [--bits B] [--group G]
#include <cstdio>
#include <cstring>
#include <string>

#include "core/sparse.h"
#include "formats/model_io.h"
#include "passes/quant/quant_math.h"

using namespace llmc;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s PRUNED.llmc DENSE_Q.llmc OUT.llmc [--bits B] [--group G]\n", argv[0]);
    return 2;
  }
  QuantSpec spec;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--bits")) spec.bits = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--group")) spec.group_size = std::stoll(argv[i + 1]);
  }
  if (auto v = validate_quant_spec(spec); !v.ok()) {
    std::fprintf(stderr, "%s\n", v.error().message.c_str());
    return 2;
  }
  auto pruned = load_model(argv[1]);
  auto dense_q = load_model(argv[2]);
  if (!pruned.ok() || !dense_q.ok()) {
    std::fprintf(stderr, "%s\n", (!pruned.ok() ? pruned.error() : dense_q.error()).message.c_str());
    return 1;
  }
  Model& model = *pruned;
  int sparse_count = 0;
  for (const Tensor& t : std::vector<Tensor>(model.tensors())) {
    const auto* s = std::get_if<SparseEncoding>(&t.encoding->node);
    if (s == nullptr || !std::holds_alternative<DenseEncoding>(s->values->node)) {
      if (const Tensor* q = dense_q->find(t.name)) model.replace(*q);
      continue;
    }
    const int64_t rows = t.rows();
    std::vector<float> kept(static_cast<size_t>(rows * s->kept_stride));
    decode_rows_to_f32(*s->values, sparse_values_shape(*s, rows), 0, rows, kept.data());
    SparseEncoding q = *s;
    q.values = std::make_shared<Encoding>(
        Encoding{quantize_rtn(spec, kept, rows, s->kept_stride, {}, ScaleSearch{}, nullptr)});
    model.replace(Tensor{t.name, t.shape, std::make_shared<Encoding>(Encoding{std::move(q)})});
    ++sparse_count;
  }
  LlmcWriteOptions options;
  options.command_line = "sparse_quantize_values";
  if (auto w = write_llmc(model, argv[3], options); !w.ok()) {
    std::fprintf(stderr, "%s\n", w.error().message.c_str());
    return 1;
  }
  std::printf("%s: %d sparse tensors with %s values\n", argv[3], sparse_count, describe_quant_spec(spec).c_str());
  return 0;
}
