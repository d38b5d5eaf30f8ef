// Hugging Face checkpoint reader: config.json + model.safetensors (single or sharded) + tokenizer.json.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/hf_common.h"
#include "formats/hf_tokenizer.h"
#include "formats/model_io.h"
#include "formats/safetensors.h"
#include "model/arch.h"

namespace llmc {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr size_t kMaxJsonFile = size_t(256) << 20;

struct DTypeRow {
  const char* safetensors;
  DType dtype;
};
const DTypeRow kDenseDTypes[] = {{"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16}};

// One mapped shard and its parsed header.
struct Shard {
  std::shared_ptr<MappedFile> file;
  SafetensorsHeader header;
};

// Where a tensor's bytes are: the shard and its header entry.
struct Located {
  const Shard* shard;
  const SafetensorsEntry* entry;
};

struct HfPaths {
  fs::path dir;
  fs::path single;  // model.safetensors, or empty when sharded
  fs::path index;   // model.safetensors.index.json, or empty
};

Result<HfPaths> resolve_paths(const std::string& path) {
  HfPaths p;
  const fs::path in(path);
  std::error_code ec;
  if (fs::is_directory(in, ec)) {
    p.dir = in;
    if (fs::exists(in / kIndexName, ec))
      p.index = in / kIndexName;
    else if (fs::exists(in / kSingleName, ec))
      p.single = in / kSingleName;
    else
      return make_error(ErrorCode::kFormat, path, ": folder has neither ", kSingleName, " nor ", kIndexName);
    return p;
  }
  p.dir = in.has_parent_path() ? in.parent_path() : fs::path(".");
  const std::string name = in.filename().string();
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (name == "config.json") return resolve_paths(p.dir.string());
  if (ends_with(".index.json"))
    p.index = in;
  else if (ends_with(".safetensors"))
    p.single = in;
  else
    return make_error(ErrorCode::kFormat, path, ": expected a folder, config.json, *.safetensors or *.index.json");
  return p;
}

Result<std::unique_ptr<Shard>> open_shard(const fs::path& path) {
  auto shard = std::make_unique<Shard>();
  LLMC_ASSIGN_OR_RETURN(shard->file, MappedFile::open(path.string()));
  LLMC_ASSIGN_OR_RETURN(shard->header, parse_safetensors(path.string(), shard->file->data(), shard->file->size()));
  return shard;
}

// Maps every shard once; returns HF tensor name -> location.
Result<std::map<std::string, Located>> locate_tensors(const HfPaths& paths,
                                                      std::vector<std::unique_ptr<Shard>>& shards) {
  std::map<std::string, Located> where;
  if (!paths.single.empty()) {
    LLMC_ASSIGN_OR_RETURN(auto shard, open_shard(paths.single));
    shards.push_back(std::move(shard));
    for (const auto& e : shards.back()->header.tensors) where[e.name] = {shards.back().get(), &e};
    return where;
  }
  const std::string index_file = paths.index.string();
  LLMC_ASSIGN_OR_RETURN(std::string text, read_text_file(index_file, kMaxJsonFile));
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return make_error(ErrorCode::kFormat, index_file, ": invalid JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    return make_error(ErrorCode::kFormat, index_file, ": no 'weight_map' object");
  std::map<std::string, size_t> shard_of_file;
  for (const auto& [tensor, file] : j["weight_map"].items()) {
    if (!file.is_string())
      return make_error(ErrorCode::kFormat, index_file, ": weight_map entry '", tensor, "' is not a file name");
    const std::string fname = file.get<std::string>();
    // A shard is a plain file name next to the index: no folders, no way out of the folder.
    if (fname.empty() || fname.find('/') != std::string::npos || fname.find('\\') != std::string::npos ||
        fname == "." || fname == "..")
      return make_error(ErrorCode::kFormat, index_file, ": weight_map entry '", tensor, "' names shard '", fname,
                        "', which is not a file name in the same folder");
    auto it = shard_of_file.find(fname);
    if (it == shard_of_file.end()) {
      LLMC_ASSIGN_OR_RETURN(auto shard, open_shard(paths.index.parent_path() / fname));
      shards.push_back(std::move(shard));
      it = shard_of_file.emplace(fname, shards.size() - 1).first;
    }
    const Shard* shard = shards[it->second].get();
    const SafetensorsEntry* entry = nullptr;
    for (const auto& e : shard->header.tensors)
      if (e.name == tensor) entry = &e;
    if (!entry)
      return make_error(ErrorCode::kFormat, index_file, ": tensor '", tensor, "' is mapped to ", fname,
                        ", which does not hold it");
    where[tensor] = {shard, entry};
  }
  return where;
}

Result<Tensor> make_tensor(const std::string& canonical, const Located& loc, const TensorSpec& spec, int64_t rope_heads,
                           int64_t head_dim) {
  const SafetensorsEntry& e = *loc.entry;
  const std::string& file = loc.shard->file->path();
  const DTypeRow* row = nullptr;
  for (const auto& r : kDenseDTypes)
    if (e.dtype == r.safetensors) row = &r;
  if (!row)
    return make_error(ErrorCode::kUnsupported, file, ": tensor '", e.name, "' has dtype ", e.dtype,
                      "; only F32, F16 and BF16 are supported");
  Shape shape{e.shape};
  if (!(shape == spec.shape))
    return make_error(ErrorCode::kShape, file, ": tensor '", e.name, "' has shape ", shape.str(), ", the config needs ",
                      spec.shape.str());
  DenseEncoding d;
  d.dtype = row->dtype;
  const uint64_t size = e.end - e.begin;
  Bytes view = loc.shard->file->bytes(loc.shard->file, e.begin, size);
  if (rope_heads > 0) {
    std::vector<uint8_t> permuted(size);
    const size_t row_bytes = size / static_cast<uint64_t>(rope_heads * head_dim);
    permute_rope_rows(view.data(), permuted.data(), rope_heads, head_dim, row_bytes, /*to_interleaved=*/true);
    d.data = Bytes::owned(std::move(permuted));
  } else if (reinterpret_cast<uintptr_t>(view.data()) % dtype_bytes(row->dtype) != 0) {
    // safetensors does not promise aligned offsets; kernels may load whole elements.
    d.data = Bytes::owned(std::vector<uint8_t>(view.data(), view.data() + size));
  } else {
    d.data = std::move(view);  // zero-copy: stays a view of the mapped shard
  }
  return Tensor{canonical, std::move(shape), std::make_shared<Encoding>(Encoding{std::move(d)})};
}

Result<std::string> read_optional_text(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::string();
  return read_text_file(path.string(), kMaxJsonFile);
}

}  // namespace

Result<Model> read_hf(const std::string& path) {
  LLMC_ASSIGN_OR_RETURN(HfPaths paths, resolve_paths(path));
  const std::string config_file = (paths.dir / "config.json").string();
  std::error_code ec;
  if (!fs::exists(config_file, ec)) return make_error(ErrorCode::kFormat, path, ": no config.json next to the weights");
  LLMC_ASSIGN_OR_RETURN(std::string config_text, read_text_file(config_file, kMaxJsonFile));
  HfConfigInfo info;
  Model model;
  LLMC_ASSIGN_OR_RETURN(model.config, parse_hf_config(config_file, config_text, &info));
  if (auto v = validate_config(model.config); !v.ok()) return with_context(v.error(), config_file);

  std::vector<std::unique_ptr<Shard>> shards;
  LLMC_ASSIGN_OR_RETURN(auto where, locate_tensors(paths, shards));
  const std::string weights = paths.single.empty() ? paths.index.string() : paths.single.string();

  // Canonical name -> HF name, refusing tensors the architecture does not have.
  std::map<std::string, std::string> hf_of;
  for (const auto& [hf_name, loc] : where) {
    if (hf_name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // buffer saved by old checkpoints
    auto canonical = hf_to_canonical_name(hf_name);
    if (!canonical) return make_error(ErrorCode::kUnsupported, weights, ": unknown tensor '", hf_name, "'");
    hf_of[*canonical] = hf_name;
  }
  std::set<std::string> used;
  for (const auto& spec : expected_tensors(model.config)) {
    auto it = hf_of.find(spec.name);
    if (it == hf_of.end()) {
      const auto hf = canonical_to_hf_name(spec.name);
      return make_error(ErrorCode::kShape, weights, ": missing tensor '", hf ? *hf : spec.name, "' (", spec.name, ")");
    }
    const int64_t heads = info.permute_qk ? rope_heads_of(spec.name, model.config) : 0;
    LLMC_ASSIGN_OR_RETURN(Tensor t, make_tensor(spec.name, where.at(it->second), spec, heads, model.config.head_dim));
    LLMC_TRY(model.add(std::move(t)));
    used.insert(spec.name);
  }
  for (const auto& [canonical, hf_name] : hf_of) {
    if (used.count(canonical)) continue;
    // Tied checkpoints sometimes also store lm_head; the embedding is what the model uses.
    if (canonical == "output.weight" && model.config.tied_embeddings) continue;
    return make_error(ErrorCode::kShape, weights, ": tensor '", hf_name, "' does not belong to a ", info.architecture,
                      " with this config");
  }

  const fs::path tok_file = paths.dir / "tokenizer.json";
  if (fs::exists(tok_file, ec)) {
    LLMC_ASSIGN_OR_RETURN(std::string tok_text, read_text_file(tok_file.string(), kMaxJsonFile));
    LLMC_ASSIGN_OR_RETURN(std::string tok_cfg, read_optional_text(paths.dir / "tokenizer_config.json"));
    HfTokenizerInfo tinfo;
    LLMC_ASSIGN_OR_RETURN(model.tokenizer, parse_hf_tokenizer(tok_file.string(), tok_text, tok_cfg, &tinfo));
    TokenizerData& tok = model.tokenizer;
    const int64_t n = static_cast<int64_t>(tok.tokens.size());
    if (n > model.config.vocab_size)
      return make_error(ErrorCode::kShape, tok_file.string(), ": ", n, " tokens but config vocab_size is ",
                        model.config.vocab_size);
    // Embedding rows past the tokenizer's last id are padding, as llama.cpp's converter names them.
    for (int64_t i = n; i < model.config.vocab_size; ++i) {
      tok.tokens.push_back(str_cat("[PAD", i, "]"));
      if (!tok.scores.empty()) tok.scores.push_back(0.0f);
      tok.token_types.push_back(static_cast<int32_t>(TokenType::kUnused));
    }
    if (tok.bos_id < 0 && info.bos_token_id >= 0 && info.bos_token_id < model.config.vocab_size)
      tok.bos_id = static_cast<int32_t>(info.bos_token_id);
    if (tok.eos_id < 0 && info.eos_token_id >= 0 && info.eos_token_id < model.config.vocab_size)
      tok.eos_id = static_cast<int32_t>(info.eos_token_id);
    if (!tinfo.pre_regex.empty()) model.metadata["tokenizer.pre_regex"] = tinfo.pre_regex;
    if (!tinfo.chat_template.empty()) model.metadata["tokenizer.chat_template"] = tinfo.chat_template;
  } else {
    log_warn(path, ": no tokenizer.json; the model has no vocabulary");
  }
  model.metadata["hf.architecture"] = info.architecture;
  if (auto v = validate_model(model); !v.ok()) return with_context(v.error(), path);
  return model;
}

Result<TokenizerData> read_hf_tokenizer(const std::string& tokenizer_json_path) {
  LLMC_ASSIGN_OR_RETURN(std::string text, read_text_file(tokenizer_json_path, kMaxJsonFile));
  const fs::path p(tokenizer_json_path);
  LLMC_ASSIGN_OR_RETURN(std::string cfg, read_optional_text(p.parent_path() / "tokenizer_config.json"));
  return parse_hf_tokenizer(tokenizer_json_path, text, cfg);
}

}  // namespace llmc
