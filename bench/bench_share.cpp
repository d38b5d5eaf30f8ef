// Benchmark: weight sharing (share.kmeans) against RTN and GPTQ on a real model — per setting the
// bits per weight, .llmc file size, mean KLD and top-1 agreement against the unquantized model,
// PPL and its ratio to the reference, and the compression time.
// Usage: bench_share MODEL --eval TEXT --calib TEXT [--tokenizer FILE] [--ctx 256] [--chunks 20]
//        [--calib-samples 32] [--calib-ctx 256] [--threads 0] [--seed 1] [--ignore REGEX]
//        [--settings LIST] [--out DIR]
// LIST is comma-separated; each setting is fields separated by '/':
//   rtn/B/gG, gptq/B/gG        asymmetric B-bit, group G (0 = row), f16 scales
//   pal/B/GRAN[/w][/g][/oP][/int]  share.kmeans B bits, GRAN = tensor | row | rowsN, w = weighted,
//                              g = GPTQ compensation, oP = outlier fraction P (e.g. o0.005),
//                              iN = N k-means++ seedings, int = codebooks on the integer grid
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
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
#include "pipeline/pass_options.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

using namespace llmc;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);) out.push_back(item);
  return out;
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "bench_share: %s\n", msg.c_str());
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

// Applies one setting to `m` (see the usage above).
void compress(Model& m, const std::string& setting, CalibrationSet& calib, int threads, uint64_t seed,
              const std::string& ignore) {
  const std::vector<std::string> f = split(setting, '/');
  if (f.size() < 3) die("bad setting '" + setting + "'");
  PassContext pc;
  pc.calib = &calib;
  pc.threads = threads;
  pc.seed = seed;
  if (!ignore.empty()) pc.selector.ignore = {ignore};
  if (!pc.selector.compile().ok()) die("selector");
  if (f[0] == "rtn" || f[0] == "gptq") {
    QuantSpec spec;
    spec.bits = std::stoi(f[1]);
    spec.group_size = std::stoll(f[2].substr(1));
    const SpecFor spec_for = [spec](const std::string&) { return std::optional<QuantSpec>(spec); };
    auto r = f[0] == "rtn" ? quantize_model_rtn(m, pc, spec_for, {}, false)
                           : quantize_model_gptq(m, pc, spec_for, {}, GptqOptions{});
    if (!r.ok()) die(r.error().message);
    return;
  }
  if (f[0] != "pal") die("unknown method in '" + setting + "'");
  nlohmann::ordered_json options = {{"bits", std::stoll(f[1])}};
  options["granularity"] = f[2].rfind("rows", 0) == 0 && f[2] != "row" ? "rows:" + f[2].substr(4) : f[2];
  for (size_t i = 3; i < f.size(); ++i) {
    if (f[i] == "w")
      options["weighted"] = true;
    else if (f[i] == "g")
      options["gptq"] = true;
    else if (f[i] == "int")
      options["int_grid"] = true;
    else if (f[i][0] == 'o')
      options["outliers"] = std::stod(f[i].substr(1));
    else if (f[i][0] == 'i')
      options["inits"] = std::stoll(f[i].substr(1));
    else
      die("unknown field '" + f[i] + "' in '" + setting + "'");
  }
  auto pass = make_pass("share.kmeans");
  if (!pass.ok()) die(pass.error().message);
  if (auto e = set_options_from_json(**pass, options)) die(e->key + ": " + e->message);
  if (auto v = (*pass)->validate_options(); !v.ok()) die(v.error().message);
  auto r = (*pass)->run(m, pc);
  if (!r.ok()) die(r.error().message);
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt = {
      {"--ctx", "256"},
      {"--chunks", "20"},
      {"--calib-samples", "32"},
      {"--calib-ctx", "256"},
      {"--threads", "0"},
      {"--seed", "1"},
      {"--out", std::filesystem::temp_directory_path().string()},
      {"--settings", "rtn/4/g128,pal/4/rows16/w,gptq/3/g128,pal/3/rows16/w/o0.005"}};
  std::string model_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--", 0) == 0 && i + 1 < argc)
      opt[a] = argv[++i];
    else
      model_path = a;
  }
  if (model_path.empty() || !opt.count("--calib") || !opt.count("--eval"))
    die("usage: see the first lines of bench_share.cpp");
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
  auto text = read_text_file(opt["--eval"]);
  if (!text.ok()) die(text.error().message);
  const int64_t ctx = std::stoll(opt["--ctx"]);
  const std::string tmp = (std::filesystem::path(opt["--out"]) / "bench_share.llmc").string();

  std::printf("| setting | bpw | file bytes | mean KLD | top-1 %% | PPL | PPL ratio | time s |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (const std::string& setting : split(opt["--settings"], ',')) {
    Model m = *base;
    const auto t0 = std::chrono::steady_clock::now();
    compress(m, setting, **calib, threads, std::stoull(opt["--seed"]), opt["--ignore"]);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (auto w = write_llmc(m, tmp, LlmcWriteOptions{}); !w.ok()) die(w.error().message);
    const uint64_t file_bytes = path_size(tmp);
    std::filesystem::remove(tmp);
    RuntimeOptions ro;
    ro.max_context = ctx;
    ro.threads = threads;
    auto rq = Runtime::create(m, ro);
    auto rr = Runtime::create(*base, ro);
    if (!rq.ok() || !rr.ok()) die("runtime");
    EvalOptions eo;
    eo.ctx = ctx;
    eo.max_chunks = std::stoll(opt["--chunks"]);
    auto e = evaluate_text(**rq, rr->get(), **tokenizer, *text, eo);
    if (!e.ok()) die(e.error().message);
    std::printf("| %s | %.3f | %llu | %.4f | %.1f | %.3f | %.4f | %.1f |\n", setting.c_str(), bpw(m),
                static_cast<unsigned long long>(file_bytes), e->kld->kld.mean, 100 * e->kld->same_top.mean, e->ppl.ppl,
                e->ppl.ppl / e->kld->ref.ppl, secs);
    std::fflush(stdout);
  }
  return 0;
}
