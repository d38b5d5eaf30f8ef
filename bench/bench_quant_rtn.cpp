// Benchmark: RTN/binary/ternary quantization of stories260K, evaluated against the fp32 model on
// TinyStories (ctx 256): bpw, mean KLD, top-1 agreement, PPL. Prints a Markdown table; asserts nothing.
// Usage: bench_quant_rtn FIXTURES_DIR [max_chunks=0 (all)]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_methods.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

using namespace llmc;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_quant_rtn FIXTURES_DIR [max_chunks]\n");
    return 2;
  }
  const std::string dir = argv[1];
  LoadOptions lo;
  lo.tokenizer_path = dir + "/models/stories260K/tok512.bin";
  auto base = load_model(dir + "/models/stories260K/stories260K.bin", lo);
  auto text = read_text_file(dir + "/text/tinystories-sample.txt");
  if (!base.ok() || !text.ok()) {
    std::fprintf(stderr, "cannot load the fixtures from %s\n", dir.c_str());
    return 1;
  }
  auto tokenizer = Tokenizer::create(base->tokenizer);
  RuntimeOptions ropt;
  ropt.max_context = 256;
  ropt.threads = 1;
  auto ref = Runtime::create(*base, ropt);
  EvalOptions eo;
  eo.ctx = 256;
  eo.max_chunks = argc > 2 ? std::atoll(argv[2]) : 0;

  struct Row {
    const char* label;
    QuantSpec spec;
  };
  const Row rows[] = {
      {"8-bit asym g32", QuantSpec{.bits = 8}},
      {"8-bit sym g32", QuantSpec{.bits = 8, .scheme = QuantScheme::kSymmetric}},
      {"6-bit asym g32", QuantSpec{.bits = 6}},
      {"5-bit asym g32", QuantSpec{.bits = 5}},
      {"4-bit asym g32", QuantSpec{.bits = 4}},
      {"4-bit sym g32", QuantSpec{.bits = 4, .scheme = QuantScheme::kSymmetric}},
      {"4-bit asym g64", QuantSpec{.bits = 4, .group_size = 64}},
      {"4-bit asym g32 u8/256", QuantSpec{.bits = 4, .scale_dtype = DType::kU8}},
      {"3-bit asym g32", QuantSpec{.bits = 3}},
      {"2-bit asym g32", QuantSpec{.bits = 2}},
      {"binary g32", QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary}},
      {"binary two-level g32", QuantSpec{.bits = 1, .scheme = QuantScheme::kBinary, .binary_two_level = true}},
      {"ternary g32", QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary}},
      {"ternary g32 trits5", QuantSpec{.bits = 2, .scheme = QuantScheme::kTernary, .trits5 = true}},
  };
  std::printf(
      "| encoding | clip_search | bpw | mean KLD | same top | PPL | quant s |\n|---|---|---|---|---|---|---|\n");
  for (const Row& row : rows) {
    for (int steps : {0, 20}) {
      if (row.spec.scheme == QuantScheme::kBinary || row.spec.scheme == QuantScheme::kTernary) {
        if (steps) continue;  // closed-form fits: the clipping search does not apply
      }
      Model q = *base;
      PassContext ctx;
      (void)ctx.selector.compile();
      const auto t0 = std::chrono::steady_clock::now();
      auto r = quantize_model_rtn(
          q, ctx, [&](const std::string&) { return std::optional<QuantSpec>(row.spec); }, ScaleSearch{steps, 0.7},
          false);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!r.ok()) {
        std::fprintf(stderr, "%s: %s\n", row.label, r.error().message.c_str());
        return 1;
      }
      uint64_t bytes = 0, elements = 0;
      for (const Tensor& t : q.tensors())
        if (std::holds_alternative<QuantEncoding>(t.encoding->node)) {
          bytes += t.encoded_bytes();
          elements += static_cast<uint64_t>(t.numel());
        }
      auto rt = Runtime::create(q, ropt);
      auto e = evaluate_text(**rt, ref->get(), **tokenizer, *text, eo);
      if (!e.ok()) {
        std::fprintf(stderr, "%s: %s\n", row.label, e.error().message.c_str());
        return 1;
      }
      std::printf("| %s | %d | %.3f | %.5f | %.2f %% | %.3f | %.2f |\n", row.label, steps,
                  8.0 * static_cast<double>(bytes) / static_cast<double>(elements), e->kld->kld.mean,
                  100.0 * e->kld->same_top.mean, e->ppl.ppl, secs);
      std::fflush(stdout);
    }
  }
  std::printf("\nreference fp32 PPL on the same tokens\n");
  return 0;
}
