// safetensors header parsing and validation (hostile input: every offset checked against the file).
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace llmc {

namespace {

using Json = nlohmann::json;

const SafetensorsDTypeInfo kDTypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
    {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8},
};

constexpr int kMaxJsonDepth = 4;  // root object > tensor entry > shape array
constexpr size_t kMaxDims = 16;

Error header_error(const std::string& file, const std::string& what) {
  return make_error(ErrorCode::kFormat, file, ": safetensors header: ", what);
}

Result<SafetensorsEntry> parse_entry(const std::string& file, const std::string& name, const Json& j,
                                     uint64_t data_start, uint64_t data_size) {
  auto bad = [&](const std::string& what) { return header_error(file, str_cat("tensor '", name, "': ", what)); };
  if (!j.is_object()) return bad("entry is not an object");
  for (const auto& [key, value] : j.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") return bad(str_cat("unknown key '", key, "'"));
  const auto dt = j.find("dtype"), sh = j.find("shape"), off = j.find("data_offsets");
  if (dt == j.end() || !dt->is_string()) return bad("missing or non-string 'dtype'");
  if (sh == j.end() || !sh->is_array()) return bad("missing or non-array 'shape'");
  if (off == j.end() || !off->is_array() || off->size() != 2) return bad("'data_offsets' must be [begin, end]");
  SafetensorsEntry e;
  e.name = name;
  e.dtype = dt->get<std::string>();
  const SafetensorsDTypeInfo* info = safetensors_dtype(e.dtype);
  if (!info) return make_error(ErrorCode::kUnsupported, file, ": tensor '", name, "': unknown dtype '", e.dtype, "'");
  e.elem_bytes = info->bytes;
  if (sh->size() > kMaxDims) return bad(str_cat("shape has ", sh->size(), " dims"));
  uint64_t numel = 1;
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
    const uint64_t v = d.get<uint64_t>();
    if (v > (uint64_t(1) << 62) || __builtin_mul_overflow(numel, v, &numel)) return bad("shape too large");
    e.shape.push_back(static_cast<int64_t>(v));
  }
  if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
    return bad("data_offsets must be non-negative integers");
  const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
  if (begin > end) return bad(str_cat("data_offsets [", begin, ", ", end, "] are reversed"));
  if (end > data_size)
    return bad(
        str_cat("data_offsets [", begin, ", ", end, "] past the end of the data buffer (", data_size, " bytes)"));
  uint64_t want = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(info->bytes), &want) || want != end - begin)
    return bad(str_cat(e.dtype, " shape of ", numel, " elements needs ", numel * info->bytes, " bytes, data_offsets [",
                       begin, ", ", end, "] hold ", end - begin));
  e.begin = data_start + begin;
  e.end = data_start + end;
  return e;
}

}  // namespace

const SafetensorsDTypeInfo* safetensors_dtype(const std::string& name) {
  for (const auto& row : kDTypes)
    if (name == row.name) return &row;
  return nullptr;
}

Result<SafetensorsHeader> parse_safetensors(const std::string& file, const uint8_t* data, size_t size) {
  if (size < 8) return make_error(ErrorCode::kFormat, file, ": truncated: ", size, " bytes, need at least 8");
  uint64_t n = 0;
  std::memcpy(&n, data, 8);
  if (n > kSafetensorsMaxHeader)
    return make_error(ErrorCode::kFormat, file, ": at offset 0: header length ", n, " exceeds the limit of ",
                      kSafetensorsMaxHeader, " bytes");
  if (n > size - 8)
    return make_error(ErrorCode::kFormat, file, ": at offset 0: header length ", n, " runs past the end of the file (",
                      size, " bytes)");
  if (n < 2) return make_error(ErrorCode::kFormat, file, ": at offset 0: header length ", n, " is too small");

  // Parse with a callback that rejects duplicate top-level names and deep nesting (the reference
  // implementation refuses both; keeping only the last duplicate would silently drop a tensor).
  std::set<std::string> seen;
  std::string duplicate;
  bool too_deep = false;
  const auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (depth > kMaxJsonDepth) {
      too_deep = true;
      return false;
    }
    if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  Json root;
  try {
    const char* begin = reinterpret_cast<const char*>(data + 8);
    root = Json::parse(begin, begin + n, callback);
  } catch (const Json::exception& e) {
    return header_error(file, str_cat("invalid JSON (header bytes 8..", 8 + n, "): ", e.what()));
  }
  if (too_deep) return header_error(file, "JSON nested too deeply");
  if (!duplicate.empty()) return header_error(file, str_cat("duplicate tensor name '", duplicate, "'"));
  if (!root.is_object()) return header_error(file, "top level is not a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return header_error(file, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) return header_error(file, str_cat("__metadata__ value of '", mk, "' is not a string"));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    LLMC_ASSIGN_OR_RETURN(SafetensorsEntry e, parse_entry(file, key, value, h.data_start, data_size));
    h.tensors.push_back(std::move(e));
  }
  // nlohmann orders object keys by name; report tensors in file order.
  std::stable_sort(h.tensors.begin(), h.tensors.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  // Sorted by begin, the furthest end so far belongs to the last non-empty tensor.
  const SafetensorsEntry* last = nullptr;
  for (const auto& cur : h.tensors) {
    if (cur.end == cur.begin) continue;
    if (last && cur.begin < last->end)
      return header_error(file, str_cat("tensor '", cur.name, "' at data offset ", cur.begin - h.data_start,
                                        " overlaps tensor '", last->name, "' ending at ", last->end - h.data_start));
    last = &cur;
  }
  return h;
}

}  // namespace llmc
