#include "actors/messages.hpp"

#include <caf/io/all.hpp>

#include "actors/timeouts.hpp"

namespace afd::actors {

namespace {

const caf::atom_value afd_category = caf::atom("afd");

std::string context_text(const caf::message& m) {
  if (m.match_elements<std::string>()) return m.get_as<std::string>(0);
  return caf::to_string(m);
}

}  // namespace

void register_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<register_worker_msg>("register_worker_msg");
  cfg.add_message_type<unit_slice_rec>("unit_slice_rec");
  cfg.add_message_type<start_epoch_msg>("start_epoch_msg");
  cfg.add_message_type<request_msg>("request_msg");
  cfg.add_message_type<admit_msg>("admit_msg");
  cfg.add_message_type<token_rec>("token_rec");
  cfg.add_message_type<finished_rec>("finished_rec");
  cfg.add_message_type<worker_report_msg>("worker_report_msg");
  cfg.add_message_type<worker_failed_msg>("worker_failed_msg");
  cfg.add_message_type<token_batch_msg>("token_batch_msg");
  cfg.add_message_type<worker_status_msg>("worker_status_msg");
  cfg.add_message_type<cluster_status_msg>("cluster_status_msg");
  cfg.add_message_type<heartbeat_msg>("heartbeat_msg");
  cfg.add_message_type<fault_plan_msg>("fault_plan_msg");
  cfg.add_message_type<cluster_event_rec>("cluster_event_rec");
  // CAF's own link liveness is off by default; a frozen or partitioned peer process would then
  // never end its connection (timeouts.hpp).
  cfg.set("middleman.heartbeat-interval", caf::timespan{timeouts::middleman_heartbeat});
  cfg.set("middleman.connection-timeout", caf::timespan{timeouts::middleman_connection_timeout});
  // The templated add_error_category<T> does not compile in CAF 0.17.6: register a renderer.
  cfg.add_error_category(afd_category, [](std::uint8_t code, caf::atom_value, const caf::message& ctx) {
    return std::string("afd: ") + afd::to_string(static_cast<errc>(code)) + ": " + context_text(ctx);
  });
}

void configure_scheduler(caf::actor_system_config& cfg, std::size_t threads) {
  cfg.set("scheduler.max-threads", threads == 0 ? std::size_t{1} : threads);
  // Workers block on their own threads (detached actors); the shared pool only runs light
  // handlers, so it need not spin looking for work.
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

caf::error to_caf_error(const afd::error& e) {
  return caf::error(static_cast<std::uint8_t>(e.code()), afd_category, caf::make_message(e.message()));
}

afd::error from_caf_error(const caf::error& e) {
  if (!e) return afd::error{};
  if (e.category() == afd_category) return afd::error{static_cast<errc>(e.code()), context_text(e.context())};
  if (e.category() == caf::atom("system")) {
    const auto code = static_cast<caf::sec>(e.code());
    if (code == caf::sec::request_timeout) return afd::error{errc::timeout, "no answer from the cluster in time"};
    return afd::error{errc::unavailable, "cluster unreachable: " + caf::to_string(code)};
  }
  return afd::error{errc::unavailable, caf::to_string(e)};
}

engine::request to_engine_request(const request_msg& m) {
  engine::request r;
  r.prompt = m.prompt;
  r.max_new_tokens = m.max_new_tokens;
  r.sampling.temperature = m.temperature;
  r.sampling.top_k = m.top_k;
  r.sampling.top_p = m.top_p;
  r.sampling.seed = m.seed;
  r.stop_ids = m.stop_ids;
  r.logits_rows = m.logits_rows;
  return r;
}

}  // namespace afd::actors
