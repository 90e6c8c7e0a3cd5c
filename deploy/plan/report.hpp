#pragma once
/// Output of `afd plan`: aligned text tables for people and JSON for programs. JSON objects have
/// sorted keys and numbers rounded to 6 significant digits, so the same inputs give the same bytes.

#include <string>
#include <vector>

#include "deploy/plan/cost_model.hpp"
#include "deploy/plan/deploy_planner.hpp"

namespace afd::plan {

/// `afd plan cost` as text.
std::string format_cost_text(const cost_report& r);
/// `afd plan cost --json`.
std::string format_cost_json(const cost_report& r);

/// `afd plan sparsity` as text.
std::string format_sparsity_text(const std::vector<sparsity_row>& rows, const sparsity_assumptions& s);
/// `afd plan sparsity --json`.
std::string format_sparsity_json(const std::vector<sparsity_row>& rows, const sparsity_assumptions& s);

/// `afd plan deploy` as text.
std::string format_deploy_text(const deploy_plan& p);
/// `afd plan deploy --json`.
std::string format_deploy_json(const deploy_plan& p);

/// `afd plan deploy --topology FILE` as text: the layout's prediction and what breaks the budget.
std::string format_topology_text(const deploy_plan& context, const topology_counts& t, const deploy_evaluation& e,
                                 const std::string& file);
/// The same as JSON.
std::string format_topology_json(const deploy_plan& context, const topology_counts& t, const deploy_evaluation& e,
                                 const std::string& file);

/// A value with 6 significant digits (what the JSON output holds).
double round6(double v);

}  // namespace afd::plan
