// Benchmark of the low-rank passes. Prints figures; asserts nothing.
//   quality: per setting (a recipe of lowrank/quant stages) -> bpw, .llmc file size, mean KLD and PPL
//            ratio against the input model, pass time.
//     bench_lowrank quality MODEL --eval TEXT --calib TEXT [--tokenizer F] [--ctx 256] [--chunks 20]
//       [--calib-samples 32] [--calib-ctx 256] [--threads 0] [--settings name,name,...] [--dense]
//     --dense first turns every 2-D tensor into f32 Dense (a quantized GGUF's dequantized weights are
//     the base model; the reference for KLD stays the file as loaded).
//   speed: decode tok/s of a model and of its LowRank version at a parameter ratio (random f16 factors
//          of rank floor(ratio · rows · cols / (rows + cols)) for every linear weight: speed does not
//          depend on the values), with bytes per token and the fraction of measured bandwidth.
//     bench_lowrank speed MODEL [--ratio 0.5] [--threads 2] [--prompt 16] [--gen 32] [--repeat 3]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/log.h"
#include "core/lowrank.h"
#include "formats/file_io.h"
#include "formats/model_io.h"
#include "model/describe.h"
#include "model/tokenizer.h"
#include "passes/lowrank/lowrank_math.h"
#include "pipeline/pipeline.h"
#include "runtime/runtime.h"
#include "verify/bench.h"
#include "verify/perplexity.h"

using namespace llmc;
using OJson = nlohmann::ordered_json;

namespace {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "bench_lowrank: %s\n", msg.c_str());
  std::exit(1);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

class StderrSink : public LogSink {
 public:
  void log(LogLevel level, std::string_view message) override {
    if (level <= LogLevel::kWarn) std::fprintf(stderr, "%.*s\n", static_cast<int>(message.size()), message.data());
  }
  void progress(std::string_view, int64_t, int64_t, std::string_view) override {}
};

// One row of the quality table: stages as (pass, options, targets).
struct Stage {
  const char* pass;
  const char* options;  // JSON object
  std::vector<std::string> targets;
};
struct Setting {
  const char* name;
  std::vector<Stage> stages;
};

const std::vector<std::string> kFfn = {R"(blk\.\d+\.ffn_(gate|up|down)\.weight)"};
const std::vector<std::string> kAttn = {R"(blk\.\d+\.attn_(q|k|v|output)\.weight)"};
const std::vector<std::string> kVocab = {R"(token_embd\.weight|output\.weight)"};

const std::vector<Setting>& settings() {
  static const std::vector<Setting> kSettings = {
      {"svd-ffn-0.8", {{"lowrank.svd", R"({"method":"svd","rank_ratio":0.8,"factor_dtype":"f16"})", kFfn}}},
      {"asvd-ffn-0.8", {{"lowrank.svd", R"({"method":"asvd","rank_ratio":0.8,"factor_dtype":"f16"})", kFfn}}},
      {"svd-ffn-0.5", {{"lowrank.svd", R"({"method":"svd","rank_ratio":0.5,"factor_dtype":"f16"})", kFfn}}},
      {"asvd-ffn-0.5", {{"lowrank.svd", R"({"method":"asvd","rank_ratio":0.5,"factor_dtype":"f16"})", kFfn}}},
      {"svd-all-global-0.8", {{"lowrank.svd", R"({"method":"svd","target_params":0.8,"factor_dtype":"f16"})", {}}}},
      {"asvd-all-global-0.8", {{"lowrank.svd", R"({"method":"asvd","target_params":0.8,"factor_dtype":"f16"})", {}}}},
      {"asvd-all-0.8", {{"lowrank.svd", R"({"method":"asvd","rank_ratio":0.8,"factor_dtype":"f16"})", {}}}},
      {"asvd-all-energy-0.99", {{"lowrank.svd", R"({"method":"asvd","energy":0.99,"factor_dtype":"f16"})", {}}}},
      {"rtn-q4-g32", {{"quant.rtn", R"({"bits":4,"group_size":32})", {}}}},
      {"asvd-ffn-0.8+rtn-q4-g32",
       {{"lowrank.svd", R"({"method":"asvd","rank_ratio":0.8,"factor_dtype":"f16"})", kFfn},
        {"quant.rtn", R"({"bits":4,"group_size":32})", {}}}},
      {"asvd-ffn-0.8+gptq-q4-g32",
       {{"lowrank.svd", R"({"method":"asvd","rank_ratio":0.8,"factor_dtype":"f16"})", kFfn},
        {"quant.gptq", R"({"bits":4,"group_size":32})", {}}}},
      {"tucker-vocab-0.5", {{"lowrank.tucker", R"({"rank_ratio":0.5,"factor_dtype":"f16"})", kVocab}}},
      {"tucker-vocab-4way-0.5", {{"lowrank.tucker", R"({"rank_ratio":0.5,"ways":4,"factor_dtype":"f16"})", kVocab}}},
      {"svd-vocab-0.5", {{"lowrank.svd", R"({"method":"svd","rank_ratio":0.5,"factor_dtype":"f16"})", kVocab}}},
      {"tucker-attn-0.5", {{"lowrank.tucker", R"({"rank_ratio":0.5,"factor_dtype":"f16"})", kAttn}}},
      {"svd-attn-0.5", {{"lowrank.svd", R"({"method":"svd","rank_ratio":0.5,"factor_dtype":"f16"})", kAttn}}},
  };
  return kSettings;
}

