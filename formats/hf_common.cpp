// Hugging Face <-> canonical tensor names, config.json fields and the q/k RoPE row permutation.
#include "formats/hf_common.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

namespace llmc {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

struct NameRow {
  const char* hf;
  const char* canonical;
};
// Per layer: "model.layers.N.<hf>" <-> "blk.N.<canonical>".
const NameRow kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
const NameRow kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};
constexpr const char* kHfLayerPrefix = "model.layers.";
constexpr const char* kCanonicalLayerPrefix = "blk.";

// Splits "<prefix>N.<rest>" into N and rest; false unless N is a plain decimal < 100000.
bool split_layer(const std::string& name, const char* prefix, int64_t& layer, std::string& rest) {
  const size_t plen = std::strlen(prefix);
  if (name.compare(0, plen, prefix) != 0) return false;
  size_t i = plen;
  int64_t n = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i - plen < 5) n = n * 10 + (name[i++] - '0');
  if (i == plen || i >= name.size() || name[i] != '.' || (name[plen] == '0' && i - plen > 1)) return false;
  layer = n;
  rest = name.substr(i + 1);
  return true;
}

std::optional<std::string> map_name(const std::string& name, bool to_canonical) {
  for (const auto& row : kGlobalNames)
    if (name == (to_canonical ? row.hf : row.canonical)) return std::string(to_canonical ? row.canonical : row.hf);
  int64_t layer = 0;
  std::string rest;
  if (!split_layer(name, to_canonical ? kHfLayerPrefix : kCanonicalLayerPrefix, layer, rest)) return std::nullopt;
  for (const auto& row : kLayerNames)
    if (rest == (to_canonical ? row.hf : row.canonical))
      return str_cat(to_canonical ? kCanonicalLayerPrefix : kHfLayerPrefix, layer, ".",
                     to_canonical ? row.canonical : row.hf);
  return std::nullopt;
}

struct ArchRow {
  const char* architecture;
  const char* model_type;
  ModelFamily family;
  RopeStyle rope_style;  // HF weights are rotate-half; llama-family becomes interleaved on load
  bool qkv_bias;
  int64_t default_context;
};
const ArchRow kArchRows[] = {
    {"LlamaForCausalLM", "llama", ModelFamily::kLlama, RopeStyle::kInterleaved, false, 2048},
    {"MistralForCausalLM", "mistral", ModelFamily::kLlama, RopeStyle::kInterleaved, false, 4096 * 32},
    {"Qwen2ForCausalLM", "qwen2", ModelFamily::kQwen2, RopeStyle::kNeox, true, 32768},
};

struct RopeTypeRow {
  const char* name;
  RopeScalingType type;
};
const RopeTypeRow kRopeTypes[] = {
    {"default", RopeScalingType::kNone},
    {"linear", RopeScalingType::kLinear},
    {"llama3", RopeScalingType::kLlama3},
};

// Reads config keys with type and range checks; every error names the file and the key.
class ConfigReader {
 public:
  ConfigReader(const std::string& file, const Json& j) : file_(file), j_(j) {}

  Result<int64_t> integer(const char* key, std::optional<int64_t> fallback, int64_t lo = 1,
                          int64_t hi = int64_t(1) << 30) const {
    const Json* v = find(key);
    if (!v) {
      if (fallback) return *fallback;
      return make_error(ErrorCode::kFormat, file_, ": missing config key '", key, "'");
    }
    if (!v->is_number_integer())
      return make_error(ErrorCode::kFormat, file_, ": config key '", key, "' is not an integer");
    const int64_t x =
        v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
    if (x < lo || x > hi)
      return make_error(ErrorCode::kFormat, file_, ": config key '", key, "' = ", x, " is outside [", lo, ", ", hi,
                        "]");
    return x;
  }
  Result<double> number(const char* key, double fallback, const Json* obj = nullptr) const {
    const Json* v = find(key, obj);
    if (!v) return fallback;
    if (!v->is_number()) return make_error(ErrorCode::kFormat, file_, ": config key '", key, "' is not a number");
    return v->get<double>();
  }
  Result<bool> boolean(const char* key, bool fallback) const {
    const Json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) return make_error(ErrorCode::kFormat, file_, ": config key '", key, "' is not true/false");
    return v->get<bool>();
  }
  // Present and not null.
  const Json* find(const char* key, const Json* obj = nullptr) const {
    const Json& o = obj ? *obj : j_;
    auto it = o.find(key);
    return it == o.end() || it->is_null() ? nullptr : &*it;
  }
  const std::string& file() const { return file_; }

 private:
  const std::string& file_;
  const Json& j_;
};

