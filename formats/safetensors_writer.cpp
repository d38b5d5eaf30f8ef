// Hugging Face folder writer: model.safetensors (HF names, q/k back in rotate-half order),
// config.json, tokenizer.json/tokenizer_config.json, generation_config.json; replaced atomically.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/hf_common.h"
#include "formats/hf_tokenizer.h"
#include "formats/model_io.h"
#include "model/arch.h"

namespace llmc {

namespace {

namespace fs = std::filesystem;
using OrderedJson = nlohmann::ordered_json;

struct OutDTypeRow {
  ExportDType option;
  DType dtype;
  const char* safetensors;
  const char* torch;
};
const OutDTypeRow kOutDTypes[] = {
    {ExportDType::kF32, DType::kF32, "F32", "float32"},
    {ExportDType::kF16, DType::kF16, "F16", "float16"},
    {ExportDType::kBF16, DType::kBF16, "BF16", "bfloat16"},
};
const OutDTypeRow& out_row(DType d) {
  for (const auto& r : kOutDTypes)
    if (r.dtype == d) return r;
  return kOutDTypes[0];
}

// One tensor as it goes into model.safetensors.
struct Planned {
  const Tensor* tensor;
  std::string hf_name;
  DType dtype;
  int64_t rope_heads;  // > 0: rows go back from interleaved to rotate-half order
  uint64_t bytes;
};

// Bytes of `t` in `dtype`, q/k rows un-permuted when rope_heads > 0.
std::vector<uint8_t> tensor_bytes(const Planned& p, int64_t head_dim) {
  const Tensor& t = *p.tensor;
  std::vector<uint8_t> out(p.bytes);
  const auto* dense = std::get_if<DenseEncoding>(&t.encoding->node);
  if (dense && dense->dtype == p.dtype) {
    std::memcpy(out.data(), dense->data.data(), out.size());
  } else {
    const std::vector<float> f = t.to_f32();
    if (p.dtype == DType::kF32) {
      std::memcpy(out.data(), f.data(), out.size());
    } else {
      for (size_t i = 0; i < f.size(); ++i) {
        const uint16_t h = p.dtype == DType::kF16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
    }
  }
  if (p.rope_heads > 0) {
    std::vector<uint8_t> hf(out.size());
    permute_rope_rows(out.data(), hf.data(), p.rope_heads, head_dim, out.size() / (p.rope_heads * head_dim),
                      /*to_interleaved=*/false);
    out.swap(hf);
  }
  return out;
}

Result<void> write_text(const fs::path& path, const std::string& text) {
  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path.string()));
  LLMC_TRY(out->write(text.data(), text.size()));
  return out->commit();
}

Result<void> write_model_safetensors(const fs::path& path, const std::vector<Planned>& plan, int64_t head_dim) {
  // Header: {"__metadata__": {"format": "pt"}, name: {dtype, shape, data_offsets}, ...}, padded
  // with spaces to a multiple of 8 so the data buffer (and every tensor here) starts aligned.
  OrderedJson header = {{"__metadata__", {{"format", "pt"}}}};
  uint64_t offset = 0;
  for (const auto& p : plan) {
    header[p.hf_name] = {{"dtype", out_row(p.dtype).safetensors},
                         {"shape", p.tensor->shape.dims},
                         {"data_offsets", {offset, offset + p.bytes}}};
    offset += p.bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  LLMC_ASSIGN_OR_RETURN(auto out, AtomicOutput::create(path.string()));
  const uint64_t n = text.size();
  LLMC_TRY(out->write(&n, 8));
  LLMC_TRY(out->write(text.data(), text.size()));
  for (const auto& p : plan) {
    const std::vector<uint8_t> bytes = tensor_bytes(p, head_dim);
    LLMC_TRY(out->write(bytes.data(), bytes.size()));
    release_file_pages(*p.tensor->encoding);  // a mapped tensor (input or scratch) is read once here
  }
  return out->commit();
}

// A temporary folder next to the target that is removed unless released.
struct TempFolder {
  fs::path path;
  ~TempFolder() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

// Puts `tmp` in place of `dir`: an existing `dir` is first renamed aside, then removed, so at no
// point is there a half-written folder under the target name.
Result<void> replace_folder(const fs::path& tmp, const fs::path& dir) {
  std::error_code ec;
  fs::path aside;
  if (fs::exists(fs::symlink_status(dir, ec))) {
    std::string tmpl = dir.string() + ".old-XXXXXX";
    if (!::mkdtemp(tmpl.data()))
      return make_error(ErrorCode::kIo, dir.string(), ": cannot create backup name: ", std::strerror(errno));
    aside = tmpl;
    fs::remove(aside, ec);
    fs::rename(dir, aside, ec);
    if (ec) return make_error(ErrorCode::kIo, dir.string(), ": cannot move the existing output aside: ", ec.message());
  }
  fs::rename(tmp, dir, ec);
  if (ec) {
    std::error_code ec2;
    if (!aside.empty()) fs::rename(aside, dir, ec2);
    return make_error(ErrorCode::kIo, dir.string(), ": cannot rename the finished folder into place: ", ec.message());
  }
  if (!aside.empty()) fs::remove_all(aside, ec);
  return {};
}

}  // namespace

Result<void> write_safetensors(const Model& model, const std::string& dir, const SafetensorsWriteOptions& options) {
  if (auto v = validate_model(model); !v.ok()) return with_context(v.error(), dir);
  const ModelConfig& c = model.config;
  const OutDTypeRow* forced = nullptr;
  if (options.dtype != ExportDType::kKeep) {
    for (const auto& r : kOutDTypes)
      if (r.option == options.dtype) forced = &r;
    if (!forced)
      return make_error(ErrorCode::kInvalidArgument, dir, ": safetensors export supports f32, f16 and bf16, not ",
                        export_dtype_name(options.dtype));
  }
  std::vector<Planned> plan;
  DType widest = DType::kBF16;
  for (const auto& spec : expected_tensors(c)) {
    const Tensor& t = model.get(spec.name);
    const auto hf = canonical_to_hf_name(spec.name);
    if (!hf) return make_error(ErrorCode::kInternal, "no Hugging Face name for tensor '", spec.name, "'");
    DType dtype = DType::kF32;  // quantized tensors are decoded: safetensors has no such types
    if (forced)
      dtype = forced->dtype;
    else if (const auto* d = std::get_if<DenseEncoding>(&t.encoding->node))
      dtype = d->dtype;
    else
      log_info("tensor '", t.name, "' (", describe_encoding(*t.encoding), ") is written decoded as F32");
    if (dtype == DType::kF32 || (dtype == DType::kF16 && widest == DType::kBF16)) widest = dtype;
    const int64_t heads = c.rope_style == RopeStyle::kInterleaved ? rope_heads_of(spec.name, c) : 0;
    plan.push_back({&t, *hf, dtype, heads, static_cast<uint64_t>(t.numel()) * dtype_bytes(dtype)});
  }
  LLMC_ASSIGN_OR_RETURN(std::string config_json, hf_config_json(c, model.tokenizer, out_row(widest).torch));

  const fs::path target = fs::path(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (parent / (target.filename().string() + ".tmp-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data()))
    return make_error(ErrorCode::kIo, dir, ": cannot create temporary folder: ", std::strerror(errno));
  TempFolder tmp{tmpl};
  std::error_code ec;
  fs::permissions(tmp.path,
                  fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                      fs::perms::others_exec,
                  ec);

  LLMC_TRY(write_model_safetensors(tmp.path / "model.safetensors", plan, c.head_dim));
  LLMC_TRY(write_text(tmp.path / "config.json", config_json));
  const TokenizerData& tok = model.tokenizer;
  if (tok.kind == TokenizerKind::kBytePairGpt2 && !tok.empty()) {
    LLMC_ASSIGN_OR_RETURN(std::string tok_json, hf_tokenizer_json(tok));
    LLMC_TRY(write_text(tmp.path / "tokenizer.json", tok_json));
    LLMC_TRY(write_text(tmp.path / "tokenizer_config.json", hf_tokenizer_config_json(tok, c.context_length)));
  } else if (!tok.empty()) {
    log_warn(dir, ": tokenizer.json export supports byte-level BPE only; the folder has no tokenizer");
  }
  OrderedJson gen = {{"_from_model_config", true}};
  if (tok.bos_id >= 0) gen["bos_token_id"] = tok.bos_id;
  if (tok.eos_id >= 0) gen["eos_token_id"] = tok.eos_id;
  LLMC_TRY(write_text(tmp.path / "generation_config.json", gen.dump(2)));

  LLMC_TRY(replace_folder(tmp.path, target));
  tmp.path.clear();
  return {};
}

}  // namespace llmc
