// llmc eval: perplexity of a model on a text file, and KLD/agreement against a reference model.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "cli_util.h"
#include "commands.h"
#include "formats/file_io.h"
#include "model/tokenizer.h"
#include "report_output.h"
#include "runtime/runtime.h"
#include "verify/perplexity.h"

namespace llmc::cli {
namespace {

struct EvalArgs {
  std::string model;
  std::string data;
  std::string ref;
  std::string tokenizer;
  int64_t ctx = 512;
  int64_t max_chunks = 0;
  int64_t batch = 256;
  int threads = 0;
  std::string activations;  // --activations (the model's runtime; the reference keeps the default)
  ReportTargets out;
  // Quality gates (0 = off): a failed gate gives exit code 3 after the reports are written.
  double max_ppl = 0;
  double max_kld = 0;
  double max_ppl_ratio = 0;
  double min_same_top = 0;
};

// One row per gate: the report value it reads (JSON pointer), its limit, and its direction.
struct Gate {
  const char* flag;
  const char* pointer;
  double EvalArgs::*limit;
  bool is_max;
};
constexpr Gate kGates[] = {
    {"--max-ppl", "/metrics/perplexity/ppl", &EvalArgs::max_ppl, true},
    {"--max-kld", "/metrics/vs_reference/kld/mean", &EvalArgs::max_kld, true},
    {"--max-ppl-ratio", "/metrics/vs_reference/ppl_ratio/value", &EvalArgs::max_ppl_ratio, true},
    {"--min-same-top", "/metrics/vs_reference/same_top/mean", &EvalArgs::min_same_top, false},
};

// Prints each failed gate to stderr; returns true when all enabled gates pass.
bool check_gates(const EvalArgs& a, const Json& report) {
  bool ok = true;
  for (const Gate& g : kGates) {
    const double limit = a.*g.limit;
    if (limit <= 0) continue;
    const Json::json_pointer ptr(g.pointer);
    if (!report.contains(ptr) || !report.at(ptr).is_number()) {
      std::fprintf(stderr, "llmc: gate %s needs %s (give --ref for reference metrics)\n", g.flag, g.pointer);
      ok = false;
      continue;
    }
    const double value = report.at(ptr).get<double>();
    if (g.is_max ? value > limit : value < limit) {
      std::fprintf(stderr, "llmc: gate failed: %s %g, value %g\n", g.flag, limit, value);
      ok = false;
    }
  }
  return ok;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_eval(const EvalArgs& a) {
  std::vector<std::string> inputs = {a.model, a.data};
  if (!a.ref.empty()) inputs.push_back(a.ref);
  if (!a.tokenizer.empty()) inputs.push_back(a.tokenizer);
  for (const std::string* path : {&a.out.json_path, &a.out.md_path}) {
    if (path->empty() || *path == "-") continue;
    if (auto ok = check_output_path(*path, inputs, a.out.force); !ok.ok()) return report_error(ok.error());
  }
  if (a.threads > 0) omp_set_num_threads(a.threads);

  const auto t0 = std::chrono::steady_clock::now();
  auto model = load_model_for_cli(a.model, a.tokenizer);
  if (!model.ok()) return report_error(model.error());
  const double load_seconds = seconds_since(t0);
  std::optional<Model> ref;
  if (!a.ref.empty()) {
    auto r = load_model_for_cli(a.ref, a.tokenizer);
    if (!r.ok()) return report_error(r.error());
    ref = std::move(r).value();
  }
  if (model->tokenizer.empty())
    return report_error(
        make_error(ErrorCode::kInvalidArgument, a.model, ": the model carries no tokenizer; pass --tokenizer FILE"));
  auto tokenizer = Tokenizer::create(model->tokenizer);
  if (!tokenizer.ok()) return report_error(with_context(tokenizer.error(), a.model + ": tokenizer"));
  auto text = read_text_file(a.data);
  if (!text.ok()) return report_error(text.error());

  RuntimeOptions ropt;
  ropt.threads = a.threads;
  ropt.max_context = a.ctx;
  RuntimeOptions model_opt = ropt;
  model_opt.quant_activations = activations_mode(a.activations);
  auto runtime = Runtime::create(*model, model_opt);
  if (!runtime.ok()) return report_error(with_context(runtime.error(), a.model));
  std::unique_ptr<Runtime> ref_runtime;
  if (ref) {
    // The reference runs as exactly as the int8 path allows (two parts for every width), whatever
    // --activations the model gets and the default's choice for a quantized reference (a GGUF).
    RuntimeOptions ref_opt = ropt;
    ref_opt.quant_activations = kernels::QuantActivations::kInt8x2;
    auto r = Runtime::create(*ref, ref_opt);
    if (!r.ok()) return report_error(with_context(r.error(), a.ref));
    ref_runtime = std::move(r).value();
  }

  EvalOptions eopt;
  eopt.ctx = a.ctx;
  eopt.max_chunks = a.max_chunks;
  eopt.score_batch = a.batch;
  auto eval = evaluate_text(**runtime, ref_runtime.get(), **tokenizer, *text, eopt);
  if (!eval.ok()) return report_error(eval.error());

  ReportParts parts;
  parts.kind = "eval";
  auto identity = model_identity_json(*model, a.model);
  if (!identity.ok()) return report_error(identity.error());
  parts.model = std::move(identity).value();
  if (ref) {
    auto ref_identity = model_identity_json(*ref, a.ref);
    if (!ref_identity.ok()) return report_error(ref_identity.error());
    parts.reference = std::move(ref_identity).value();
  }
  parts.metrics = eval_metrics_json(*eval);
  parts.metrics["data"] = a.data;
  parts.metrics["activations"] = a.activations;
  parts.machine = machine_json(detect_machine(), nullptr);
  parts.command_line = current_command_line();
  parts.load_seconds = load_seconds;
  const Json report = make_report(parts);
  const int rc = emit_report(report, a.out, inputs);
  if (rc != kExitOk) return rc;
  return check_gates(a, report) ? kExitOk : kExitGate;
}

}  // namespace

RunFn setup_eval(CLI::App& sub) {
  auto a = std::make_shared<EvalArgs>();
  sub.add_option("model", a->model, "Model to evaluate (.llmc, GGUF, safetensors folder, llama2.c)")
      ->required()
      ->check(CLI::ExistingPath);
  sub.add_option("--data", a->data, "Text file to score")->required()->check(CLI::ExistingFile);
  sub.add_option("--ctx", a->ctx, "Tokens per chunk; the second half of each chunk is scored")
      ->check(CLI::Range(int64_t{3}, int64_t{1} << 20));
  sub.add_option("--max-chunks", a->max_chunks, "Score at most N chunks (0 = all)")->check(CLI::NonNegativeNumber);
  sub.add_option("--ref", a->ref, "Reference model: adds KLD, top-1 agreement, Δp and the PPL ratio")
      ->check(CLI::ExistingPath);
  sub.add_option("--threads", a->threads, "Threads (0 = all cores)")->check(CLI::NonNegativeNumber);
  sub.add_option("--tokenizer", a->tokenizer, "Separate tokenizer file (e.g. llama2.c tokenizer.bin)")
      ->check(CLI::ExistingFile);
  add_activations_option(sub, a->activations);
  sub.add_option("--batch", a->batch, "Scored tokens per forward call (bounds logits memory)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  sub.add_option("--json", a->out.json_path, "Write the JSON report to FILE ('-' = stdout)");
  sub.add_option("--md", a->out.md_path, "Write the Markdown report to FILE ('-' = stdout)");
  sub.add_flag("--force", a->out.force, "Replace existing report files");
  sub.add_option("--max-ppl", a->max_ppl, "Gate: exit code 3 when PPL exceeds this")->check(CLI::PositiveNumber);
  sub.add_option("--max-kld", a->max_kld, "Gate: exit code 3 when the mean KLD exceeds this (needs --ref)")
      ->check(CLI::PositiveNumber);
  sub.add_option("--max-ppl-ratio", a->max_ppl_ratio, "Gate: exit code 3 when PPL/PPL(ref) exceeds this")
      ->check(CLI::PositiveNumber);
  sub.add_option("--min-same-top", a->min_same_top, "Gate: exit code 3 when top-1 agreement (0..1) is below this")
      ->check(CLI::Range(0.0, 1.0));
  return [a] { return run_eval(*a); };
}

}  // namespace llmc::cli
