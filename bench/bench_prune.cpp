// Pruning quality table: method x pattern -> sparsity, bytes, bpw, KLD and PPL ratio vs the unpruned model, time.
// Prints figures; asserts nothing.
// usage: bench_prune MODEL [--tokenizer FILE] --text FILE [--ctx 256] [--chunks 0] [--threads 1] [--methods
// magnitude,wanda,sparsegpt]
//        [--patterns 0.3,0.5,0.7,2:4,4:8] [--values keep|f16] [--calib FILE] [--calib-samples 32] [--calib-ctx 256]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

// Sets pass options by name from strings.
class SetOptions final : public OptionVisitor {
 public:
  explicit SetOptions(std::map<std::string, std::string> values) : values_(std::move(values)) {}
  void option(const char* name, bool& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = it->second == "true";
  }
  void option(const char* name, int64_t& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = std::stoll(it->second);
  }
  void option(const char* name, double& v, const char*) override {
    if (auto it = values_.find(name); it != values_.end()) v = std::stod(it->second);
  }
  void option(const char* name, std::string& v, const char*, std::span<const char* const>) override {
    if (auto it = values_.find(name); it != values_.end()) v = it->second;
  }
  void option(const char*, std::vector<std::string>&, const char*) override {}

 private:
  std::map<std::string, std::string> values_;
};

// Bytes and logical elements of the weights that count for bpw.
std::pair<uint64_t, int64_t> weight_bytes(const Model& m) {
  uint64_t bytes = 0;
  int64_t n = 0;
  for (const Tensor& t : m.tensors())
    if (counts_for_bpw(tensor_role(t.name))) bytes += t.encoded_bytes(), n += t.numel();
  return {bytes, n};
}

int fail(const Error& e) {
  std::fprintf(stderr, "bench_prune: %s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"--ctx", "256"},           {"--chunks", "0"},
                                          {"--methods", "magnitude"}, {"--patterns", "0.3,0.5,0.7,2:4,4:8"},
                                          {"--values", "keep"},       {"--calib-samples", "32"},
                                          {"--calib-ctx", "256"},     {"--threads", "1"}};
  std::string model_path;
  for (int i = 1; i < argc; ++i) {
    if (argv[i][0] == '-' && i + 1 < argc)
      a[argv[i]] = argv[i + 1], ++i;
    else
      model_path = argv[i];
  }
  LoadOptions lo;
  lo.tokenizer_path = a["--tokenizer"];
  auto base = load_model(model_path, lo);
  if (!base.ok()) return fail(base.error());
  auto tokenizer = Tokenizer::create(base->tokenizer);
  if (!tokenizer.ok()) return fail(tokenizer.error());
  auto text = read_text_file(a["--text"]);
  if (!text.ok()) return fail(text.error());
  RuntimeOptions ro;
  ro.max_context = std::stoll(a["--ctx"]);
  ro.threads = static_cast<int>(std::stoll(a["--threads"]));
  EvalOptions eo;
  eo.ctx = ro.max_context;
  eo.max_chunks = std::stoll(a["--chunks"]);
  auto ref_rt = Runtime::create(*base, ro);
  if (!ref_rt.ok()) return fail(ref_rt.error());
  const auto [base_bytes, base_n] = weight_bytes(*base);
  std::printf("model %s, text %s, ctx %lld, base weights %.3f MB (%.2f bpw)\n", model_path.c_str(), a["--text"].c_str(),
              (long long)eo.ctx, base_bytes / 1e6, 8.0 * base_bytes / base_n);
  std::printf("%-10s %-6s %9s %12s %7s %10s %9s %10s %8s\n", "method", "target", "sparsity", "weight MB", "bpw", "KLD",
              "same top", "PPL ratio", "time s");
  for (const std::string& method : split(a["--methods"]))
    for (const std::string& pattern : split(a["--patterns"])) {
      Model m = *base;
      std::map<std::string, std::string> opts = {{"values", a["--values"]}};
      if (pattern.find(':') != std::string::npos)
        opts["pattern"] = pattern;
      else
        opts["sparsity"] = pattern;
      auto pass = make_pass("prune." + method);
      if (!pass.ok()) return fail(pass.error());
      SetOptions set(opts);
      (*pass)->visit(set);
      if (auto v = (*pass)->validate_options(); !v.ok()) return fail(v.error());
      PassContext ctx;
      ctx.threads = ro.threads;
      std::unique_ptr<CalibrationSet> calib;
      if ((*pass)->needs().calibration) {
        CalibOptions co;
        co.file = a["--calib"];
        co.samples = std::stoll(a["--calib-samples"]);
        co.ctx = std::stoll(a["--calib-ctx"]);
        auto c = CalibrationSet::create(m, co);
        if (!c.ok()) return fail(c.error());
        calib = std::move(c).value();
        ctx.calib = calib.get();
      }
      const auto t0 = std::chrono::steady_clock::now();
      auto report = (*pass)->run(m, ctx);
      if (!report.ok()) return fail(report.error());
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      auto rt = Runtime::create(m, ro);
      if (!rt.ok()) return fail(rt.error());
      auto r = evaluate_text(**rt, ref_rt->get(), **tokenizer, *text, eo);
      if (!r.ok()) return fail(r.error());
      const auto [bytes, n] = weight_bytes(m);
      int64_t pruned_n = 0, nnz = 0;
      for (const Tensor& t : m.tensors())
        if (const auto* s = std::get_if<SparseEncoding>(&t.encoding->node)) pruned_n += t.numel(), nnz += s->nnz;
      std::printf("%-10s %-6s %8.1f%% %12.3f %7.2f %10.4f %8.1f%% %10.3f %8.2f\n", method.c_str(), pattern.c_str(),
                  pruned_n ? 100.0 * (1.0 - double(nnz) / double(pruned_n)) : 0.0, bytes / 1e6, 8.0 * bytes / n,
                  r->kld->kld.mean, 100.0 * r->kld->same_top.mean, r->kld->ppl_ratio, secs);
      std::fflush(stdout);
    }
  return 0;
}
