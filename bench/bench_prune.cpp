// Pruning quality table: method x pattern -> sparsity, parameters, bytes, file size, bpw, KLD and PPL
// ratio vs the unpruned model, pass time, optionally decode speed. Prints figures; asserts nothing.
// usage: bench_prune MODEL [--tokenizer FILE] --text FILE [--ctx 256] [--chunks 0] [--threads 1]
//        [--methods magnitude,wanda,sparsegpt] [--patterns 0.3,0.5,0.7,2:4,4:8,heads:0.25,kvgroups:0.34,
//        channels:0.25,layers:0.2] [--values keep|f16] [--bits 0] [--allocation uniform|owl]
//        [--structured-allocation uniform|global] [--calib FILE] [--calib-samples 32] [--calib-ctx 256]
//        [--decode 0 (tokens per decode run; 0 = no speed column)] [--repeat 3] [--tmp /tmp]
// Structured patterns (heads/kvgroups/channels/layers:S) map the method as `llmc prune` does:
// magnitude = weight importance, wanda = activation importance, sparsegpt = activation + refit.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "model/describe.h"
#include "model/tokenizer.h"
#include "passes/pass.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"
#include "verify/bench.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
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

// One table row's pass and options, or empty when the combination does not exist.
struct Job {
  std::string pass;
  std::map<std::string, std::string> options;
};

Job job_for(const std::string& method, const std::string& pattern, const std::map<std::string, std::string>& a) {
  const auto colon = pattern.find(':');
  const std::string kind = colon == std::string::npos ? "" : pattern.substr(0, colon);
  const std::map<std::string, const char*> structured = {{"heads", "prune.heads"},
                                                         {"kvgroups", "prune.heads"},
                                                         {"channels", "prune.channels"},
                                                         {"layers", "prune.layers"}};
  if (const auto it = structured.find(kind); it != structured.end()) {
    Job j{it->second, {{"sparsity", pattern.substr(colon + 1)}}};
    if (kind == "layers") {
      if (method == "magnitude") return {};
      return j;
    }
    j.options["importance"] = method == "magnitude" ? "magnitude" : "activation";
    j.options["refit"] = method == "sparsegpt" ? "true" : "false";
    j.options["allocation"] = a.at("--structured-allocation");
    if (kind == "kvgroups") j.options["unit"] = "kv_group";
    return j;
  }
  Job j{"prune." + method, {{"values", a.at("--values")}, {"allocation", a.at("--allocation")}}};
  if (colon != std::string::npos)
    j.options["pattern"] = pattern;
  else
    j.options["sparsity"] = pattern;
  if (method == "sparsegpt" && a.at("--bits") != "0") j.options["bits"] = a.at("--bits");
  return j;
}

int fail(const Error& e) {
  std::fprintf(stderr, "bench_prune: %s\n", e.message.c_str());
  return 1;
}

struct Row {
  double sparsity = 0;  // of the pruned weights (unstructured) or of the parameters (structured)
  SizeSummary size;
  uint64_t file_bytes = 0;
  double decode_tps = 0;
};

// Sizes, .llmc file bytes and (decode_tokens > 0) the best decode tokens/s of `m`.
Result<Row> measure(const Model& m, const Model& base, const std::string& tmp, const RuntimeOptions& ro,
                    int64_t decode_tokens, int repeat) {
  Row row;
  row.size = summarize_size(m);
  int64_t pruned = 0, nnz = 0;
  for (const Tensor& t : m.tensors())
    if (const auto* s = std::get_if<SparseEncoding>(&t.encoding->node)) pruned += t.numel(), nnz += s->nnz;
  const SizeSummary b = summarize_size(base);
  row.sparsity = pruned ? 1.0 - double(nnz) / double(pruned) : 1.0 - double(row.size.parameters) / double(b.parameters);
  const std::string path = (std::filesystem::path(tmp) / "bench_prune.llmc").string();
  std::filesystem::remove(path);
  LLMC_TRY(write_llmc(m, path, {}));
  row.file_bytes = std::filesystem::file_size(path);
  std::filesystem::remove(path);
  if (decode_tokens > 0) {
    RuntimeOptions o = ro;
    o.max_context = 16 + decode_tokens;
    LLMC_ASSIGN_OR_RETURN(auto rt, Runtime::create(m, o));
    BenchOptions bo;
    bo.prompt_tokens = 16;
    bo.gen_tokens = decode_tokens;
    bo.repeat = repeat;
    bo.threads = ro.threads;
    bo.membw_bytes = 0;
    LLMC_ASSIGN_OR_RETURN(const BenchResult r, run_bench(*rt, bo));
    row.decode_tps = r.decode_tps.max;
  }
  return row;
}

