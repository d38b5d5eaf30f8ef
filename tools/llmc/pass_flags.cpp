// CLI11 flags from pass option declarations.
#include "pass_flags.h"

#include <algorithm>
#include <map>

namespace llmc::cli {

void PassFlags::add(CLI::App& sub, const std::vector<std::unique_ptr<Pass>>& passes,
                    const std::set<std::string>& skip) {
  // name -> (first declaration, declaring passes); declaration order of the first pass first.
  std::vector<std::string> order;
  std::map<std::string, std::pair<OptionInfo, std::vector<std::string>>> seen;
  for (const auto& pass : passes) {
    for (OptionInfo& info : list_options(*pass)) {
      if (skip.count(info.name)) continue;
      const std::string name = info.name;
      auto it = seen.find(name);
      if (it == seen.end()) {
        order.push_back(name);
        it = seen.emplace(name, std::make_pair(std::move(info), std::vector<std::string>{})).first;
      } else {
        // The same name in several passes: the flag accepts every pass's choices; the chosen pass
        // checks its own (validate_options).
        auto& choices = it->second.first.choices;
        if (info.choices.empty()) choices.clear();  // free text somewhere: no choice check
        for (const std::string& c : info.choices)
          if (!choices.empty() && std::find(choices.begin(), choices.end(), c) == choices.end()) choices.push_back(c);
      }
      it->second.second.emplace_back(pass->name());
    }
  }
  for (const std::string& name : order) {
    const auto& [info, owners] = seen.at(name);
    std::string help = info.help;
    if (owners.size() < passes.size()) {
      help += " [";
      for (size_t k = 0; k < owners.size(); ++k) help += (k ? ", " : "") + owners[k];
      help += "]";
    }
    if (info.kind != OptionKind::kStringList) help += " (default: " + info.value.dump() + ")";
    Flag& f = flags_.emplace_back();
    f.name = name;
    f.kind = info.kind;
    const std::string flag = option_flag_name(name);
    switch (info.kind) {
      case OptionKind::kBool: f.opt = sub.add_flag(flag, f.b, help); break;
      case OptionKind::kInt: f.opt = sub.add_option(flag, f.i, help); break;
      case OptionKind::kDouble: f.opt = sub.add_option(flag, f.d, help); break;
      case OptionKind::kString:
        f.opt = sub.add_option(flag, f.s, help);
        if (!info.choices.empty()) f.opt->check(CLI::IsMember(info.choices));
        break;
      case OptionKind::kStringList: f.opt = sub.add_option(flag, f.list, help)->allow_extra_args(false); break;
    }
    f.opt->group("Pass options");
  }
}

nlohmann::ordered_json PassFlags::given() const {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const Flag& f : flags_) {
    if (f.opt->count() == 0) continue;
    switch (f.kind) {
      case OptionKind::kBool: out[f.name] = f.b; break;
      case OptionKind::kInt: out[f.name] = f.i; break;
      case OptionKind::kDouble: out[f.name] = f.d; break;
      case OptionKind::kString: out[f.name] = f.s; break;
      case OptionKind::kStringList: out[f.name] = f.list; break;
    }
  }
  return out;
}

}  // namespace llmc::cli
