// Starting workers (transport first, then the actor) and the plain functions of cluster_spec.

#include "actors/worker.hpp"

#include <caf/io/all.hpp>

#include <cstring>
#include <set>

#include "actors/worker_common.hpp"
#include "transport/loopback.hpp"
#ifdef AFD_CLUSTER_HAS_UCX
#include "transport/ucx/ucx_transport.hpp"
#endif

namespace afd::actors {

const char* to_string(worker_role r) noexcept { return r == worker_role::attention ? "attention" : "ffn"; }

int cluster_spec::attention_index(const std::string& n) const {
  for (std::size_t i = 0; i < attention_workers.size(); ++i)
    if (attention_workers[i].name == n) return static_cast<int>(i);
  return -1;
}

int cluster_spec::ffn_index(const std::string& n) const {
  for (std::size_t i = 0; i < ffn_workers.size(); ++i)
    if (ffn_workers[i].name == n) return static_cast<int>(i);
  return -1;
}

std::uint16_t cluster_spec::rank_of(worker_role role, int index) const {
  return static_cast<std::uint16_t>(role == worker_role::attention ? index
                                                                    : static_cast<int>(attention_workers.size()) + index);
}

expected<void> cluster_spec::validate() const {
  if (attention_workers.empty() || ffn_workers.empty())
    return fail(errc::invalid_config, "cluster '", name, "' needs at least one attention and one FFN worker (has ",
                attention_workers.size(), " and ", ffn_workers.size(), ")");
  std::set<std::string> names;
  for (const auto& a : attention_workers)
    if (!names.insert(a.name).second) return fail(errc::invalid_config, "worker name '", a.name, "' is used twice");
  for (const auto& f : ffn_workers)
    if (!names.insert(f.name).second) return fail(errc::invalid_config, "worker name '", f.name, "' is used twice");
  for (const auto& a : attention_workers)
    if (a.kv_blocks < 1 || a.block_size < 1 || a.max_batch < 1)
      return fail(errc::invalid_config, "attention worker '", a.name, "': kv_blocks, block_size and max_batch must be >= 1");
  for (const auto& f : ffn_workers)
    if (static_cast<std::int64_t>(f.assignment.units.size()) != model.num_layers)
      return fail(errc::invalid_config, "FFN worker '", f.name, "' has units for ", f.assignment.units.size(),
                  " layers; the model has ", model.num_layers);
  if (plane.micro_batches < 1) return fail(errc::invalid_config, "micro_batches must be >= 1");
  if (limits.queue < 0) return fail(errc::invalid_config, "limits.queue must be >= 0");
  return {};
}

namespace detail {

expected<std::vector<transport::peer_id>> connect_all(transport::transport& t,
                                                      const std::vector<std::vector<std::uint8_t>>& addresses,
                                                      const char* what, peer_table& known) {
  std::vector<transport::peer_id> peers;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    if (auto it = known.find(addresses[i]); it != known.end()) {
      peers.push_back(it->second);
      continue;
    }
    std::span<const std::byte> blob(reinterpret_cast<const std::byte*>(addresses[i].data()), addresses[i].size());
    auto p = t.connect(blob);
    if (!p) return fail(p.err().code(), "cannot connect to ", what, " ", i, ": ", p.err().message());
    known.emplace(addresses[i], *p);
    peers.push_back(*p);
  }
  return peers;
}

std::vector<std::uint8_t> address_bytes(const transport::transport& t) {
  const auto a = t.address();
  std::vector<std::uint8_t> out(a.size());
  if (!a.empty()) std::memcpy(out.data(), a.data(), a.size());
  return out;
}

}  // namespace detail

namespace {

expected<std::unique_ptr<transport::transport>> make_transport(const cluster_spec& spec, std::uint16_t rank,
                                                               const worker_environment& env) {
  if (spec.transport.type == transport_settings::kind::loopback) {
    if (!env.fabric)
      return fail(errc::invalid_config, "transport kind loopback needs an in-process fabric (embedded cluster only)");
    return transport::make_loopback_transport(env.fabric, rank);
  }
#ifdef AFD_CLUSTER_HAS_UCX
  transport::transport_config c;
  c.rank = rank;
  c.tls = spec.transport.tls;
  c.net_devices = spec.transport.net_devices;
  c.errors = spec.transport.errors;
  return transport::make_ucx_transport(c);
#else
  return fail(errc::unsupported, "transport kind ucx: this build has no UCX transport");
#endif
}

}  // namespace

expected<caf::actor> spawn_worker(caf::actor_system& sys, const cluster_spec& spec, const std::string& name,
                                  caf::actor coordinator, worker_environment env) {
  detail::worker_context ctx;
  ctx.name = name;
  if (int i = spec.attention_index(name); i >= 0) {
    ctx.role = worker_role::attention;
    ctx.index = i;
  } else if (int f = spec.ffn_index(name); f >= 0) {
    ctx.role = worker_role::ffn;
    ctx.index = f;
  } else {
    return fail(errc::invalid_argument, "worker '", name, "' is not in cluster '", spec.name, "'");
  }
  if (!coordinator) return fail(errc::invalid_argument, "worker '", name, "': no coordinator");
  auto t = make_transport(spec, spec.rank_of(ctx.role, ctx.index), env);
  if (!t) return fail(t.err().code(), "worker '", name, "': ", t.err().message());
  ctx.transport = std::shared_ptr<transport::transport>(std::move(*t));
  ctx.spec = spec;
  ctx.coordinator = std::move(coordinator);
  return ctx.role == worker_role::attention ? detail::spawn_attention_worker(sys, std::move(ctx))
                                            : detail::spawn_ffn_worker(sys, std::move(ctx));
}

expected<caf::actor> start_worker(caf::actor_system& sys, const cluster_spec& spec, const std::string& name,
                                  const std::string& coordinator_host, std::uint16_t coordinator_port,
                                  worker_environment env) {
  auto coordinator = sys.middleman().remote_actor(coordinator_host, coordinator_port);
  if (!coordinator)
    return fail(errc::unavailable, "worker '", name, "': cannot reach the coordinator at ", coordinator_host, ":",
                coordinator_port, ": ", sys.render(coordinator.error()));
  return spawn_worker(sys, spec, name, *coordinator, std::move(env));
}

}  // namespace afd::actors