Result<RopeScaling> parse_rope_scaling(const ConfigReader& r) {
  RopeScaling s;
  const Json* j = r.find("rope_scaling");
  if (!j) return s;
  if (!j->is_object()) return make_error(ErrorCode::kFormat, r.file(), ": rope_scaling is not an object");
  std::string type;
  for (const char* key : {"rope_type", "type"})
    if (const Json* t = r.find(key, j); t && t->is_string()) type = t->get<std::string>();
  const RopeTypeRow* row = nullptr;
  for (const auto& rt : kRopeTypes)
    if (type == rt.name) row = &rt;
  if (!row) return make_error(ErrorCode::kUnsupported, r.file(), ": rope_scaling type '", type, "' is not supported");
  s.type = row->type;
  LLMC_ASSIGN_OR_RETURN(double factor, r.number("factor", 1.0, j));
  LLMC_ASSIGN_OR_RETURN(double low, r.number("low_freq_factor", 1.0, j));
  LLMC_ASSIGN_OR_RETURN(double high, r.number("high_freq_factor", 4.0, j));
  LLMC_ASSIGN_OR_RETURN(double orig, r.number("original_max_position_embeddings", 8192, j));
  if (!(factor > 0 && factor < 1e6) || !(low > 0 && low < 1e6) || !(high > 0 && high < 1e6) ||
      !(orig >= 1 && orig < 1e9))
    return make_error(ErrorCode::kFormat, r.file(), ": rope_scaling values out of range");
  s.factor = static_cast<float>(factor);
  s.low_freq_factor = static_cast<float>(low);
  s.high_freq_factor = static_cast<float>(high);
  s.original_context = static_cast<int64_t>(orig);
  if (s.type == RopeScalingType::kNone) s = RopeScaling{};
  return s;
}

// The double with the fewest digits that rounds to `f`, so config.json shows 1e-05, not 9.99999974e-06.
double short_double(float f) {
  char buf[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, static_cast<double>(f));
    const double d = std::strtod(buf, nullptr);
    if (static_cast<float>(d) == f) return d;
  }
  return f;
}

}  // namespace

std::optional<std::string> hf_to_canonical_name(const std::string& hf_name) { return map_name(hf_name, true); }
std::optional<std::string> canonical_to_hf_name(const std::string& canonical) { return map_name(canonical, false); }

int64_t rope_heads_of(const std::string& canonical, const ModelConfig& config) {
  int64_t layer = 0;
  std::string rest;
  if (!split_layer(canonical, kCanonicalLayerPrefix, layer, rest)) return 0;
  if (layer >= config.n_layers) return 0;
  if (rest == "attn_q.weight" || rest == "attn_q.bias") return config.heads(layer);
  if (rest == "attn_k.weight" || rest == "attn_k.bias") return config.kv_heads(layer);
  return 0;
}

void permute_rope_rows(const uint8_t* src, uint8_t* dst, int64_t n_heads, int64_t head_dim, size_t row_bytes,
                       bool to_interleaved) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t a = 0; a < 2; ++a) {
        const int64_t interleaved = h * head_dim + 2 * i + a;
        const int64_t rotate_half = h * head_dim + a * half + i;
        const int64_t from = to_interleaved ? rotate_half : interleaved;
        const int64_t to = to_interleaved ? interleaved : rotate_half;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
}

