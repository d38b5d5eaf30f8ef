// GGUF reader: hostile-input parsing of the key/value table and tensor table, mapping of the llama/qwen2
// keys to ModelConfig and of tokenizer.ggml.* to TokenizerData, zero-copy float tensors, decoded quants.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "core/log.h"
#include "formats/file_io.h"
#include "formats/gguf.h"
#include "formats/gguf_quants.h"
#include "formats/model_io.h"
#include "formats/scratch_file.h"
#include "model/arch.h"

namespace llmc {

namespace {

constexpr int kMaxArrayDepth = 4;             // nested arrays deeper than this are rejected
constexpr uint64_t kMaxReprElements = 64;     // larger arrays are not copied into Model::metadata
constexpr uint32_t kMaxDims = 4;              // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = 1u << 24;  // far above any real file, keeps padding arithmetic safe

// One row per GGUF value type, indexed by its number; size 0 = variable length.
struct ValueTypeRow {
  GgufValueType type;
  const char* name;
  uint64_t size;
};
const ValueTypeRow kValueTypes[] = {
    {GgufValueType::kU8, "u8", 1},       {GgufValueType::kI8, "i8", 1},     {GgufValueType::kU16, "u16", 2},
    {GgufValueType::kI16, "i16", 2},     {GgufValueType::kU32, "u32", 4},   {GgufValueType::kI32, "i32", 4},
    {GgufValueType::kF32, "f32", 4},     {GgufValueType::kBool, "bool", 1}, {GgufValueType::kString, "string", 0},
    {GgufValueType::kArray, "array", 0}, {GgufValueType::kU64, "u64", 8},   {GgufValueType::kI64, "i64", 8},
    {GgufValueType::kF64, "f64", 8},
};

const ValueTypeRow* value_type_row(uint32_t t) { return t < std::size(kValueTypes) ? &kValueTypes[t] : nullptr; }

// Fewest bytes one value of the type can occupy: strings need their u64 length, arrays type + count.
uint64_t min_value_size(const ValueTypeRow& row) {
  if (row.size) return row.size;
  return row.type == GgufValueType::kString ? 8 : 12;
}

bool is_integer(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kU16:
    case GgufValueType::kI16:
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kU64:
    case GgufValueType::kI64: return true;
    default: return false;
  }
}

// A decoded key/value pair. Scalars are held numerically; arrays by element type, count and the
// file offset of their first element, so large arrays (vocabularies) are read once, when needed.
struct KeyValue {
  std::string key;
  size_t offset = 0;  // of the key in the file
  GgufValueType type = GgufValueType::kU8;
  bool negative = false;  // integers: int_value < 0
  int64_t int_value = 0;
  uint64_t uint_value = 0;
  double float_value = 0;
  bool bool_value = false;
  std::string str;
  GgufValueType elem_type = GgufValueType::kU8;
  uint64_t count = 0;
  size_t elem_offset = 0;
};

void append_quoted(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

template <class T>
std::string number_text(T v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

Result<std::string> read_string(ByteReader& r) {
  LLMC_ASSIGN_OR_RETURN(const uint64_t len, r.u64());
  if (len > r.remaining())
    return r.error(ErrorCode::kFormat, str_cat("string length ", len, " exceeds the ", r.remaining(), " bytes left"));
  return r.string(len);
}

// Reads one value of type `row` (validating everything), fills `kv` for a top-level value, and
// appends a text form to `repr` when given (strings quoted inside arrays, arrays as [a, b]).
Result<void> parse_value(ByteReader& r, const ValueTypeRow& row, int depth, KeyValue* kv, std::string* repr,
                         bool quote_strings) {
  KeyValue scratch;
  KeyValue& v = kv ? *kv : scratch;
  v.type = row.type;
  switch (row.type) {
    case GgufValueType::kU8: {
      LLMC_ASSIGN_OR_RETURN(v.uint_value, r.u8());
      break;
    }
    case GgufValueType::kU16: {
      LLMC_ASSIGN_OR_RETURN(v.uint_value, r.u16());
      break;
    }
    case GgufValueType::kU32: {
      LLMC_ASSIGN_OR_RETURN(v.uint_value, r.u32());
      break;
    }
    case GgufValueType::kU64: {
      LLMC_ASSIGN_OR_RETURN(v.uint_value, r.u64());
      break;
    }
    case GgufValueType::kI8: {
      LLMC_ASSIGN_OR_RETURN(const uint8_t x, r.u8());
      v.int_value = static_cast<int8_t>(x);
      break;
    }
    case GgufValueType::kI16: {
      LLMC_ASSIGN_OR_RETURN(const uint16_t x, r.u16());
      v.int_value = static_cast<int16_t>(x);
      break;
    }
    case GgufValueType::kI32: {
      LLMC_ASSIGN_OR_RETURN(v.int_value, r.i32());
      break;
    }
    case GgufValueType::kI64: {
      LLMC_ASSIGN_OR_RETURN(v.int_value, r.i64());
      break;
    }
    case GgufValueType::kF32: {
      LLMC_ASSIGN_OR_RETURN(const float x, r.f32());
      v.float_value = x;
      if (repr) *repr += number_text(x);
      return {};
    }
    case GgufValueType::kF64: {
      LLMC_ASSIGN_OR_RETURN(v.float_value, r.f64());
      if (repr) *repr += number_text(v.float_value);
      return {};
    }
    case GgufValueType::kBool: {
      LLMC_ASSIGN_OR_RETURN(const uint8_t x, r.u8());
      if (x > 1) return r.error(ErrorCode::kFormat, str_cat("bool value ", int(x), " is neither 0 nor 1"));
      v.bool_value = x == 1;
      if (repr) *repr += v.bool_value ? "true" : "false";
      return {};
    }
    case GgufValueType::kString: {
      LLMC_ASSIGN_OR_RETURN(v.str, read_string(r));
      if (repr) {
        if (quote_strings)
          append_quoted(*repr, v.str);
        else
          *repr += v.str;
      }
      return {};
    }
    case GgufValueType::kArray: {
      if (depth >= kMaxArrayDepth) return r.error(ErrorCode::kFormat, "arrays nested too deeply");
      LLMC_ASSIGN_OR_RETURN(const uint32_t et, r.u32());
      const ValueTypeRow* erow = value_type_row(et);
      if (!erow) return r.error(ErrorCode::kFormat, str_cat("unknown array element type ", et));
      LLMC_ASSIGN_OR_RETURN(const uint64_t count, r.u64());
      if (count > r.remaining() / min_value_size(*erow))
        return r.error(ErrorCode::kFormat, str_cat("array of ", count, " ", erow->name, " values needs more than the ",
                                                   r.remaining(), " bytes left"));
      v.elem_type = erow->type;
      v.count = count;
      v.elem_offset = r.offset();
      const bool want = repr && count <= kMaxReprElements;
      if (repr && !want) *repr += "[...]";  // too large for metadata
      if (erow->size && !want) return r.skip(count * erow->size);
      if (want) *repr += '[';
      for (uint64_t i = 0; i < count; ++i) {
        if (want && i) *repr += ", ";
        LLMC_TRY(parse_value(r, *erow, depth + 1, nullptr, want ? repr : nullptr, true));
      }
      if (want) *repr += ']';
      return {};
    }
  }
  // integers
  if (row.type == GgufValueType::kI8 || row.type == GgufValueType::kI16 || row.type == GgufValueType::kI32 ||
      row.type == GgufValueType::kI64) {
    v.negative = v.int_value < 0;
    v.uint_value = static_cast<uint64_t>(v.int_value);
    if (repr) *repr += number_text(v.int_value);
  } else {
    v.int_value = static_cast<int64_t>(v.uint_value);
    if (repr) *repr += number_text(v.uint_value);
  }
  return {};
}

// One parsed tensor info, already checked against the file.
struct TensorInfo {
  std::string name;
  size_t info_offset = 0;
  Shape shape;  // logical: reversed ne
  const GgmlTypeInfo* type = nullptr;
  uint64_t offset = 0;  // relative to the data section
  uint64_t nbytes = 0;
};

// The parse state: key/values by name and accessors that check types and name the key on error.
class GgufFile {
 public:
  GgufFile(std::string name, const uint8_t* data, size_t size) : name_(std::move(name)), data_(data), size_(size) {}

  Result<void> parse_header(Model& model);
  Result<void> fill_config(Model& model) const;
  Result<void> fill_tokenizer(Model& model) const;
  Result<void> load_tensors(Model& model, const std::shared_ptr<const void>& owner, ScratchFile* scratch) const;
  bool has_tensors() const { return !tensors_.empty(); }

 private:
  const KeyValue* find(const std::string& key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &kvs_[it->second];
  }
  Error key_error(const KeyValue& kv, const std::string& what) const {
    return make_error(ErrorCode::kFormat, name_, ": key '", kv.key, "' at offset ", kv.offset, ": ", what);
  }
  Result<std::optional<int64_t>> get_int(const std::string& key) const;
  Result<std::optional<double>> get_float(const std::string& key) const;
  Result<std::optional<std::string>> get_string(const std::string& key) const;
  Result<std::optional<bool>> get_bool(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const KeyValue& kv) const;
  // One integer (returned as one entry: every layer) or an array of n_layers i32/u32 integers
  // (returned as is); empty when absent.
  Result<std::vector<int64_t>> get_widths(const std::string& key, int64_t n_layers) const;
  Result<void> parse_tensor_info(ByteReader& r, std::unordered_set<std::string>& names);

  std::string name_;
  const uint8_t* data_;
  size_t size_;
  std::vector<KeyValue> kvs_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<TensorInfo> tensors_;
  uint64_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_start_ = 0;
};

Result<std::optional<int64_t>> GgufFile::get_int(const std::string& key) const {
  const KeyValue* kv = find(key);
  if (!kv) return std::optional<int64_t>();
  if (!is_integer(kv->type)) return key_error(*kv, "expected an integer");
  if (!kv->negative && kv->uint_value > static_cast<uint64_t>(INT64_MAX)) return key_error(*kv, "value out of range");
  return std::optional<int64_t>(kv->int_value);
}

Result<std::optional<double>> GgufFile::get_float(const std::string& key) const {
  const KeyValue* kv = find(key);
  if (!kv) return std::optional<double>();
  if (kv->type == GgufValueType::kF32 || kv->type == GgufValueType::kF64) return std::optional<double>(kv->float_value);
  if (is_integer(kv->type)) return std::optional<double>(static_cast<double>(kv->int_value));
  return key_error(*kv, "expected a number");
}

Result<std::optional<std::string>> GgufFile::get_string(const std::string& key) const {
  const KeyValue* kv = find(key);
  if (!kv) return std::optional<std::string>();
  if (kv->type != GgufValueType::kString) return key_error(*kv, "expected a string");
  return std::optional<std::string>(kv->str);
}

Result<std::optional<bool>> GgufFile::get_bool(const std::string& key) const {
  const KeyValue* kv = find(key);
  if (!kv) return std::optional<bool>();
  if (kv->type != GgufValueType::kBool) return key_error(*kv, "expected a bool");
  return std::optional<bool>(kv->bool_value);
}

Result<std::vector<std::string>> GgufFile::get_string_array(const KeyValue& kv) const {
  if (kv.type != GgufValueType::kArray || kv.elem_type != GgufValueType::kString)
    return key_error(kv, "expected an array of strings");
  ByteReader r(name_, data_, size_);
  LLMC_TRY(r.seek(kv.elem_offset));
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(kv.count));  // count was checked against the bytes present
  for (uint64_t i = 0; i < kv.count; ++i) {
    LLMC_ASSIGN_OR_RETURN(std::string s, read_string(r));
    out.push_back(std::move(s));
  }
  return out;
}

// Reads an array of 4-byte numbers (f32, i32 or u32 stored as T's bit pattern).
template <class T>
Result<std::vector<T>> read_numeric_array(const std::string& file, const uint8_t* data, size_t size, const KeyValue& kv,
                                          GgufValueType elem) {
  static_assert(sizeof(T) == 4);
  const ValueTypeRow& row = *value_type_row(static_cast<uint32_t>(elem));
  LLMC_CHECK(row.size == sizeof(T));
  ByteReader r(file, data, size);
  LLMC_TRY(r.seek(kv.elem_offset));
  LLMC_ASSIGN_OR_RETURN(const uint8_t* p, r.take(kv.count * row.size));
  std::vector<T> out(static_cast<size_t>(kv.count));
  if (!out.empty()) std::memcpy(out.data(), p, out.size() * sizeof(T));
  return out;
}

Result<std::vector<int64_t>> GgufFile::get_widths(const std::string& key, int64_t n_layers) const {
  const KeyValue* kv = find(key);
  if (!kv) return std::vector<int64_t>();
  if (kv->type != GgufValueType::kArray) {
    LLMC_ASSIGN_OR_RETURN(const auto v, get_int(key));
    return std::vector<int64_t>{*v};  // every layer
  }
  if (kv->elem_type != GgufValueType::kU32 && kv->elem_type != GgufValueType::kI32)
    return key_error(*kv, "expected an integer or an array of 32-bit integers");
  if (n_layers < 1 || n_layers > 4096) return key_error(*kv, str_cat("block_count ", n_layers, " is out of range"));
  if (kv->count != static_cast<uint64_t>(n_layers))
    return key_error(*kv, str_cat("array of ", kv->count, " entries for ", n_layers, " layers"));
  std::vector<int64_t> out;
  if (kv->elem_type == GgufValueType::kU32) {
    LLMC_ASSIGN_OR_RETURN(const auto v, read_numeric_array<uint32_t>(name_, data_, size_, *kv, kv->elem_type));
    out.assign(v.begin(), v.end());
  } else {
    LLMC_ASSIGN_OR_RETURN(const auto v, read_numeric_array<int32_t>(name_, data_, size_, *kv, kv->elem_type));
    out.assign(v.begin(), v.end());
  }
  return out;
}

Result<void> GgufFile::parse_tensor_info(ByteReader& r, std::unordered_set<std::string>& names) {
  TensorInfo t;
  t.info_offset = r.offset();
  LLMC_ASSIGN_OR_RETURN(t.name, read_string(r));
  auto bad = [&](ErrorCode code, const std::string& what) {
    return make_error(code, name_, ": tensor '", t.name, "' (info at offset ", t.info_offset, "): ", what);
  };
  if (!names.insert(t.name).second) return bad(ErrorCode::kFormat, "duplicate tensor name");
  LLMC_ASSIGN_OR_RETURN(const uint32_t n_dims, r.u32());
  if (n_dims < 1 || n_dims > kMaxDims) return bad(ErrorCode::kFormat, str_cat("n_dims ", n_dims, " outside 1..4"));
  uint64_t ne[kMaxDims] = {};
  uint64_t numel = 1;
  for (uint32_t i = 0; i < n_dims; ++i) {
    LLMC_ASSIGN_OR_RETURN(ne[i], r.u64());
    if (ne[i] == 0 || ne[i] > static_cast<uint64_t>(INT64_MAX))
      return bad(ErrorCode::kFormat, str_cat("dimension ne[", i, "] = ", ne[i], " is not positive"));
    if (__builtin_mul_overflow(numel, ne[i], &numel) || numel > static_cast<uint64_t>(INT64_MAX))
      return bad(ErrorCode::kFormat, "element count overflows");
  }
  LLMC_ASSIGN_OR_RETURN(const uint32_t type, r.u32());
  t.type = ggml_type_info(type);
  if (!t.type) return bad(ErrorCode::kUnsupported, str_cat("unknown ggml type ", type));
  LLMC_ASSIGN_OR_RETURN(t.offset, r.u64());
  if (ne[0] % static_cast<uint64_t>(t.type->block_size) != 0)
    return bad(ErrorCode::kFormat, str_cat("row length ", ne[0], " is not a multiple of the ", t.type->name,
                                           " block size ", t.type->block_size));
  // numel <= 2^63 and type_size <= 292: the block count times type size cannot overflow u64 as
  // long as it is compared against the file size; check via division.
  const uint64_t blocks = numel / static_cast<uint64_t>(t.type->block_size);
  if (blocks > size_ / static_cast<uint64_t>(t.type->type_size))
    return bad(ErrorCode::kFormat,
               str_cat(t.type->name, " data of ", numel, " elements is larger than the file (", size_, " bytes)"));
  t.nbytes = blocks * static_cast<uint64_t>(t.type->type_size);
  for (uint32_t i = 0; i < n_dims; ++i) t.shape.dims.push_back(static_cast<int64_t>(ne[n_dims - 1 - i]));
  tensors_.push_back(std::move(t));
  return {};
}

Result<void> GgufFile::parse_header(Model& model) {
  ByteReader r(name_, data_, size_);
  LLMC_ASSIGN_OR_RETURN(const uint8_t* magic, r.take(4));
  if (std::memcmp(magic, kGgufMagic, 4) != 0)
    return make_error(ErrorCode::kFormat, name_, ": not a GGUF file (bad magic)");
  LLMC_ASSIGN_OR_RETURN(const uint32_t version, r.u32());
  if (version == 1)
    return make_error(ErrorCode::kUnsupported, name_, ": GGUF version 1 is not supported (only v2 and v3)");
  if (version != 2 && version != 3) {
    if ((version & 0xFFFFu) == 0)
      return make_error(ErrorCode::kUnsupported, name_, ": big-endian GGUF is not supported");
    return make_error(ErrorCode::kUnsupported, name_, ": GGUF version ", version, " is not supported (only v2 and v3)");
  }
  LLMC_ASSIGN_OR_RETURN(const uint64_t n_tensors, r.u64());
  LLMC_ASSIGN_OR_RETURN(const uint64_t n_kv, r.u64());
  // Smallest key/value: empty key (8) + type (4) + u8 (1); smallest tensor info: empty name (8) +
  // n_dims (4) + one dim (8) + type (4) + offset (8).
  if (n_kv > r.remaining() / 13)
    return r.error(ErrorCode::kFormat, str_cat("key/value count ", n_kv, " cannot fit in the file"));
  if (n_tensors > r.remaining() / 32)
    return r.error(ErrorCode::kFormat, str_cat("tensor count ", n_tensors, " cannot fit in the file"));

  for (uint64_t i = 0; i < n_kv; ++i) {
    KeyValue kv;
    kv.offset = r.offset();
    LLMC_ASSIGN_OR_RETURN(kv.key, read_string(r));
    LLMC_ASSIGN_OR_RETURN(const uint32_t type, r.u32());
    const ValueTypeRow* row = value_type_row(type);
    if (!row)
      return make_error(ErrorCode::kFormat, name_, ": key '", kv.key, "' at offset ", kv.offset,
                        ": unknown value type ", type);
    if (index_.count(kv.key))
      return make_error(ErrorCode::kFormat, name_, ": duplicate key '", kv.key, "' at offset ", kv.offset);
    std::string repr;
    auto parsed = parse_value(r, *row, 0, &kv, &repr, false);
    if (!parsed.ok()) {
      Error e = parsed.error();  // "<file>: at offset N: ..." -> "<file>: key 'k': at offset N: ..."
      if (e.message.rfind(name_ + ": ", 0) == 0) e.message.insert(name_.size() + 2, str_cat("key '", kv.key, "': "));
      return e;
    }
    const bool vocab_array = kv.type == GgufValueType::kArray && kv.key.rfind("tokenizer.ggml.", 0) == 0;
    if (!vocab_array && (kv.type != GgufValueType::kArray || kv.count <= kMaxReprElements))
      model.metadata[kv.key] = repr;
    index_[kv.key] = kvs_.size();
    kvs_.push_back(std::move(kv));
  }

  if (const KeyValue* kv = find("general.alignment")) {
    if (!is_integer(kv->type) || kv->negative) return key_error(*kv, "expected an unsigned integer");
    const uint64_t a = kv->uint_value;
    if (a == 0 || (a & (a - 1)) != 0 || a > kMaxAlignment)
      return key_error(*kv, str_cat("alignment ", a, " is not a power of two (up to 2^24)"));
    alignment_ = a;
  }

  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < n_tensors; ++i) LLMC_TRY(parse_tensor_info(r, names));

  data_start_ = (r.offset() + alignment_ - 1) / alignment_ * alignment_;
  for (const TensorInfo& t : tensors_) {
    auto bad = [&](const std::string& what) {
      return make_error(ErrorCode::kFormat, name_, ": tensor '", t.name, "' (info at offset ", t.info_offset,
                        "): ", what);
    };
    if (t.offset % alignment_ != 0)
      return bad(str_cat("data offset ", t.offset, " is not a multiple of the alignment ", alignment_));
    if (data_start_ > size_ || t.offset > size_ - data_start_ || t.nbytes > size_ - data_start_ - t.offset)
      return bad(str_cat("data [", data_start_, " + ", t.offset, ", +", t.nbytes,
                         " bytes) extends past the end of the file (", size_, " bytes)"));
    if (!t.type->dequant)
      return make_error(ErrorCode::kUnsupported, name_, ": tensor '", t.name, "' has type ", t.type->name,
                        ", which llmc cannot decode");
  }
  return {};
}

// Integer config keys "<arch>.<suffix>"; required ones must be present when the file has tensors.
struct IntKeyRow {
  const char* suffix;
  int64_t ModelConfig::*field;
  bool required;
};
const IntKeyRow kIntKeys[] = {
    {"embedding_length", &ModelConfig::dim, true},           {"block_count", &ModelConfig::n_layers, true},
    {"attention.key_length", &ModelConfig::head_dim, false}, {"context_length", &ModelConfig::context_length, false},
    {"vocab_size", &ModelConfig::vocab_size, false},
};

// Width keys that llama.cpp reads as one integer or an array of one per layer (after structured
// pruning; see the writer's "deci" architecture).
struct WidthKeyRow {
  const char* suffix;
  bool required;
};
const WidthKeyRow kWidthKeys[] = {
    {"feed_forward_length", true},
    {"attention.head_count", true},
    {"attention.head_count_kv", false},
};

struct RopeScalingRow {
  const char* name;
  RopeScalingType type;
};
const RopeScalingRow kRopeScalings[] = {
    {"none", RopeScalingType::kNone},
    {"linear", RopeScalingType::kLinear},
    {"llama3", RopeScalingType::kLlama3},
};

Result<void> GgufFile::fill_config(Model& model) const {
  ModelConfig& c = model.config;
  LLMC_ASSIGN_OR_RETURN(const auto arch, get_string("general.architecture"));
  if (!arch) return make_error(ErrorCode::kFormat, name_, ": missing key 'general.architecture'");
  const auto family = *arch == kGgufDeciArchitecture ? std::optional(ModelFamily::kLlama) : family_from_name(*arch);
  if (!family)
    return make_error(ErrorCode::kUnsupported, name_, ": architecture '", *arch, "' is not supported (llama, qwen2)");
  c.family = *family;
  const std::string p = *arch + ".";
  for (const auto& row : kIntKeys) {
    LLMC_ASSIGN_OR_RETURN(const auto v, get_int(p + row.suffix));
    if (v) {
      c.*row.field = *v;
    } else if (row.required) {
      return make_error(ErrorCode::kFormat, name_, ": missing key '", p, row.suffix, "'");
    }
  }
  std::vector<int64_t> widths[std::size(kWidthKeys)];
  for (size_t i = 0; i < std::size(kWidthKeys); ++i) {
    const WidthKeyRow& row = kWidthKeys[i];
    LLMC_ASSIGN_OR_RETURN(widths[i], get_widths(p + row.suffix, c.n_layers));
    if (widths[i].empty() && row.required)
      return make_error(ErrorCode::kFormat, name_, ": missing key '", p, row.suffix, "'");
  }
  auto& [hidden, heads, kv_heads] = widths;  // kWidthKeys' order
  if (kv_heads.empty()) kv_heads = heads;    // no GQA
  c.set_layer_widths(heads, kv_heads, hidden);
  if (c.head_dim == 0 && c.heads(0) > 0) c.head_dim = c.dim / c.heads(0);  // llama.cpp: from layer 0
  LLMC_ASSIGN_OR_RETURN(const auto rope_dims, get_int(p + "rope.dimension_count"));
  if (rope_dims && *rope_dims != c.head_dim)
    return make_error(ErrorCode::kUnsupported, name_, ": partial rotary embedding (", p,
                      "rope.dimension_count = ", *rope_dims, ", head size ", c.head_dim, ") is not supported");
  LLMC_ASSIGN_OR_RETURN(const auto eps, get_float(p + "attention.layer_norm_rms_epsilon"));
  if (eps) c.norm_eps = static_cast<float>(*eps);
  LLMC_ASSIGN_OR_RETURN(const auto theta, get_float(p + "rope.freq_base"));
  if (theta) c.rope_theta = static_cast<float>(*theta);

  LLMC_ASSIGN_OR_RETURN(const auto scaling, get_string(p + "rope.scaling.type"));
  if (scaling) {
    const auto it = std::find_if(std::begin(kRopeScalings), std::end(kRopeScalings),
                                 [&](const RopeScalingRow& row) { return *scaling == row.name; });
    if (it == std::end(kRopeScalings))
      return make_error(ErrorCode::kUnsupported, name_, ": rope scaling '", *scaling, "' is not supported");
    c.rope_scaling.type = it->type;
  }
  LLMC_ASSIGN_OR_RETURN(const auto factor, get_float(p + "rope.scaling.factor"));
  if (factor) c.rope_scaling.factor = static_cast<float>(*factor);
  LLMC_ASSIGN_OR_RETURN(const auto orig_ctx, get_int(p + "rope.scaling.original_context_length"));
  if (orig_ctx) c.rope_scaling.original_context = *orig_ctx;
  LLMC_ASSIGN_OR_RETURN(const auto low, get_float(p + "rope.scaling.low_freq_factor"));
  if (low) c.rope_scaling.low_freq_factor = static_cast<float>(*low);
  LLMC_ASSIGN_OR_RETURN(const auto high, get_float(p + "rope.scaling.high_freq_factor"));
  if (high) c.rope_scaling.high_freq_factor = static_cast<float>(*high);

  // Families differ in RoPE pairing: llama GGUFs store Q/K permuted for interleaved pairs,
  // qwen2 keeps the HF (NeoX) order and has q/k/v biases.
  c.rope_style = c.family == ModelFamily::kQwen2 ? RopeStyle::kNeox : RopeStyle::kInterleaved;
  c.attn_qkv_bias = c.family == ModelFamily::kQwen2;
  c.norm = NormKind::kRmsNorm;
  c.activation = Activation::kSilu;

  if (c.vocab_size == 0) {
    if (const KeyValue* tokens = find("tokenizer.ggml.tokens"); tokens && tokens->type == GgufValueType::kArray)
      c.vocab_size = static_cast<int64_t>(tokens->count);
    for (const TensorInfo& t : tensors_)
      if (t.name == "token_embd.weight" && t.shape.dims.size() == 2) c.vocab_size = t.shape.dims[0];
  }
  c.tied_embeddings = true;
  for (const TensorInfo& t : tensors_)
    if (t.name == "output.weight") c.tied_embeddings = false;
  return {};
}

struct TokenizerModelRow {
  const char* name;
  TokenizerKind kind;
};
const TokenizerModelRow kTokenizerModels[] = {
    {"llama", TokenizerKind::kSentencePiece},
    {"gpt2", TokenizerKind::kBytePairGpt2},
};

Result<void> GgufFile::fill_tokenizer(Model& model) const {
  TokenizerData& tok = model.tokenizer;
  LLMC_ASSIGN_OR_RETURN(const auto kind_name, get_string("tokenizer.ggml.model"));
  if (!kind_name) return {};
  const auto it = std::find_if(std::begin(kTokenizerModels), std::end(kTokenizerModels),
                               [&](const TokenizerModelRow& row) { return *kind_name == row.name; });
  if (it == std::end(kTokenizerModels)) {
    log_warn(name_, ": tokenizer model '", *kind_name, "' is not supported; vocabulary not loaded");
    return {};
  }
  tok.kind = it->kind;
  const KeyValue* tokens = find("tokenizer.ggml.tokens");
  if (!tokens) return make_error(ErrorCode::kFormat, name_, ": missing key 'tokenizer.ggml.tokens'");
  LLMC_ASSIGN_OR_RETURN(tok.tokens, get_string_array(*tokens));
  const uint64_t n = tok.tokens.size();

  if (const KeyValue* kv = find("tokenizer.ggml.scores")) {
    if (kv->type != GgufValueType::kArray || kv->elem_type != GgufValueType::kF32 || kv->count != n)
      return key_error(*kv, str_cat("expected an array of ", n, " f32 values"));
    LLMC_ASSIGN_OR_RETURN(tok.scores, read_numeric_array<float>(name_, data_, size_, *kv, GgufValueType::kF32));
  }
  if (const KeyValue* kv = find("tokenizer.ggml.token_type")) {
    if (kv->type != GgufValueType::kArray ||
        (kv->elem_type != GgufValueType::kI32 && kv->elem_type != GgufValueType::kU32) || kv->count != n)
      return key_error(*kv, str_cat("expected an array of ", n, " i32 values"));
    LLMC_ASSIGN_OR_RETURN(tok.token_types, read_numeric_array<int32_t>(name_, data_, size_, *kv, kv->elem_type));
  }
  if (const KeyValue* kv = find("tokenizer.ggml.merges")) {
    LLMC_ASSIGN_OR_RETURN(tok.merges, get_string_array(*kv));
  }
  LLMC_ASSIGN_OR_RETURN(const auto pre, get_string("tokenizer.ggml.pre"));
  if (pre) tok.pre = *pre;

  struct IdRow {
    const char* key;
    int32_t TokenizerData::*field;
  };
  static const IdRow kIds[] = {
      {"tokenizer.ggml.bos_token_id", &TokenizerData::bos_id},
      {"tokenizer.ggml.eos_token_id", &TokenizerData::eos_id},
      {"tokenizer.ggml.unknown_token_id", &TokenizerData::unk_id},
      {"tokenizer.ggml.padding_token_id", &TokenizerData::pad_id},
  };
  for (const auto& row : kIds) {
    LLMC_ASSIGN_OR_RETURN(const auto id, get_int(row.key));
    if (!id) continue;
    if (*id < 0 || static_cast<uint64_t>(*id) >= n) {
      log_warn(name_, ": ", row.key, " = ", *id, " is outside the vocabulary of ", n, " tokens; ignored");
      continue;
    }
    tok.*row.field = static_cast<int32_t>(*id);
  }
  LLMC_ASSIGN_OR_RETURN(const auto add_bos, get_bool("tokenizer.ggml.add_bos_token"));
  tok.add_bos = add_bos ? *add_bos : tok.kind == TokenizerKind::kSentencePiece;  // llama.cpp's default
  LLMC_ASSIGN_OR_RETURN(const auto add_eos, get_bool("tokenizer.ggml.add_eos_token"));
  tok.add_eos = add_eos ? *add_eos : false;
  return {};
}

// ggml_to_quant of a tensor a chunk of rows at a time, each chunk's buffers written straight to
// their ranges of the scratch file and its file pages given back: neither the blocks nor the Quant
// bytes are ever resident whole. nullopt when a block is not representable or the file cannot take
// them (then the caller repacks on the heap or decodes).
std::optional<QuantEncoding> repack_to_scratch(const TensorInfo& info, const uint8_t* p, ScratchFile& scratch) {
  const int64_t rows = info.shape.rows(), cols = info.shape.cols();
  const int64_t row_bytes = cols / info.type->block_size * info.type->type_size;
  const int64_t chunk = std::max<int64_t>(1, (int64_t{4} << 20) / std::max<int64_t>(row_bytes, 1));
  QuantEncoding out;
  std::array<ScratchFile::Range, 5> ranges;
  std::array<size_t, 5> row_size{};
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(chunk, rows - r0);
    auto q = ggml_to_quant(*info.type, p + r0 * row_bytes, n, cols);
    if (!q) return std::nullopt;
    const std::array<const Bytes*, 5> parts = {&q->codes, &q->scales, &q->mins, &q->scale_meta, &q->min_meta};
    if (r0 == 0) {
      out = *q;
      for (size_t k = 0; k < parts.size(); ++k) {
        LLMC_CHECK(parts[k]->size() % static_cast<size_t>(n) == 0, "ggml blocks split across rows");
        row_size[k] = parts[k]->size() / static_cast<size_t>(n);
        ranges[k] = scratch.reserve(row_size[k] * static_cast<size_t>(rows));
      }
    }
    for (size_t k = 0; k < parts.size(); ++k) {
      if (auto w = scratch.write(ranges[k], row_size[k] * static_cast<size_t>(r0), parts[k]->span()); !w.ok()) {
        log_warn(w.error().message, "; '", info.name, "' stays in memory");
        return std::nullopt;
      }
    }
    release_file_pages(p + r0 * row_bytes, static_cast<size_t>(n * row_bytes));
  }
  const std::array<Bytes*, 5> parts = {&out.codes, &out.scales, &out.mins, &out.scale_meta, &out.min_meta};
  for (size_t k = 0; k < parts.size(); ++k) {
    if (row_size[k] == 0) continue;
    auto v = scratch.view(ranges[k]);
    if (!v.ok()) {
      log_warn(v.error().message, "; '", info.name, "' stays in memory");
      return std::nullopt;
    }
    *parts[k] = std::move(v).value();
  }
  return out;
}

