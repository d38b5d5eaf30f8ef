// Hugging Face tokenizer.json parsing (BPE vocab, merges, added tokens, pre-tokenizer) and writing.
#include "formats/hf_tokenizer.h"

#include <nlohmann/json.hpp>
#include <unordered_map>

#include "core/log.h"

namespace llmc {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr int64_t kMaxVocab = int64_t(1) << 24;

// Split regexes of the pre-tokenizers llama.cpp names (GGUF tokenizer.ggml.pre).
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

// What a tokenizer.json pre-tokenizer does, flattened from its (possibly nested) Sequence.
struct PreTokenizerSummary {
  bool byte_level = false;
  bool byte_level_regex = true;  // ByteLevel.use_regex: the GPT-2 split pattern
  bool digits_individual = false;
  bool metaspace = false;
  std::string split_regex;
};

void summarize_pre(const Json& j, PreTokenizerSummary& s, int depth) {
  if (!j.is_object() || depth > 8) return;
  const std::string type = j.value("type", std::string());
  if (type == "Sequence" && j.contains("pretokenizers") && j["pretokenizers"].is_array()) {
    for (const auto& p : j["pretokenizers"]) summarize_pre(p, s, depth + 1);
  } else if (type == "ByteLevel") {
    s.byte_level = true;
    if (j.contains("use_regex") && j["use_regex"].is_boolean()) s.byte_level_regex = j["use_regex"].get<bool>();
  } else if (type == "Digits") {
    s.digits_individual = j.value("individual_digits", false);
  } else if (type == "Metaspace") {
    s.metaspace = true;
  } else if (type == "Split" && j.contains("pattern") && j["pattern"].is_object()) {
    const Json& p = j["pattern"];
    for (const char* key : {"Regex", "String"})
      if (p.contains(key) && p[key].is_string())
        s.split_regex += (s.split_regex.empty() ? "" : "\n") + p[key].get<std::string>();
  }
}

// Byte-level pre-tokenizers llama.cpp knows, recognised from the tokenizer.json structure and
// rebuilt from the name when writing.
struct PreRow {
  const char* name;
  const char* split_regex;  // nullptr: none (ByteLevel applies the GPT-2 pattern itself)
  bool digits_individual;
};
const PreRow kPreRows[] = {
    {"llama-bpe", kLlama3Regex, false},
    {"qwen2", kQwen2Regex, false},
    {"smollm", nullptr, true},
    {"gpt2", nullptr, false},
};

std::string guess_pre(const PreTokenizerSummary& s) {
  for (const auto& row : kPreRows) {
    const bool regex_match = row.split_regex ? s.split_regex == row.split_regex : s.split_regex.empty();
    if (regex_match && row.digits_individual == s.digits_individual) return row.name;
  }
  // Unknown pattern: the closest relative by its digit rule, so encoding stays plausible.
  if (s.split_regex.find("\\p{N}{1,3}") != std::string::npos) return "llama-bpe";
  if (s.split_regex.find("\\p{N}|") != std::string::npos) return "qwen2";
  return "gpt2";
}

// "<s>" or {"content": "<s>", ...} or null.
std::string special_token_text(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

bool is_byte_piece(const std::string& s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

Result<Json> parse_json(const std::string& file, const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    return make_error(ErrorCode::kFormat, file, ": invalid JSON: ", e.what());
  }
}

Result<void> set_token(const std::string& file, std::vector<std::string>& tokens, std::vector<bool>& present,
                       int64_t id, const std::string& text) {
  if (id < 0 || id >= kMaxVocab)
    return make_error(ErrorCode::kFormat, file, ": token '", text, "' has id ", id, " out of range");
  if (id >= static_cast<int64_t>(tokens.size())) {
    tokens.resize(static_cast<size_t>(id) + 1);
    present.resize(static_cast<size_t>(id) + 1, false);
  }
  if (present[id] && tokens[id] != text)
    return make_error(ErrorCode::kFormat, file, ": id ", id, " is given to both '", tokens[id], "' and '", text, "'");
  tokens[id] = text;
  present[id] = true;
  return {};
}

}  // namespace

Result<TokenizerData> parse_hf_tokenizer(const std::string& file, const std::string& tokenizer_json,
                                         const std::string& tokenizer_config_json, HfTokenizerInfo* info) {
  LLMC_ASSIGN_OR_RETURN(Json root, parse_json(file, tokenizer_json));
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object())
    return make_error(ErrorCode::kFormat, file, ": no 'model' object");
  const Json& model = root["model"];
  const std::string type = model.value("type", std::string("BPE"));  // older files omit it
  if (type != "BPE") return make_error(ErrorCode::kUnsupported, file, ": tokenizer model type '", type, "' (only BPE)");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return make_error(ErrorCode::kFormat, file, ": model.vocab is not an object");

