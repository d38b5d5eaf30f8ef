// Benchmark: quantize a model with RTN / GPTQ / AWQ over bits x groups and print bpw, KLD, top-1
// agreement and PPL against the unquantized model, with the quantization time of each.
// Usage: bench_quant_methods MODEL --eval TEXT --calib TEXT [--tokenizer FILE] [--ctx 256]
//        [--chunks 0] [--calib-samples 32] [--calib-ctx 256] [--methods rtn,gptq,awq]
//        [--bits 3,4] [--groups 32,64,128] [--threads 0] [--no-eval]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/arch.h"
#include "model/tokenizer.h"
#include "passes/quant/quant_methods.h"
#include "pipeline/calibration.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "bench_quant_methods: %s\n", msg.c_str());
  std::exit(1);
}

double bpw(const Model& m) {
  double bytes = 0, n = 0;
  for (const Tensor& t : m.tensors())
    if (counts_for_bpw(tensor_role(t.name))) {
      bytes += static_cast<double>(t.encoded_bytes());
      n += static_cast<double>(t.numel());
    }
  return n > 0 ? 8 * bytes / n : 0;
}

class StderrSink : public LogSink {
 public:
  void log(LogLevel level, std::string_view message) override {
    if (level <= LogLevel::kWarn) std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
  }
  void progress(std::string_view, int64_t, int64_t, std::string_view) override {}
};

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt = {{"--ctx", "256"},
                                            {"--chunks", "0"},
                                            {"--calib-samples", "32"},
                                            {"--calib-ctx", "256"},
                                            {"--methods", "rtn,gptq,awq"},
                                            {"--bits", "3,4"},
                                            {"--groups", "32,64,128"},
                                            {"--threads", "0"}};
  std::string model_path;
  bool eval = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-eval")
      eval = false;
    else if (a.rfind("--", 0) == 0 && i + 1 < argc)
      opt[a] = argv[++i];
    else
      model_path = a;
  }
  if (model_path.empty() || !opt.count("--calib")) die("usage: see the first lines of bench_quant_methods.cpp");
  StderrSink sink;
  set_log_sink(&sink);
  LoadOptions lo;
  if (opt.count("--tokenizer")) lo.tokenizer_path = opt["--tokenizer"];
  auto base = load_model(model_path, lo);
  if (!base.ok()) die(base.error().message);
  auto tokenizer = Tokenizer::create(base->tokenizer);
  if (!tokenizer.ok()) die(tokenizer.error().message);
  CalibOptions co;
  co.file = opt["--calib"];
  co.samples = std::stoll(opt["--calib-samples"]);
  co.ctx = std::stoll(opt["--calib-ctx"]);
  co.seed = 1;
  auto calib = CalibrationSet::create(*base, co);
  if (!calib.ok()) die(calib.error().message);
  const int threads = std::stoi(opt["--threads"]);
  std::string text;
  if (eval) {
    auto t = read_text_file(opt["--eval"]);
    if (!t.ok()) die(t.error().message);
    text = std::move(t).value();
  }
  const int64_t ctx = std::stoll(opt["--ctx"]);

  std::printf("| method | bits | group | bpw | mean KLD | top-1 %% | PPL (ref) | quant s |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const std::string& group : split(opt["--groups"]))
    for (const std::string& bits : split(opt["--bits"]))
      for (const std::string& method : split(opt["--methods"])) {
        QuantSpec spec;
        spec.bits = std::stoi(bits);
        spec.group_size = std::stoll(group);
        const SpecFor spec_for = [spec](const std::string&) { return std::optional<QuantSpec>(spec); };
        Model m = *base;
        PassContext pc;
        pc.calib = calib->get();
        pc.threads = threads;
        if (!pc.selector.compile().ok()) die("selector");
        const auto t0 = std::chrono::steady_clock::now();
        Result<nlohmann::json> r = nlohmann::json();
        if (method == "rtn")
          r = quantize_model_rtn(m, pc, spec_for, {}, false);
        else if (method == "gptq")
          r = quantize_model_gptq(m, pc, spec_for, {}, GptqOptions{});
        else if (method == "awq")
          r = quantize_model_awq(m, pc, spec_for, {}, AwqOptions{}, GptqOptions{});
        else
          die("unknown method " + method);
        if (!r.ok()) die(r.error().message);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double kld = 0, top = 0, ppl = 0, ppl_ref = 0;
        if (eval) {
          RuntimeOptions ro;
          ro.max_context = ctx;
          ro.threads = threads;
          auto rq = Runtime::create(m, ro);
          auto rr = Runtime::create(*base, ro);
          if (!rq.ok() || !rr.ok()) die("runtime");
          EvalOptions eo;
          eo.ctx = ctx;
          eo.max_chunks = std::stoll(opt["--chunks"]);
          auto e = evaluate_text(**rq, rr->get(), **tokenizer, text, eo);
          if (!e.ok()) die(e.error().message);
          kld = e->kld->kld.mean;
          top = 100 * e->kld->same_top.mean;
          ppl = e->ppl.ppl;
          ppl_ref = e->kld->ref.ppl;
        }
        std::printf("| %s | %s | %s | %.3f | %.4f | %.1f | %.3f (%.3f) | %.1f |\n", method.c_str(), bits.c_str(),
                    group.c_str(), bpw(m), kld, top, ppl, ppl_ref, secs);
        std::fflush(stdout);
      }
  return 0;
}
