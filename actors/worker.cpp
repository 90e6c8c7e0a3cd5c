// Starting workers (transport first, then the actor) and the plain functions of cluster_spec.

#include "actors/worker.hpp"

#include <caf/io/all.hpp>

#include <chrono>
#include <cstring>
#include <set>

#include "actors/worker_common.hpp"
#include "kernels/backend.hpp"
#include "transport/loopback.hpp"
#include "transport/ucx/ucx_transport.hpp"

namespace afd::actors {

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

expected<std::unique_ptr<transport::transport>> make_transport(const dataplane::cluster_spec& spec, std::uint16_t rank,
                                                               const worker_environment& env) {
  if (spec.transport.type == dataplane::transport_settings::kind::loopback) {
    if (!env.fabric)
      return fail(errc::invalid_config, "transport kind loopback needs an in-process fabric (embedded cluster only)");
    return transport::make_loopback_transport(env.fabric, rank);
  }
  transport::transport_config c;
  c.rank = rank;
  c.tls = spec.transport.tls;
  c.net_devices = spec.transport.net_devices;
  c.errors = spec.transport.errors;
  return transport::make_ucx_transport(c);
}

}  // namespace

expected<caf::actor> spawn_worker(caf::actor_system& sys, const dataplane::cluster_spec& spec, const std::string& name,
                                  caf::actor coordinator, worker_environment env) {
  detail::worker_context ctx;
  ctx.name = name;
  if (int i = spec.attention_index(name); i >= 0) {
    ctx.role = dataplane::worker_role::attention;
    ctx.index = i;
  } else if (int f = spec.ffn_index(name); f >= 0) {
    ctx.role = dataplane::worker_role::ffn;
    ctx.index = f;
  } else {
    return fail(errc::invalid_argument, "worker '", name, "' is not in cluster '", spec.name, "'");
  }
  if (!coordinator) return fail(errc::invalid_argument, "worker '", name, "': no coordinator");
  // The worker's compute device: refused here, before anything starts, when this process cannot
  // use it (no CUDA in the build, no driver, no such GPU); never replaced by the CPU.
  const std::string& device = ctx.role == dataplane::worker_role::attention
                                  ? spec.attention_workers[static_cast<std::size_t>(ctx.index)].device
                                  : spec.ffn_workers[static_cast<std::size_t>(ctx.index)].device;
  if (auto usable = kernels::probe_device(device); !usable)
    return fail(usable.err().code(), "worker '", name, "' cannot start on ", usable.err().message());
  auto t = make_transport(spec, spec.rank_of(ctx.role, ctx.index), env);
  if (!t) return fail(t.err().code(), "worker '", name, "': ", t.err().message());
  ctx.site = std::make_shared<faults::fault_site>(faults::site_identity{name, to_string(ctx.role)});
  ctx.counters = std::make_shared<transport::transport_counters>();
  // The data plane's fault points and counters wrap the transport; rules name peers by worker name.
  std::vector<std::string> names;
  for (int i = 0; i < static_cast<int>(spec.attention_workers.size()); ++i) {
    const auto r = spec.rank_of(dataplane::worker_role::attention, i);
    if (names.size() <= r) names.resize(r + 1u);
    names[r] = spec.attention_workers[static_cast<std::size_t>(i)].name;
  }
  for (int i = 0; i < static_cast<int>(spec.ffn_workers.size()); ++i) {
    const auto r = spec.rank_of(dataplane::worker_role::ffn, i);
    if (names.size() <= r) names.resize(r + 1u);
    names[r] = spec.ffn_workers[static_cast<std::size_t>(i)].name;
  }
  auto peer_name = [names](transport::rank_t r) { return r < names.size() ? names[r] : std::string(); };
  ctx.transport = std::shared_ptr<transport::transport>(
      transport::make_instrumented_transport(std::move(*t), ctx.site, peer_name, ctx.counters));
  ctx.spec = spec;
  ctx.spec.plane.device = device;  // the engines' options come from ctx.spec.plane
  ctx.coordinator = std::move(coordinator);
  // Lives of a worker name must differ across restarts of its process: the wall clock in ns.
  ctx.incarnation = env.incarnation != 0 ? env.incarnation
                                         : static_cast<std::uint64_t>(
                                               std::chrono::system_clock::now().time_since_epoch().count());
  ctx.on_exit = env.on_exit;
  ctx.reconnect = env.reconnect;
  ctx.reconnect_grace = env.reconnect_grace;
  if (env.faults) ctx.site->arm(env.faults);
  return detail::spawn_worker_actor(sys, std::move(ctx));
}

expected<caf::actor> start_worker(caf::actor_system& sys, const dataplane::cluster_spec& spec, const std::string& name,
                                  const std::string& coordinator_host, std::uint16_t coordinator_port,
                                  worker_environment env) {
  auto coordinator = sys.middleman().remote_actor(coordinator_host, coordinator_port);
  if (!coordinator)
    return fail(errc::unavailable, "worker '", name, "': cannot reach the coordinator at ", coordinator_host, ":",
                coordinator_port, ": ", sys.render(coordinator.error()));
  return spawn_worker(sys, spec, name, *coordinator, std::move(env));
}

}  // namespace afd::actors
