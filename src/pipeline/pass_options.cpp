// Reading and setting pass options through OptionVisitor, with JSON as the common value type.
#include "pipeline/pass_options.h"

#include <cmath>
#include <set>

namespace llmc {

const char* option_kind_name(OptionKind kind) {
  switch (kind) {
    case OptionKind::kBool: return "bool";
    case OptionKind::kInt: return "integer";
    case OptionKind::kDouble: return "number";
    case OptionKind::kString: return "string";
    case OptionKind::kStringList: return "list of strings";
  }
  return "?";
}

std::string option_flag_name(const std::string& name) {
  std::string flag = "--" + name;
  for (char& c : flag)
    if (c == '_') c = '-';
  return flag;
}

namespace {

class ListVisitor : public OptionVisitor {
 public:
  std::vector<OptionInfo> out;
  void option(const char* name, bool& value, const char* help) override { add(name, OptionKind::kBool, help, value); }
  void option(const char* name, int64_t& value, const char* help) override { add(name, OptionKind::kInt, help, value); }
  void option(const char* name, double& value, const char* help) override {
    add(name, OptionKind::kDouble, help, value);
  }
  void option(const char* name, std::string& value, const char* help, std::span<const char* const> choices) override {
    OptionInfo& info = add(name, OptionKind::kString, help, value);
    for (const char* c : choices) info.choices.emplace_back(c);
  }
  void option(const char* name, std::vector<std::string>& value, const char* help) override {
    add(name, OptionKind::kStringList, help, value);
  }

 private:
  template <class T>
  OptionInfo& add(const char* name, OptionKind kind, const char* help, const T& value) {
    OptionInfo info;
    info.name = name;
    info.kind = kind;
    info.help = help ? help : "";
    info.value = value;
    out.push_back(std::move(info));
    return out.back();
  }
};

// Applies values[name] to each declared option; remembers the first error and the keys used.
class JsonSetVisitor : public OptionVisitor {
 public:
  explicit JsonSetVisitor(const nlohmann::ordered_json& values) : values_(values) {}
  std::optional<OptionError> error;
  std::set<std::string> used;

  void option(const char* name, bool& value, const char* /*help*/) override {
    if (const nlohmann::ordered_json* v = find(name)) {
      if (!v->is_boolean()) return fail(name, "expects true or false", *v);
      value = v->get<bool>();
    }
  }
  void option(const char* name, int64_t& value, const char* /*help*/) override {
    if (const nlohmann::ordered_json* v = find(name)) {
      if (v->is_number_integer() || v->is_number_unsigned()) {
        if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
          return fail(name, "is out of range", *v);
        value = v->get<int64_t>();
      } else {
        return fail(name, "expects an integer", *v);
      }
    }
  }
  void option(const char* name, double& value, const char* /*help*/) override {
    if (const nlohmann::ordered_json* v = find(name)) {
      if (!v->is_number()) return fail(name, "expects a number", *v);
      value = v->get<double>();
      if (!std::isfinite(value)) return fail(name, "expects a finite number", *v);
    }
  }
  void option(const char* name, std::string& value, const char* /*help*/,
              std::span<const char* const> choices) override {
    if (const nlohmann::ordered_json* v = find(name)) {
      if (!v->is_string()) return fail(name, "expects a string", *v);
      const std::string s = v->get<std::string>();
      if (!choices.empty()) {
        bool ok = false;
        std::string list;
        for (const char* c : choices) {
          ok = ok || s == c;
          list += list.empty() ? "" : ", ";
          list += c;
        }
        if (!ok) return fail(name, str_cat("must be one of ", list), *v);
      }
      value = s;
    }
  }
  void option(const char* name, std::vector<std::string>& value, const char* /*help*/) override {
    if (const nlohmann::ordered_json* v = find(name)) {
      std::vector<std::string> out;
      if (v->is_string()) {
        out.push_back(v->get<std::string>());
      } else if (v->is_array()) {
        for (const auto& e : *v) {
          if (!e.is_string()) return fail(name, "expects a list of strings", *v);
          out.push_back(e.get<std::string>());
        }
      } else {
        return fail(name, "expects a string or a list of strings", *v);
      }
      value = std::move(out);
    }
  }

 private:
  const nlohmann::ordered_json* find(const char* name) {
    used.insert(name);
    auto it = values_.find(name);
    return it == values_.end() ? nullptr : &*it;
  }
  void fail(const char* name, const std::string& what, const nlohmann::ordered_json& got) {
    if (!error) error = OptionError{name, str_cat("option '", name, "' ", what, " (got ", got.dump(), ")")};
  }
  const nlohmann::ordered_json& values_;
};

}  // namespace

std::vector<OptionInfo> list_options(Pass& pass) {
  ListVisitor v;
  pass.visit(v);
  return std::move(v.out);
}

nlohmann::ordered_json options_to_json(Pass& pass) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (OptionInfo& info : list_options(pass)) out[info.name] = std::move(info.value);
  return out;
}

std::optional<OptionError> set_options_from_json(Pass& pass, const nlohmann::ordered_json& values) {
  if (!values.is_object()) return OptionError{"", "options must be a mapping of option names to values"};
  JsonSetVisitor v(values);
  pass.visit(v);
  if (v.error) return v.error;
  for (const auto& [key, value] : values.items()) {
    if (v.used.count(key)) continue;
    std::string known;
    for (const std::string& name : v.used) known += (known.empty() ? "" : ", ") + name;
    return OptionError{key, str_cat("unknown option '", key, "' for pass ", pass.name(),
                                    " (known: ", known.empty() ? "none" : known, ")")};
  }
  return std::nullopt;
}

}  // namespace llmc