  PreTokenizerSummary pre;
  if (root.contains("pre_tokenizer")) summarize_pre(root["pre_tokenizer"], pre, 0);
  const bool byte_fallback = model.value("byte_fallback", false);
  // SentencePiece-converted BPE marks spaces with U+2581 through Metaspace or Replace rules.
  auto mentions_metaspace = [&](const char* key) {
    return root.contains(key) && !root[key].is_null() && root[key].dump().find("\\u2581") != std::string::npos;
  };
  const bool sentencepiece = !pre.byte_level && (byte_fallback || pre.metaspace || mentions_metaspace("normalizer") ||
                                                 mentions_metaspace("decoder"));
  if (!pre.byte_level && !sentencepiece)
    return make_error(ErrorCode::kUnsupported, file, ": BPE tokenizer is neither byte-level nor SentencePiece-style");

  TokenizerData tok;
  tok.kind = sentencepiece ? TokenizerKind::kSentencePiece : TokenizerKind::kBytePairGpt2;
  std::vector<bool> present;
  for (const auto& [text, id] : model["vocab"].items()) {
    if (!id.is_number_integer())
      return make_error(ErrorCode::kFormat, file, ": vocab id of '", text, "' is not an integer");
    LLMC_TRY(set_token(file, tok.tokens, present, id.get<int64_t>(), text));
  }
  // Added tokens: special ones are control tokens, the rest user-defined.
  std::unordered_map<int64_t, TokenType> added_types;
  if (root.contains("added_tokens") && root["added_tokens"].is_array()) {
    for (const auto& a : root["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        return make_error(ErrorCode::kFormat, file, ": added_tokens entry without integer id and string content");
      const int64_t id = a["id"].get<int64_t>();
      LLMC_TRY(set_token(file, tok.tokens, present, id, a["content"].get<std::string>()));
      added_types[id] = a.value("special", false) ? TokenType::kControl : TokenType::kUserDefined;
    }
  }
  if (tok.tokens.empty()) return make_error(ErrorCode::kFormat, file, ": empty vocabulary");

  std::unordered_map<std::string, int32_t> ids;
  tok.token_types.assign(tok.tokens.size(), static_cast<int32_t>(TokenType::kNormal));
  for (size_t i = 0; i < tok.tokens.size(); ++i) {
    if (!present[i]) {
      tok.tokens[i] = str_cat("[PAD", i, "]");  // holes, as llama.cpp's converter pads them
      tok.token_types[i] = static_cast<int32_t>(TokenType::kUnused);
      continue;
    }
    ids.emplace(tok.tokens[i], static_cast<int32_t>(i));
    if (auto it = added_types.find(static_cast<int64_t>(i)); it != added_types.end())
      tok.token_types[i] = static_cast<int32_t>(it->second);
    else if (sentencepiece && is_byte_piece(tok.tokens[i]))
      tok.token_types[i] = static_cast<int32_t>(TokenType::kByte);
  }
  auto id_of = [&](const std::string& text) -> int32_t {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  };

  // Merges: "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs.
  std::unordered_map<std::string, size_t> merge_rank;
  if (model.contains("merges") && model["merges"].is_array()) {
    for (const auto& m : model["merges"]) {
      std::string merged;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size())
          return make_error(ErrorCode::kFormat, file, ": merge '", s, "' is not 'a b'");
        tok.merges.push_back(s);
        merged = s.substr(0, sp) + s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        tok.merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        merged = m[0].get<std::string>() + m[1].get<std::string>();
      } else {
        return make_error(ErrorCode::kFormat, file, ": merge ", tok.merges.size(), " is neither \"a b\" nor [a, b]");
      }
      merge_rank.emplace(merged, tok.merges.size() - 1);
    }
  }
  const std::string unk = model.contains("unk_token") ? special_token_text(model["unk_token"]) : "";
  if (!unk.empty()) tok.unk_id = id_of(unk);

  if (sentencepiece) {
    // SentencePiece BPE merges the pair whose result scores highest: score = -merge rank, and
    // pieces that no merge produces (characters, bytes) rank after every merge, by id.
    tok.scores.assign(tok.tokens.size(), 0.0f);
    for (size_t i = 0; i < tok.tokens.size(); ++i) {
      if (tok.token_types[i] != static_cast<int32_t>(TokenType::kNormal)) continue;
      auto it = merge_rank.find(tok.tokens[i]);
      tok.scores[i] = -static_cast<float>(it != merge_rank.end() ? it->second : merge_rank.size() + i);
    }
    tok.merges.clear();
    if (tok.unk_id >= 0) tok.token_types[tok.unk_id] = static_cast<int32_t>(TokenType::kUnknown);
    tok.pre = "default";
    tok.add_bos = true;
    tok.bos_id = id_of("<s>");
    tok.eos_id = id_of("</s>");
  } else {
    tok.pre = guess_pre(pre);
    if (info) info->pre_regex = pre.split_regex;
  }

  // post_processor TemplateProcessing {"single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": ..}]}
  if (root.contains("post_processor") && root["post_processor"].is_object()) {
    const Json& pp = root["post_processor"];
    if (pp.value("type", std::string()) == "TemplateProcessing" && pp.contains("single") && pp["single"].is_array()) {
      const Json& single = pp["single"];
      tok.add_bos = !single.empty() && single[0].is_object() && single[0].contains("SpecialToken");
      if (tok.add_bos && single[0]["SpecialToken"].is_object())
        if (int32_t id = id_of(special_token_text(single[0]["SpecialToken"].value("id", Json()))); id >= 0)
          tok.bos_id = id;
    }
  }

  if (!tokenizer_config_json.empty()) {
    LLMC_ASSIGN_OR_RETURN(Json cfg, parse_json(file + " (tokenizer_config.json)", tokenizer_config_json));
    if (cfg.is_object()) {
      struct SpecialRow {
        const char* key;
        int32_t* id;
      };
      const SpecialRow rows[] = {{"bos_token", &tok.bos_id},
                                 {"eos_token", &tok.eos_id},
                                 {"unk_token", &tok.unk_id},
                                 {"pad_token", &tok.pad_id}};
      for (const auto& row : rows)
        if (cfg.contains(row.key))
          if (int32_t id = id_of(special_token_text(cfg[row.key])); id >= 0) *row.id = id;
      if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
        tok.add_bos = cfg["add_bos_token"].get<bool>();
      if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
        tok.add_eos = cfg["add_eos_token"].get<bool>();
      if (info && cfg.contains("chat_template") && cfg["chat_template"].is_string())
        info->chat_template = cfg["chat_template"].get<std::string>();
    }
  }
  return tok;
}

