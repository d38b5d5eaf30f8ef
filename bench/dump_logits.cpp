// Debug tool for peer comparisons: runs Runtime::forward over given token ids and writes the
// logits of every position as raw little-endian f32, [n_ids, vocab] row-major.
// With --greedy N it instead feeds IDS as a prompt, then appends N greedy (first argmax) tokens
// one at a time through the KV cache, and writes their ids as text (no stop tokens).
//   --act-q8 G rounds every linear layer's input to int8 in groups of G (emulates ggml's q8_0 dot).
// Usage: dump_logits MODEL --ids-file IDS --out FILE [--greedy N] [--act-q8 G] [--tokenizer FILE] [--threads N]
//   IDS holds decimal token ids separated by whitespace or commas (the first is usually BOS).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "formats/model_io.h"
#include "runtime/runtime.h"

using namespace llmc;

namespace {

struct Args {
  std::string model;
  std::string ids_file;
  std::string out;
  std::string tokenizer;
  int threads = 0;
  int64_t greedy = 0;
  int64_t act_q8 = 0;  // RuntimeOptions::activation_q8_group
};

Result<std::vector<int32_t>> read_ids(const std::string& path, int64_t vocab) {
  std::ifstream in(path);
  if (!in) return make_error(ErrorCode::kIo, path, ": cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  for (char& c : text)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream words(text);
  std::vector<int32_t> ids;
  long long id = 0;
  while (words >> id) {
    if (id < 0 || id >= vocab)
      return make_error(ErrorCode::kInvalidArgument, path, ": token id ", id, " outside [0, ", vocab, ")");
    ids.push_back(static_cast<int32_t>(id));
  }
  if (!words.eof()) return make_error(ErrorCode::kInvalidArgument, path, ": expected decimal token ids");
  if (ids.empty()) return make_error(ErrorCode::kInvalidArgument, path, ": no token ids");
  return ids;
}

Result<void> run_greedy(const Args& a, Runtime& runtime, std::vector<int32_t> ids) {
  const auto vocab = static_cast<size_t>(runtime.vocab_size());
  std::vector<float> logits(vocab);
  LLMC_TRY(runtime.forward(ids, 0, logits.data(), /*all_logits=*/false));
  std::string text;
  for (int64_t i = 0; i < a.greedy; ++i) {
    const auto next = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    text += std::to_string(next) + "\n";
    const auto pos = static_cast<int64_t>(ids.size());
    ids.push_back(next);
    if (i + 1 < a.greedy) LLMC_TRY(runtime.forward({&ids.back(), 1}, pos, logits.data(), false));
  }
  std::ofstream out(a.out, std::ios::trunc);
  if (!(out << text)) return make_error(ErrorCode::kIo, a.out, ": write failed");
  return {};
}

Result<void> run(const Args& a) {
  LoadOptions lo;
  lo.tokenizer_path = a.tokenizer;
  LLMC_ASSIGN_OR_RETURN(Model model, load_model(a.model, lo));
  LLMC_ASSIGN_OR_RETURN(std::vector<int32_t> ids, read_ids(a.ids_file, model.config.vocab_size));
  RuntimeOptions ro;
  ro.threads = a.threads;
  ro.activation_q8_group = a.act_q8;
  ro.max_context = static_cast<int64_t>(ids.size()) + a.greedy;
  LLMC_ASSIGN_OR_RETURN(auto runtime, Runtime::create(model, ro));
  const int64_t vocab = runtime->vocab_size();
  if (a.greedy > 0) return run_greedy(a, *runtime, ids);
  std::vector<float> logits(ids.size() * static_cast<size_t>(vocab));
  LLMC_TRY(runtime->forward(ids, 0, logits.data(), /*all_logits=*/true));
  std::ofstream out(a.out, std::ios::binary | std::ios::trunc);
  if (!out) return make_error(ErrorCode::kIo, a.out, ": cannot create");
  out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
  if (!out) return make_error(ErrorCode::kIo, a.out, ": write failed");
  std::fprintf(stderr, "dump_logits: %zu positions x %lld logits -> %s\n", ids.size(), static_cast<long long>(vocab),
               a.out.c_str());
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--ids-file" && has_value) {
      a.ids_file = argv[++i];
    } else if (arg == "--out" && has_value) {
      a.out = argv[++i];
    } else if (arg == "--tokenizer" && has_value) {
      a.tokenizer = argv[++i];
    } else if (arg == "--act-q8" && has_value) {
      a.act_q8 = std::atoll(argv[++i]);
    } else if (arg == "--greedy" && has_value) {
      a.greedy = std::atoll(argv[++i]);
    } else if (arg == "--threads" && has_value) {
      a.threads = std::atoi(argv[++i]);
    } else if (a.model.empty() && arg.rfind("--", 0) != 0) {
      a.model = arg;
    } else {
      a.model.clear();
      break;
    }
  }
  if (a.model.empty() || a.ids_file.empty() || a.out.empty() || a.greedy < 0 || a.greedy > 100000 || a.act_q8 < 0) {
    std::fprintf(stderr,
                 "usage: dump_logits MODEL --ids-file IDS --out FILE [--greedy N] [--act-q8 G] [--tokenizer FILE] "
                 "[--threads N]\n");
    return 2;
  }
  if (auto ok = run(a); !ok) {
    std::fprintf(stderr, "dump_logits: %s\n", ok.error().message.c_str());
    return 1;
  }
  return 0;
}