void print_row(const std::string& method, const std::string& pattern, const Row& row, double kld, double same_top,
               double ppl_ratio, double secs) {
  std::printf("%-10s %-14s %8.1f%% %9.3f %10.3f %10.3f %7.2f %9.4f %8.1f%% %9.3f %8.2f", method.c_str(),
              pattern.c_str(), 100.0 * row.sparsity, row.size.parameters / 1e6, row.size.bpw_bytes / 1e6,
              row.file_bytes / 1e6, row.size.bits_per_weight(), kld, 100.0 * same_top, ppl_ratio, secs);
  if (row.decode_tps > 0) std::printf(" %9.1f", row.decode_tps);
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a = {{"--ctx", "256"},
                                          {"--chunks", "0"},
                                          {"--methods", "magnitude"},
                                          {"--patterns", "0.3,0.5,0.7,2:4,4:8"},
                                          {"--values", "keep"},
                                          {"--bits", "0"},
                                          {"--allocation", "uniform"},
                                          {"--structured-allocation", "uniform"},
                                          {"--calib-samples", "32"},
                                          {"--calib-ctx", "256"},
                                          {"--threads", "1"},
                                          {"--decode", "0"},
                                          {"--repeat", "3"},
                                          {"--tmp", "/tmp"}};
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
  const int64_t decode = std::stoll(a["--decode"]);
  const int repeat = static_cast<int>(std::stoll(a["--repeat"]));
  auto ref_rt = Runtime::create(*base, ro);
  if (!ref_rt.ok()) return fail(ref_rt.error());
  std::printf("model %s, text %s, ctx %lld, chunks %lld, threads %d, calibration %s (%s x %s tokens)\n",
              model_path.c_str(), a["--text"].c_str(), (long long)eo.ctx, (long long)eo.max_chunks, ro.threads,
              a["--calib"].c_str(), a["--calib-samples"].c_str(), a["--calib-ctx"].c_str());
  std::printf("%-10s %-14s %9s %9s %10s %10s %7s %9s %9s %9s %8s%s\n", "method", "pattern", "sparsity", "params M",
              "weight MB", "file MB", "bpw", "KLD", "same top", "PPL ratio", "time s",
              decode > 0 ? "  decode t/s" : "");
  {
    auto row = measure(*base, *base, a["--tmp"], ro, decode, repeat);
    if (!row.ok()) return fail(row.error());
    print_row("dense", "-", *row, 0, 1, 1, 0);
  }
  for (const std::string& method : split(a["--methods"]))
    for (const std::string& pattern : split(a["--patterns"])) {
      const Job job = job_for(method, pattern, a);
      if (job.pass.empty()) continue;
      Model m = *base;
      auto pass = make_pass(job.pass);
      if (!pass.ok()) return fail(pass.error());
      SetOptions set(job.options);
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
      auto row = measure(m, *base, a["--tmp"], ro, decode, repeat);
      if (!row.ok()) return fail(row.error());
      print_row(method, pattern, *row, r->kld->kld.mean, r->kld->same_top.mean, r->kld->ppl_ratio, secs);
    }
  return 0;
}
