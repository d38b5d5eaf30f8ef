// Target selection and registry lookup shared by every pass.
#include "passes/pass.h"

#include <omp.h>

#include <algorithm>
#include <mutex>

#include "formats/file_io.h"
#include "formats/scratch_file.h"
#include "model/arch.h"

namespace llmc {

int resolve_threads(int threads) { return threads > 0 ? threads : std::max(1, omp_get_max_threads()); }

Result<void> TargetSelector::compile() {
  auto build = [](const std::vector<std::string>& exprs, std::vector<std::regex>& out) -> Result<void> {
    out.clear();
    for (const std::string& e : exprs) {
      try {
        out.emplace_back(e, std::regex::ECMAScript);
      } catch (const std::regex_error& err) {
        return make_error(ErrorCode::kInvalidArgument, "bad tensor-name regular expression '", e, "': ", err.what());
      }
    }
    return {};
  };
  LLMC_TRY(build(targets, targets_re_));
  return build(ignore, ignore_re_);
}

bool TargetSelector::selects(const std::string& name) const {
  for (const std::regex& re : ignore_re_)
    if (std::regex_match(name, re)) return false;
  if (targets_re_.empty()) return true;
  for (const std::regex& re : targets_re_)
    if (std::regex_match(name, re)) return true;
  return false;
}

bool is_default_weight_target(const Model& model, const std::string& name) {
  const Tensor* t = model.find(name);
  if (!t || t->shape.dims.size() != 2) return false;
  const TensorRole role = tensor_role(name);
  return role == TensorRole::kLinear || role == TensorRole::kOutput || role == TensorRole::kEmbedding;
}

Result<std::unique_ptr<Pass>> make_pass(std::string_view name) {
  std::string known;
  for (const PassInfo& info : pass_registry()) {
    if (name == info.name) return info.make();
    known += known.empty() ? "" : ", ";
    known += info.name;
  }
  return make_error(ErrorCode::kInvalidArgument, "unknown pass '", name, "' (known: ", known, ")");
}

void release_row_pages(const Tensor& t, int64_t r0, int64_t r1) {
  const auto rows = [&](const Bytes& b, size_t row_bytes) {
    if (!b.empty())
      release_file_pages(b.data() + static_cast<size_t>(r0) * row_bytes, static_cast<size_t>(r1 - r0) * row_bytes);
  };
  if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node)) {
    rows(d->data, static_cast<size_t>(t.cols() * dtype_bytes(d->dtype)));
  } else if (const auto* q = std::get_if<QuantEncoding>(&t.encoding->node)) {
    const auto entries = static_cast<size_t>(quant_groups_per_row(*q, t.cols()) * dtype_bytes(q->scale_dtype));
    rows(q->codes, static_cast<size_t>(quant_row_stride(*q, t.cols())));
    rows(q->scales, entries);
    rows(q->mins, entries);
  }
}

namespace {
std::mutex& scratch_mutex() {
  static std::mutex m;
  return m;
}
std::shared_ptr<ScratchFile>& replacement_scratch() {
  static std::shared_ptr<ScratchFile> s;
  return s;
}
}  // namespace

std::shared_ptr<ScratchFile> set_replacement_scratch(std::shared_ptr<ScratchFile> scratch) {
  std::lock_guard<std::mutex> lock(scratch_mutex());
  std::swap(replacement_scratch(), scratch);
  return scratch;
}

void replace_and_release(Model& model, Tensor t) {
  std::shared_ptr<ScratchFile> scratch;
  {
    std::lock_guard<std::mutex> lock(scratch_mutex());
    scratch = replacement_scratch();
  }
  t.encoding = store_or_keep(scratch.get(), t.encoding);
  const Tensor* old = model.find(t.name);
  std::shared_ptr<const Encoding> keep = old ? old->encoding : nullptr;  // alive until released
  model.replace(std::move(t));
  if (keep) release_file_pages(*keep);
  keep.reset();
  if (scratch) trim_heap();  // the heap bytes of t (and of a built input it replaced) are free now
}

}  // namespace llmc
