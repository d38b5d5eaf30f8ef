// prune.heads: remove attention heads (GQA-aware: query heads within every KV group, or whole KV
// groups) and shrink the layer's head counts, so the result is a smaller dense model.
#include <algorithm>

#include "model/arch.h"
#include "passes/pass.h"
#include "passes/prune/prune_passes.h"
#include "passes/prune/structured.h"

namespace llmc {
namespace {

constexpr const char* kUnits[] = {"query", "kv_group"};

// Rows [u * size, (u + 1) * size) for every u in `units`.
std::vector<int64_t> spans_of(const std::vector<int64_t>& units, int64_t size) {
  std::vector<int64_t> out;
  for (int64_t u : units)
    for (int64_t i = 0; i < size; ++i) out.push_back(u * size + i);
  return out;
}

// query: a unit is a query head; the buckets are the KV groups, and one step removes the least
// important query head of every group, so all groups keep the same number (what the attention
// kernel's head -> group mapping h / (heads / kv_heads) needs). kv_group: a unit is a KV group
// (its key/value head and all its query heads).
class AttentionHeads final : public StructuredUnits {
 public:
  explicit AttentionHeads(bool whole_groups) : whole_groups_(whole_groups) {}
  const char* what() const override { return whole_groups_ ? "KV groups" : "heads"; }
  const char* out_proj() const override { return "attn_output.weight"; }

  LayerUnits units(const Model& model, int64_t layer) const override {
    const ModelConfig& c = model.config;
    const int64_t heads = c.heads(layer), kv = c.kv_heads(layer), rep = heads / kv, hd = c.head_dim;
    LayerUnits u;
    if (whole_groups_) {
      u.buckets.emplace_back();
      for (int64_t g = 0; g < kv; ++g) {
        u.buckets[0].push_back(g);
        std::vector<int64_t> q_heads(static_cast<size_t>(rep));
        for (int64_t i = 0; i < rep; ++i) q_heads[i] = g * rep + i;
        u.out_cols.push_back(spans_of(q_heads, hd));
      }
    } else {
      for (int64_t g = 0; g < kv; ++g) {
        u.buckets.emplace_back();
        for (int64_t i = 0; i < rep; ++i) u.buckets.back().push_back(g * rep + i);
      }
      for (int64_t h = 0; h < heads; ++h) u.out_cols.push_back(spans_of({h}, hd));
    }
    u.score.assign(u.out_cols.size(), 0.0);
    return u;
  }

  Result<void> apply(Model& model, int64_t layer, const std::vector<int64_t>& kept,
                     const std::vector<float>* w_out) const override {
    const ModelConfig& c = model.config;
    const int64_t rep = c.heads(layer) / c.kv_heads(layer), hd = c.head_dim;
    std::vector<int64_t> q_heads = kept, kv_heads;
    if (whole_groups_) {
      kv_heads = kept;
      q_heads.clear();
      for (int64_t g : kept)
        for (int64_t i = 0; i < rep; ++i) q_heads.push_back(g * rep + i);
    }
    const std::vector<int64_t> q_rows = spans_of(q_heads, hd), kv_rows = spans_of(kv_heads, hd);
    auto slice_rows = [&](const char* suffix, const std::vector<int64_t>& rows) {
      if (const Tensor* t = model.find(layer_tensor_name(layer, suffix)))
        replace_and_release(model, slice_tensor(*t, rows, {}));
    };
    slice_rows("attn_q.weight", q_rows);
    slice_rows("attn_q.bias", q_rows);
    if (whole_groups_)
      for (const char* s : {"attn_k.weight", "attn_v.weight", "attn_k.bias", "attn_v.bias"}) slice_rows(s, kv_rows);
    const Tensor& wo = model.get(layer_tensor_name(layer, "attn_output.weight"));
    if (w_out) {
      DType dtype = DType::kF32;
      if (const auto* d = std::get_if<DenseEncoding>(&wo.encoding->node)) dtype = d->dtype;
      replace_and_release(model,
                          make_dense(wo.name, Shape{{wo.rows(), static_cast<int64_t>(q_rows.size())}}, *w_out, dtype));
    } else {
      replace_and_release(model, slice_tensor(wo, {}, q_rows));
    }
    std::vector<int64_t> heads = c.all_heads(), kvs = c.all_kv_heads();
    heads[layer] = static_cast<int64_t>(q_heads.size());
    if (whole_groups_) kvs[layer] = static_cast<int64_t>(kv_heads.size());
    model.config.set_layer_widths(std::move(heads), std::move(kvs), model.config.all_hidden());
    return {};
  }

 private:
  bool whole_groups_;
};

class PruneHeads final : public Pass {
 public:
  std::string_view name() const override { return "prune.heads"; }
  PassNeeds needs() const override { return {.calibration = options_.calibrated()}; }
  void visit(OptionVisitor& v) override {
    options_.visit(v);
    v.option("unit", unit_,
             "query: query heads, the same number from every KV group; kv_group: whole KV groups (key/value head "
             "and its query heads)",
             kUnits);
  }
  Result<void> validate_options() const override {
    LLMC_TRY(options_.validate());
    if (std::find(std::begin(kUnits), std::end(kUnits), unit_) == std::end(kUnits))
      return make_error(ErrorCode::kInvalidArgument, "unit '", unit_, "' is not query or kv_group");
    return {};
  }
  Result<PassReport> run(Model& model, PassContext& ctx) override {
    LLMC_TRY(validate_options());
    return run_structured(model, ctx, options_, AttentionHeads(unit_ == "kv_group"), name());
  }

 private:
  StructuredOptions options_;
  std::string unit_ = "query";
};

}  // namespace

std::unique_ptr<Pass> make_prune_heads() { return std::make_unique<PruneHeads>(); }

}  // namespace llmc
