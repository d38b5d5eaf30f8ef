// llmc generate: run a model on a prompt and stream the continuation to stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli_util.h"
#include "commands.h"
#include "model/tokenizer.h"
#include "runtime/runtime.h"
#include "runtime/sampling.h"

namespace llmc::cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  int64_t steps = 256;
  SamplingOptions sampling;
  int beams = 1;
  int threads = 0;
  std::string activations;
};

int run_generate(const GenerateArgs& a) {
  if (auto ok = validate_sampling(a.sampling); !ok) return report_error(ok.error());
  if (a.steps <= 0 || a.beams < 1 || a.beams > 64 || a.threads < 0)
    return report_error(make_error(ErrorCode::kInvalidArgument, "-n must be > 0, --beam in [1, 64], --threads >= 0"));
  auto model = load_model_for_cli(a.model, a.tokenizer);
  if (!model) return report_error(model.error());
  auto tok = Tokenizer::create(model->tokenizer);
  if (!tok) return report_error(with_context(tok.error(), "tokenizer of " + a.model));
  const Tokenizer& tokenizer = **tok;

  // Positions as llama2.c's run.c counts them: -n is the total including the prompt (and BOS).
  int64_t steps = a.steps;
  if (model->config.context_length > 0) steps = std::min(steps, model->config.context_length);
  std::vector<int32_t> prompt = tokenizer.encode(a.prompt, tokenizer.data().add_bos && tokenizer.bos() >= 0);
  if (prompt.empty()) {
    if (tokenizer.bos() < 0)
      return report_error(make_error(ErrorCode::kInvalidArgument, "empty prompt and the tokenizer has no BOS token"));
    prompt.push_back(tokenizer.bos());
  }
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  if (n_prompt > steps)
    return report_error(make_error(ErrorCode::kInvalidArgument, "the prompt has ", n_prompt,
                                   " tokens; -n (total positions) must be at least that"));
  std::vector<int32_t> stops;
  if (tokenizer.eos() >= 0) stops.push_back(tokenizer.eos());
  if (tokenizer.bos() >= 0) stops.push_back(tokenizer.bos());  // run.c stops when BOS comes next
  auto is_stop = [&](int32_t t) { return std::find(stops.begin(), stops.end(), t) != stops.end(); };

  RuntimeOptions ro;
  ro.threads = a.threads;
  ro.max_context = steps;
  ro.quant_activations = activations_mode(a.activations);
  std::fputs(a.prompt.c_str(), stdout);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t generated = 0;
  if (a.beams > 1) {
    std::vector<std::unique_ptr<Runtime>> owned;
    std::vector<Runtime*> rts;
    for (int b = 0; b < a.beams; ++b) {
      auto rt = Runtime::create(*model, ro);
      if (!rt) return report_error(rt.error());
      rts.push_back(rt->get());
      owned.push_back(std::move(*rt));
    }
    BeamOptions bo{a.beams, steps + 1, stops};  // the same token count as the sampling path
    auto result = beam_search(rts, prompt, bo);
    if (!result) return report_error(result.error());
    int32_t prev = prompt.back();
    for (int32_t t : result->tokens) {
      std::fputs(tokenizer.decode_piece(prev, t).c_str(), stdout);
      prev = t;
    }
    generated = static_cast<int64_t>(result->tokens.size());
  } else {
    auto rt = Runtime::create(*model, ro);
    if (!rt) return report_error(rt.error());
    Runtime& runtime = **rt;
    Sampler sampler(a.sampling);
    std::vector<float> logits(static_cast<size_t>(runtime.vocab_size()));
    if (auto ok = runtime.forward(prompt, 0, logits.data(), false); !ok) return report_error(ok.error());
    int32_t prev = prompt.back();
    // As run.c: positions 0..steps-1 are forwarded and the token picked after each one is
    // printed, so -n 200 from BOS prints 200 tokens (golden.json); the last is never forwarded.
    for (int64_t pos = n_prompt - 1; pos < steps; ++pos) {
      const int32_t next = sampler.sample(logits);
      if (is_stop(next)) break;
      std::fputs(tokenizer.decode_piece(prev, next).c_str(), stdout);
      std::fflush(stdout);
      ++generated;
      prev = next;
      if (pos + 1 < steps)
        if (auto ok = runtime.forward({&next, 1}, pos + 1, logits.data(), false); !ok) return report_error(ok.error());
    }
  }
  std::fputs("\n", stdout);
  std::fflush(stdout);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "llmc: %lld prompt + %lld generated tokens in %.3f s (%.1f tok/s)\n",
               static_cast<long long>(n_prompt), static_cast<long long>(generated), secs,
               secs > 0 ? static_cast<double>(generated) / secs : 0.0);
  return kExitOk;
}

}  // namespace

RunFn setup_generate(CLI::App& sub) {
  auto a = std::make_shared<GenerateArgs>();
  sub.add_option("model", a->model, "Model file (.llmc, .gguf, safetensors folder, llama2.c .bin)")->required();
  sub.add_option("--tokenizer", a->tokenizer, "Tokenizer file when the model has none (llama2.c tokenizer.bin)");
  sub.add_option("--prompt", a->prompt, "Text to continue (default: start from BOS)");
  sub.add_option("-n,--steps", a->steps, "Total positions including the prompt and BOS (as llama2.c -n)")
      ->capture_default_str();
  sub.add_option("--temp", a->sampling.temperature, "Sampling temperature; 0 = greedy")->capture_default_str();
  sub.add_option("--top-k", a->sampling.top_k, "Sample among the k most likely tokens; 0 = all")->capture_default_str();
  sub.add_option("--top-p", a->sampling.top_p, "Nucleus sampling mass; 1 = off")->capture_default_str();
  sub.add_option("--beam", a->beams, "Beam search with B hypotheses (ignores sampling options)")->capture_default_str();
  sub.add_option("--seed", a->sampling.seed, "Random seed for sampling")->capture_default_str();
  sub.add_option("--threads", a->threads, "CPU threads; 0 = all cores")->capture_default_str();
  add_activations_option(sub, a->activations);
  return [a] { return run_generate(*a); };
}

}  // namespace llmc::cli
