// The pass interface (DESIGN.md §3): a named model transformation with typed options declared once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model.h"

namespace llmc {

class CalibrationSet;  // pipeline/calibration.h
class ScratchFile;     // formats/scratch_file.h

// Options are declared once, in Pass::visit(); the same declaration feeds CLI flags, help text,
// recipe parsing (YAML keys = option names) and the provenance record.
// `name` is snake_case ("group_size"); the CLI flag is "--group-size".
class OptionVisitor {
 public:
  virtual ~OptionVisitor() = default;
  virtual void option(const char* name, bool& value, const char* help) = 0;
  virtual void option(const char* name, int64_t& value, const char* help) = 0;
  virtual void option(const char* name, double& value, const char* help) = 0;
  // `choices` empty = free text.
  virtual void option(const char* name, std::string& value, const char* help, std::span<const char* const> choices) = 0;
  virtual void option(const char* name, std::vector<std::string>& value, const char* help) = 0;
};

// What a pass needs from the pipeline before run().
struct PassNeeds {
  bool calibration = false;  // token sequences (PassContext::calib)
  bool teacher = false;
  bool gradients = false;
};

// Which tensors a stage applies to: regular expressions (ECMAScript, full match) over canonical
// names. Empty `targets` = the pass's default set (usually every linear weight of the blocks and
// the output head).
struct TargetSelector {
  std::vector<std::string> targets;
  std::vector<std::string> ignore;
  Result<void> compile();                       // errors name the bad expression
  bool selects(const std::string& name) const;  // after compile()
  bool has_targets() const { return !targets.empty(); }

 private:
  std::vector<std::regex> targets_re_, ignore_re_;
};

struct PassContext {
  TargetSelector selector;
  CalibrationSet* calib = nullptr;  // non-null when needs().calibration
  const Model* teacher = nullptr;   // when needs().teacher: the model as it was before the first stage
  uint64_t seed = 0;
  int threads = 0;  // 0 = all cores; results must not depend on it
};

// The thread count a pass's OpenMP regions use for `threads` (PassContext::threads: 0 = all cores).
int resolve_threads(int threads);

// What a pass did, for the summary screen and the report ("passes" array).
struct PassReport {
  std::string pass;
  nlohmann::json details = nlohmann::json::object();  // pass-specific: per-tensor choices, errors, ...
  double seconds = 0;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual std::string_view name() const = 0;  // "quant.gptq"
  virtual PassNeeds needs() const = 0;
  virtual void visit(OptionVisitor& v) = 0;
  // Checks option values and combinations (bits 9, group 0, ...) before any work: kInvalidArgument.
  virtual Result<void> validate_options() const = 0;
  // Transforms the model in place. On error the model may be partly transformed; callers discard it.
  virtual Result<PassReport> run(Model& model, PassContext& ctx) = 0;
};

// One row of the pass registry (src/passes/registry.cpp: the only list of passes).
struct PassInfo {
  const char* name;
  const char* summary;  // one line for help text
  std::unique_ptr<Pass> (*make)();
};
std::span<const PassInfo> pass_registry();
// kInvalidArgument listing the known names when `name` is unknown.
Result<std::unique_ptr<Pass>> make_pass(std::string_view name);

// Default target set of weight passes: 2-D weights of the blocks, the output head and the token
// embedding (1-D norms and biases never).
bool is_default_weight_target(const Model& model, const std::string& name);

// A pass reads its input once, so it gives back the mapped pages of each input tensor it replaces
// (release_file_pages of the old encoding, formats/file_io.h) and peak RSS follows the output,
// not the input. The caller holds the old encoding (a Tensor copy) until that returns.
// release_file_pages for rows [r0, r1) of a Dense or Quant tensor (other encodings: nothing), for
// readers that go over a mapped tensor a block of rows at a time.
void release_row_pages(const Tensor& t, int64_t r0, int64_t r1);
// model.replace(t), then release_file_pages of the encoding it replaced. While a scratch file is set
// (set_replacement_scratch), t's heap bytes move into it first: built tensors then cost RSS only
// while something reads them, and peak RSS stays below the input's size.
void replace_and_release(Model& model, Tensor t);
// Where replace_and_release puts new tensors from now on (null: they stay on the heap); returns the
// previous one. run_pipeline sets PipelineOptions::scratch for the duration of a run.
std::shared_ptr<ScratchFile> set_replacement_scratch(std::shared_ptr<ScratchFile> scratch);

}  // namespace llmc
