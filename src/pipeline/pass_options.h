// Pass options as JSON values: reading a pass's declared options (for provenance and help) and
// setting them from a JSON object with type checks (recipes and CLI flags both go through this).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "passes/pass.h"

namespace llmc {

enum class OptionKind { kBool, kInt, kDouble, kString, kStringList };
const char* option_kind_name(OptionKind kind);  // "bool", "integer", "number", "string", "list of strings"

// One declared option of a pass, with its current (default) value.
struct OptionInfo {
  std::string name;  // snake_case
  OptionKind kind = OptionKind::kBool;
  std::string help;
  std::vector<std::string> choices;  // strings only; empty = free text
  nlohmann::ordered_json value;
};

// Every option the pass declares, in declaration order, with current values.
std::vector<OptionInfo> list_options(Pass& pass);
// {name: value, ...} of every option (resolved: defaults included), in declaration order.
nlohmann::ordered_json options_to_json(Pass& pass);

// Why setting one option failed: `key` is the option name ("" when not about one key).
struct OptionError {
  std::string key;
  std::string message;
};

// Sets options from a JSON object. Types are strict: integer options take integers, number
// options integers or floats, bool options true/false, strings one of the choices, lists a
// string or an array of strings. Keys the pass does not declare are errors listing the known
// ones. Returns the first error, or nothing.
std::optional<OptionError> set_options_from_json(Pass& pass, const nlohmann::ordered_json& values);

// "--group-size" for "group_size".
std::string option_flag_name(const std::string& name);

}  // namespace llmc
