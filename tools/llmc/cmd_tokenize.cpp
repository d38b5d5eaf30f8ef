// llmc tokenize / llmc detokenize: text <-> token ids with a model's (or a separate) vocabulary.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include "cli_util.h"
#include "commands.h"
#include "model/tokenizer.h"

namespace llmc::cli {
namespace {

struct TokenizerArgs {
  std::string model;
  std::string tokenizer;
};

void add_tokenizer_args(CLI::App& sub, TokenizerArgs& args) {
  sub.add_option("model", args.model, "Model or vocabulary file (GGUF, .llmc, HF folder, llama2.c)")->required();
  sub.add_option("--tokenizer", args.tokenizer, "Separate tokenizer (tokenizer.bin, tokenizer.json, GGUF)");
}

Result<std::unique_ptr<Tokenizer>> open_tokenizer(const TokenizerArgs& args) {
  LoadOptions options;  // the vocabulary only: no tensor is read or decoded
  options.tokenizer_path = args.tokenizer;
  options.tensors = false;
  LLMC_ASSIGN_OR_RETURN(Model model, load_model(args.model, options));
  if (model.tokenizer.empty()) {
    return make_error(ErrorCode::kFormat, args.model, ": no vocabulary (give one with --tokenizer)");
  }
  return Tokenizer::create(model.tokenizer);
}

Result<std::string> read_all(std::istream& in, const std::string& name) {
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return make_error(ErrorCode::kIo, name, ": read failed");
  return buf.str();
}

// Ids separated by spaces, commas, brackets or newlines ("1 2 3", "[1, 2, 3]").
Result<std::vector<int32_t>> parse_ids(const std::string& text, int64_t vocab_size) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    const char c = text[pos];
    if (c == ' ' || c == ',' || c == '\n' || c == '\r' || c == '\t' || c == '[' || c == ']') {
      ++pos;
      continue;
    }
    size_t end = pos;
    while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
    if (end == pos || end - pos > 10) {
      return make_error(ErrorCode::kInvalidArgument, "--ids: expected a token id at character ", pos, ", found \"",
                        text.substr(pos, 12), "\"");
    }
    const int64_t id = std::stoll(text.substr(pos, end - pos));
    if (id >= vocab_size) {
      return make_error(ErrorCode::kInvalidArgument, "--ids: token id ", id, " outside the vocabulary of ", vocab_size);
    }
    ids.push_back(static_cast<int32_t>(id));
    pos = end;
  }
  return ids;
}

}  // namespace

RunFn setup_tokenize(CLI::App& sub) {
  struct Args {
    TokenizerArgs tok;
    std::string text;
    std::string file;
    bool bos = false;
  };
  auto args = std::make_shared<Args>();
  add_tokenizer_args(sub, args->tok);
  auto* text = sub.add_option("--text", args->text, "Text to tokenize");
  auto* file = sub.add_option("--file", args->file, "File whose bytes are tokenized")->check(CLI::ExistingFile);
  text->excludes(file);
  file->excludes(text);
  sub.add_flag("--bos", args->bos, "Prepend the BOS token");
  return [args, text, file]() -> int {
    if (text->count() == 0 && file->count() == 0) {
      std::fprintf(stderr, "llmc: error: tokenize needs --text or --file\n");
      return kExitUsage;
    }
    auto tok = open_tokenizer(args->tok);
    if (!tok.ok()) return report_error(tok.error());
    std::string input = args->text;
    if (file->count() > 0) {
      std::ifstream in(args->file, std::ios::binary);
      if (!in) return report_error(make_error(ErrorCode::kIo, args->file, ": cannot open"));
      auto all = read_all(in, args->file);
      if (!all.ok()) return report_error(all.error());
      input = std::move(all).value();
    }
    const std::vector<int32_t> ids = (*tok)->encode(input, args->bos);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) line.push_back(' ');
      line += std::to_string(ids[i]);
    }
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stdout);
    return kExitOk;
  };
}

RunFn setup_detokenize(CLI::App& sub) {
  struct Args {
    TokenizerArgs tok;
    std::string ids;
  };
  auto args = std::make_shared<Args>();
  add_tokenizer_args(sub, args->tok);
  auto* ids_opt = sub.add_option("--ids", args->ids, "Token ids, e.g. \"1 2 3\" (default: read from stdin)");
  sub.description(sub.get_description() + " (printed exactly, no newline added)");
  return [args, ids_opt]() -> int {
    auto tok = open_tokenizer(args->tok);
    if (!tok.ok()) return report_error(tok.error());
    std::string id_text = args->ids;
    if (ids_opt->count() == 0) {
      auto all = read_all(std::cin, "stdin");
      if (!all.ok()) return report_error(all.error());
      id_text = std::move(all).value();
    }
    auto ids = parse_ids(id_text, (*tok)->vocab_size());
    if (!ids.ok()) return report_error(ids.error());
    const std::string text = (*tok)->decode(*ids);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return kExitOk;
  };
}

}  // namespace llmc::cli