Result<ModelConfig> parse_hf_config(const std::string& file, const std::string& text, HfConfigInfo* info) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return make_error(ErrorCode::kFormat, file, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) return make_error(ErrorCode::kFormat, file, ": top level is not a JSON object");
  const ConfigReader r(file, j);

  std::string arch, model_type;
  if (const Json* a = r.find("architectures"); a && a->is_array() && !a->empty() && (*a)[0].is_string())
    arch = (*a)[0].get<std::string>();
  if (const Json* t = r.find("model_type"); t && t->is_string()) model_type = t->get<std::string>();
  const ArchRow* row = nullptr;
  for (const auto& ar : kArchRows)
    if (arch == ar.architecture || (arch.empty() && model_type == ar.model_type)) row = &ar;
  if (!row)
    return make_error(ErrorCode::kUnsupported, file, ": architecture '", arch, "' (model_type '", model_type,
                      "') is not supported; expected LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM");

  ModelConfig c;
  c.family = row->family;
  c.rope_style = row->rope_style;
  c.attn_qkv_bias = row->qkv_bias;
  LLMC_ASSIGN_OR_RETURN(c.dim, r.integer("hidden_size", std::nullopt));
  LLMC_ASSIGN_OR_RETURN(c.hidden_dim, r.integer("intermediate_size", std::nullopt));
  LLMC_ASSIGN_OR_RETURN(c.n_layers, r.integer("num_hidden_layers", std::nullopt, 1, 4096));
  LLMC_ASSIGN_OR_RETURN(c.n_heads, r.integer("num_attention_heads", std::nullopt, 1, 4096));
  LLMC_ASSIGN_OR_RETURN(c.n_kv_heads, r.integer("num_key_value_heads", c.n_heads, 1, 4096));
  if (c.dim % c.n_heads != 0 && !r.find("head_dim"))
    return make_error(ErrorCode::kFormat, file, ": hidden_size ", c.dim, " is not a multiple of num_attention_heads ",
                      c.n_heads, " and head_dim is not given");
  LLMC_ASSIGN_OR_RETURN(c.head_dim, r.integer("head_dim", c.dim / c.n_heads, 2, 65536));
  LLMC_ASSIGN_OR_RETURN(c.vocab_size, r.integer("vocab_size", std::nullopt, 1, int64_t(1) << 24));
  LLMC_ASSIGN_OR_RETURN(c.context_length,
                        r.integer("max_position_embeddings", row->default_context, 1, int64_t(1) << 24));
  LLMC_ASSIGN_OR_RETURN(double eps, r.number("rms_norm_eps", 1e-6));
  LLMC_ASSIGN_OR_RETURN(double theta, r.number("rope_theta", 10000.0));
  if (!(eps > 0 && eps < 1)) return make_error(ErrorCode::kFormat, file, ": rms_norm_eps ", eps, " is out of range");
  if (!(theta > 0 && theta < 1e12))
    return make_error(ErrorCode::kFormat, file, ": rope_theta ", theta, " is out of range");
  c.norm_eps = static_cast<float>(eps);
  c.rope_theta = static_cast<float>(theta);
  LLMC_ASSIGN_OR_RETURN(c.rope_scaling, parse_rope_scaling(r));
  LLMC_ASSIGN_OR_RETURN(c.tied_embeddings, r.boolean("tie_word_embeddings", false));
  if (const Json* act = r.find("hidden_act"); act && !(act->is_string() && act->get<std::string>() == "silu"))
    return make_error(ErrorCode::kUnsupported, file, ": hidden_act ", act->dump(), " (only silu)");
  // Llama's attention_bias adds an o_proj bias the IR does not carry.
  LLMC_ASSIGN_OR_RETURN(bool attention_bias, r.boolean("attention_bias", false));
  LLMC_ASSIGN_OR_RETURN(bool mlp_bias, r.boolean("mlp_bias", false));
  if (!row->qkv_bias && (attention_bias || mlp_bias))
    return make_error(ErrorCode::kUnsupported, file, ": attention_bias/mlp_bias on ", row->architecture,
                      " is not supported");

  if (info) {
    info->architecture = row->architecture;
    info->permute_qk = row->rope_style == RopeStyle::kInterleaved;
    for (auto [key, out] :
         {std::pair{"bos_token_id", &info->bos_token_id}, std::pair{"eos_token_id", &info->eos_token_id}}) {
      const Json* v = r.find(key);
      if (v && v->is_array() && !v->empty()) v = &(*v)[0];
      if (v && v->is_number_integer()) *out = v->get<int64_t>();
    }
  }
  return c;
}