double bpw(const Model& m) { return summarize_size(m).bits_per_weight(); }

int run_quality(const std::string& model_path, std::map<std::string, std::string>& opt, bool dense) {
  LoadOptions lo;
  if (opt.count("--tokenizer")) lo.tokenizer_path = opt["--tokenizer"];
  auto loaded = load_model(model_path, lo);
  if (!loaded.ok()) die(loaded.error().message);
  const Model& ref = *loaded;
  Model base = ref;
  if (dense)
    for (const Tensor& t : ref.tensors())
      if (t.shape.dims.size() == 2) base.replace(make_dense(t.name, t.shape, t.to_f32(), DType::kF32));
  auto tokenizer = Tokenizer::create(base.tokenizer);
  if (!tokenizer.ok()) die(tokenizer.error().message);
  auto text = read_text_file(opt["--eval"]);
  if (!text.ok()) die(text.error().message);
  const int threads = std::stoi(opt["--threads"]);
  const int64_t ctx = std::stoll(opt["--ctx"]);
  const std::filesystem::path tmp = std::filesystem::temp_directory_path() / "bench_lowrank";
  std::filesystem::create_directories(tmp);
  std::vector<std::string> wanted = opt.count("--settings") ? split(opt["--settings"]) : std::vector<std::string>();

  std::printf(
      "| setting | bpw | file MB | mean KLD | PPL ratio | top-1 %% | time s |\n| --- | --- | --- | --- | --- | --- | "
      "--- |\n");
  for (const Setting& s : settings()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), s.name) == wanted.end()) continue;
    Recipe recipe;
    recipe.source = s.name;
    CalibOptions co;
    co.file = opt["--calib"];
    co.samples = std::stoll(opt["--calib-samples"]);
    co.ctx = std::stoll(opt["--calib-ctx"]);
    co.seed = 1;
    recipe.calibration = co;
    for (const Stage& st : s.stages) {
      auto stage = make_stage(st.pass, OJson::parse(st.options), st.targets, {});
      if (!stage.ok()) die(stage.error().message);
      recipe.stages.push_back(std::move(stage).value());
    }
    Model m = base;
    PipelineOptions po;
    po.threads = threads;
    const auto t0 = std::chrono::steady_clock::now();
    auto result = run_pipeline(m, recipe, po);
    if (!result.ok()) die(std::string(s.name) + ": " + result.error().message);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string path = (tmp / (std::string(s.name) + ".llmc")).string();
    std::filesystem::remove(path);
    if (auto w = write_llmc(m, path, {}); !w.ok()) die(w.error().message);
    RuntimeOptions ro;
    ro.max_context = ctx;
    ro.threads = threads;
    auto rq = Runtime::create(m, ro);
    auto rr = Runtime::create(ref, ro);
    if (!rq.ok() || !rr.ok()) die("runtime");
    EvalOptions eo;
    eo.ctx = ctx;
    eo.max_chunks = std::stoll(opt["--chunks"]);
    auto e = evaluate_text(**rq, rr->get(), **tokenizer, *text, eo);
    if (!e.ok()) die(e.error().message);
    std::printf("| %s | %.3f | %.3f | %.4f | %.4f | %.1f | %.1f |\n", s.name, bpw(m),
                static_cast<double>(std::filesystem::file_size(path)) / 1e6, e->kld->kld.mean, e->kld->ppl_ratio,
                100 * e->kld->same_top.mean, secs);
    std::fflush(stdout);
    std::filesystem::remove(path);
  }
  return 0;
}