Result<std::string> hf_tokenizer_json(const TokenizerData& tok) {
  if (tok.kind != TokenizerKind::kBytePairGpt2)
    return make_error(ErrorCode::kUnsupported, "tokenizer.json export supports byte-level BPE vocabularies only");
  auto type_of = [&](size_t i) {
    return i < tok.token_types.size() ? static_cast<TokenType>(tok.token_types[i]) : TokenType::kNormal;
  };
  OrderedJson vocab = OrderedJson::object();
  OrderedJson added = OrderedJson::array();
  for (size_t i = 0; i < tok.tokens.size(); ++i) {
    const TokenType t = type_of(i);
    if (t == TokenType::kUnused) continue;  // padding slots come back as [PAD<id>] holes
    vocab[tok.tokens[i]] = i;
    if (t == TokenType::kControl || t == TokenType::kUserDefined)
      added.push_back({{"id", i},
                       {"content", tok.tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", t != TokenType::kControl},
                       {"special", t == TokenType::kControl}});
  }
  const OrderedJson byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const PreRow* row = nullptr;
  for (const auto& r : kPreRows)
    if (tok.pre == r.name) row = &r;
  if (!row) {
    log_warn("tokenizer.json export: pre-tokenizer '", tok.pre, "' unknown, writing the GPT-2 one");
    row = &kPreRows[3];
  }
  OrderedJson pre_tokenizer = byte_level;
  if (row->split_regex) {
    OrderedJson no_regex = byte_level;
    no_regex["use_regex"] = false;
    pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", row->split_regex}}}, {"behavior", "Isolated"}, {"invert", false}},
          no_regex}}};
  } else if (row->digits_individual) {
    pre_tokenizer = {{"type", "Sequence"},
                     {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level}}};
  }
  OrderedJson post = byte_level;
  post["trim_offsets"] = false;
  if (tok.add_bos && tok.bos_id >= 0 && static_cast<size_t>(tok.bos_id) < tok.tokens.size()) {
    const std::string bos = tok.tokens[tok.bos_id];
    post = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {tok.bos_id}}, {"tokens", {bos}}}}}}};
  }
  OrderedJson merges = OrderedJson::array();
  for (const auto& m : tok.merges) {
    const size_t sp = m.find(' ');
    if (sp == std::string::npos) return make_error(ErrorCode::kFormat, "tokenizer merge '", m, "' is not 'a b'");
    merges.push_back({m.substr(0, sp), m.substr(sp + 1)});
  }
  OrderedJson root = {{"version", "1.0"},
                      {"truncation", nullptr},
                      {"padding", nullptr},
                      {"added_tokens", added},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", pre_tokenizer},
                      {"post_processor", post},
                      {"decoder", byte_level},
                      {"model",
                       {{"type", "BPE"},
                        {"dropout", nullptr},
                        {"unk_token", nullptr},
                        {"continuing_subword_prefix", nullptr},
                        {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false},
                        {"byte_fallback", false},
                        {"ignore_merges", false},
                        {"vocab", vocab},
                        {"merges", merges}}}};
  return root.dump(2, ' ', false, OrderedJson::error_handler_t::replace);
}

std::string hf_tokenizer_config_json(const TokenizerData& tok, int64_t context_length) {
  auto text_of = [&](int32_t id) -> OrderedJson {
    if (id < 0 || static_cast<size_t>(id) >= tok.tokens.size()) return nullptr;
    return tok.tokens[id];
  };
  OrderedJson cfg = {{"add_bos_token", tok.add_bos},
                     {"add_eos_token", tok.add_eos},
                     {"bos_token", text_of(tok.bos_id)},
                     {"eos_token", text_of(tok.eos_id)},
                     {"unk_token", text_of(tok.unk_id)},
                     {"pad_token", text_of(tok.pad_id)},
                     {"clean_up_tokenization_spaces", false},
                     {"model_max_length", context_length},
                     {"tokenizer_class", "PreTrainedTokenizerFast"}};
  return cfg.dump(2, ' ', false, OrderedJson::error_handler_t::replace);
}

}  // namespace llmc
