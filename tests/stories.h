// Test helper: the stories260K fixture loaded with its tokenizer.
#pragma once

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "formats/model_io.h"
#include "model/tokenizer.h"
#include "test_util.h"

namespace llmc::test {

// stories260K with its tokenizer (tok512.bin); empty (no tokenizer) when the fixtures are missing.
struct Stories {
  Model model;
  std::unique_ptr<Tokenizer> tokenizer;
};
inline Stories load_stories() {
  const std::string bin = fixture("models/stories260K/stories260K.bin");
  const std::string tok = fixture("models/stories260K/tok512.bin");
  if (bin.empty() || tok.empty()) return {};
  LoadOptions opt;
  opt.tokenizer_path = tok;
  auto model = load_model(bin, opt);
  REQUIRE(model.ok());
  auto tokenizer = Tokenizer::create(model->tokenizer);
  REQUIRE(tokenizer.ok());
  return {std::move(model).value(), std::move(tokenizer).value()};
}

}  // namespace llmc::test