// Every linear weight of the blocks as LowRank{f16, f16} with random factors at `ratio` of its parameters.
Model random_lowrank(const Model& base, double ratio) {
  Model m = base;
  std::mt19937 rng(7);
  for (const Tensor& t : base.tensors()) {
    if (t.shape.dims.size() != 2 || t.name.rfind("blk.", 0) != 0) continue;
    const int64_t rows = t.rows(), cols = t.cols(), rank = rank_for_ratio(rows, cols, ratio);
    std::normal_distribution<float> nu(0.0f, 1.0f / std::sqrt(static_cast<float>(rank))), nv(0.0f, 0.02f);
    std::vector<float> u(static_cast<size_t>(rows * rank)), v(static_cast<size_t>(rank * cols));
    for (float& x : u) x = nu(rng);
    for (float& x : v) x = nv(rng);
    m.replace(
        Tensor{t.name, t.shape,
               std::make_shared<const Encoding>(Encoding{make_lowrank_dense(u, v, rows, rank, cols, DType::kF16)})});
  }
  return m;
}

void print_bench(const char* name, const Model& m, const BenchOptions& bo, int threads) {
  RuntimeOptions ro;
  ro.threads = threads;
  ro.max_context = bo.prompt_tokens + bo.gen_tokens + 8;
  auto rt = Runtime::create(m, ro);
  if (!rt.ok()) die(rt.error().message);
  auto r = run_bench(**rt, bo);
  if (!r.ok()) die(r.error().message);
  std::printf("| %s | %.1f | %.2f | %.2f (best %.2f) | %.1f | %.1f %% |\n", name,
              static_cast<double>(summarize_size(m).bpw_bytes) / 1e6, r->prefill_tps.median, r->decode_tps.median,
              r->decode_tps.max, static_cast<double>(r->weight_bytes_per_token) / 1e6,
              100 * r->decode_bandwidth_fraction);
  std::fflush(stdout);
}

int run_speed(const std::string& model_path, std::map<std::string, std::string>& opt) {
  auto base = load_model(model_path, LoadOptions{});
  if (!base.ok()) die(base.error().message);
  const int threads = std::stoi(opt["--threads"]);
  BenchOptions bo;
  bo.prompt_tokens = std::stoll(opt["--prompt"]);
  bo.gen_tokens = std::stoll(opt["--gen"]);
  bo.repeat = std::stoi(opt["--repeat"]);
  bo.threads = threads;
  const Model lr = random_lowrank(*base, std::stod(opt["--ratio"]));
  std::printf("| model | weight MB | prefill tok/s | decode tok/s | MB read / token | of bandwidth |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  print_bench("dense (as loaded)", *base, bo, threads);
  print_bench(str_cat("lowrank ", opt["--ratio"], " params (f16 factors)").c_str(), lr, bo, threads);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt = {{"--ctx", "256"},       {"--chunks", "20"}, {"--calib-samples", "32"},
                                            {"--calib-ctx", "256"}, {"--threads", "0"}, {"--ratio", "0.5"},
                                            {"--prompt", "16"},     {"--gen", "32"},    {"--repeat", "3"}};
  std::vector<std::string> positional;
  bool dense = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dense")
      dense = true;
    else if (a.rfind("--", 0) == 0 && i + 1 < argc)
      opt[a] = argv[++i];
    else
      positional.push_back(a);
  }
  StderrSink sink;
  set_log_sink(&sink);
  if (positional.size() == 2 && positional[0] == "quality" && opt.count("--eval") && opt.count("--calib"))
    return run_quality(positional[1], opt, dense);
  if (positional.size() == 2 && positional[0] == "speed") return run_speed(positional[1], opt);
  die("usage: see the first lines of bench/bench_lowrank.cpp");
}