// Float types stay Dense (views of the mapping); quantized types with a Quant layout are repacked
// into it (same values, no f32 copy; into `scratch` when given); the rest are decoded once to f32.
Tensor make_tensor(const TensorInfo& info, const uint8_t* p, const std::shared_ptr<const void>& owner,
                   const std::string& file, ScratchFile* scratch) {
  const GgmlType type = info.type->type;
  const int64_t numel = info.shape.numel();
  auto tensor = [&](auto node) {
    return Tensor{info.name, info.shape, std::make_shared<Encoding>(Encoding{std::move(node)})};
  };
  DenseEncoding d;
  if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16) {
    d.dtype = type == GgmlType::kF32 ? DType::kF32 : type == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
    if (reinterpret_cast<uintptr_t>(p) % dtype_bytes(d.dtype) == 0)
      d.data = Bytes::view(owner, p, info.nbytes);
    else
      d.data = Bytes::owned(std::vector<uint8_t>(p, p + info.nbytes));
    return tensor(std::move(d));
  }
  if (info.type->quant && scratch) {
    if (auto q = repack_to_scratch(info, p, *scratch)) return tensor(std::move(*q));
  }
  if (info.type->quant) {
    if (auto q = ggml_to_quant(*info.type, p, info.shape.rows(), info.shape.cols())) {
      release_file_pages(p, info.nbytes);  // read once: the file pages need not stay resident
      return tensor(std::move(*q));
    }
    log_warn(file, ": tensor '", info.name, "' (", info.type->name,
             ") has a non-finite super-block scale; decoded to f32 instead of kept quantized");
  }
  // Decode once to f32, in chunks of blocks that threads share.
  std::vector<uint8_t> raw(static_cast<size_t>(numel) * 4);
  float* out = reinterpret_cast<float*>(raw.data());
  const int64_t n_blocks = numel / info.type->block_size;
  constexpr int64_t kChunk = 1024;
  const int64_t n_chunks = (n_blocks + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t b0 = c * kChunk, nb = std::min(kChunk, n_blocks - b0);
    info.type->dequant(p + b0 * info.type->type_size, nb, out + b0 * info.type->block_size);
  }
  release_file_pages(p, info.nbytes);
  d.dtype = DType::kF32;
  d.data = Bytes::owned(std::move(raw));
  return tensor(std::move(d));
}