Result<std::string> hf_config_json(const ModelConfig& c, const TokenizerData& tok, const std::string& torch_dtype) {
  const ArchRow* row = nullptr;
  for (const auto& ar : kArchRows)
    if (ar.family == c.family) {
      row = &ar;
      break;
    }
  if (!row)
    return make_error(ErrorCode::kUnsupported, "config.json export: family ", family_name(c.family), " not supported");
  if (c.attn_qkv_bias != row->qkv_bias)
    return make_error(ErrorCode::kUnsupported, "config.json export: ", row->architecture,
                      c.attn_qkv_bias ? " has no q/k/v-only biases" : " requires q/k/v biases");
  if (c.norm != NormKind::kRmsNorm || c.activation != Activation::kSilu)
    return make_error(ErrorCode::kUnsupported, "config.json export: only RMSNorm + SiLU models");
  if (c.per_layer_widths())
    return make_error(ErrorCode::kUnsupported, "config.json export: the layers differ in attention heads or FFN width ",
                      "(structured pruning with per-layer allocation), which ", row->architecture,
                      "'s config cannot express; export GGUF or .llmc instead, or prune with uniform allocation");
  OrderedJson j = {{"architectures", {row->architecture}},
                   {"model_type", row->model_type},
                   {"hidden_size", c.dim},
                   {"intermediate_size", c.hidden_dim},
                   {"num_hidden_layers", c.n_layers},
                   {"num_attention_heads", c.n_heads},
                   {"num_key_value_heads", c.n_kv_heads},
                   {"head_dim", c.head_dim},
                   {"vocab_size", c.vocab_size},
                   {"max_position_embeddings", c.context_length},
                   {"rms_norm_eps", short_double(c.norm_eps)},
                   {"rope_theta", short_double(c.rope_theta)},
                   {"rope_scaling", nullptr},
                   {"tie_word_embeddings", c.tied_embeddings},
                   {"hidden_act", "silu"},
                   {"torch_dtype", torch_dtype},
                   {"use_cache", true}};
  if (c.family == ModelFamily::kLlama) {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  } else {
    j["use_sliding_window"] = false;
  }
  for (const auto& rt : kRopeTypes)
    if (rt.type == c.rope_scaling.type && rt.type != RopeScalingType::kNone) {
      j["rope_scaling"] = {{"rope_type", rt.name}, {"factor", short_double(c.rope_scaling.factor)}};
      if (rt.type == RopeScalingType::kLlama3) {
        j["rope_scaling"]["low_freq_factor"] = short_double(c.rope_scaling.low_freq_factor);
        j["rope_scaling"]["high_freq_factor"] = short_double(c.rope_scaling.high_freq_factor);
        j["rope_scaling"]["original_max_position_embeddings"] = c.rope_scaling.original_context;
      }
    }
  if (tok.bos_id >= 0) j["bos_token_id"] = tok.bos_id;
  if (tok.eos_id >= 0) j["eos_token_id"] = tok.eos_id;
  return j.dump(2);
}

}  // namespace llmc