Result<void> GgufFile::load_tensors(Model& model, const std::shared_ptr<const void>& owner,
                                    ScratchFile* scratch) const {
  // Canonical order first (when the config is usable), then anything else in file order.
  std::vector<const TensorInfo*> order;
  std::unordered_map<std::string, const TensorInfo*> by_name;
  for (const TensorInfo& t : tensors_) by_name[t.name] = &t;
  if (validate_config(model.config).ok())
    for (const TensorSpec& spec : expected_tensors(model.config)) {
      auto it = by_name.find(spec.name);
      if (it == by_name.end()) continue;
      order.push_back(it->second);
      by_name.erase(it);
    }
  for (const TensorInfo& t : tensors_)
    if (by_name.count(t.name)) order.push_back(&t);
  for (const TensorInfo* t : order) {
    const uint8_t* p = data_ + data_start_ + t->offset;
    Tensor tensor = make_tensor(*t, p, owner, name_, scratch);
    tensor.encoding = store_or_keep(scratch, tensor.encoding);  // repacked or decoded bytes leave the heap
    LLMC_TRY(model.add(std::move(tensor)));
    if (scratch) trim_heap();
  }
  return {};
}

}  // namespace

Result<Model> read_gguf_memory(const std::string& name, std::shared_ptr<const void> owner, const uint8_t* data,
                               size_t size, bool require_tensors, bool load_tensors, ScratchFile* scratch) {
  Model model;
  GgufFile file(name, data, size);
  LLMC_TRY(file.parse_header(model));
  if (require_tensors && !file.has_tensors())
    return make_error(ErrorCode::kFormat, name, ": holds no tensors (a vocabulary-only file?)");
  auto config = file.fill_config(model);
  if (file.has_tensors()) {
    LLMC_TRY(config);
  } else if (!config.ok()) {
    model.config = ModelConfig{};  // vocabulary-only files may describe architectures llmc does not run
  }
  LLMC_TRY(file.fill_tokenizer(model));
  if (!load_tensors) return model;
  LLMC_TRY(file.load_tensors(model, owner, scratch));
  if (file.has_tensors()) {
    auto valid = validate_model(model);
    if (!valid.ok()) return with_context(valid.error(), name);
  }
  return model;
}

Result<Model> read_gguf(const std::string& path, bool require_tensors, bool load_tensors, ScratchFile* scratch) {
  LLMC_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
  const uint8_t* data = file->data();
  const size_t size = file->size();
  return read_gguf_memory(path, std::move(file), data, size, require_tensors, load_tensors, scratch);
}

}  // namespace llmc
