#pragma once
/// TLS with mutual authentication for the control plane (CAF's OpenSSL module): a certificate
/// authority made for one cluster, a certificate and key per role signed by it, and the switches
/// that make an actor system use them. What CAF 0.17's module checks and what it does not:
/// deploy/launch/README.md, "TLS". This header compiles without CAF and OpenSSL.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/error.hpp"

namespace caf {
class actor;
class actor_system;
class actor_system_config;
}  // namespace caf

namespace afd::launch::tls {

/// Who presents a certificate. CAF does not tell actors which certificate a peer presented, so
/// the roles are separate files (issued, rotated and handed out separately), not separate rights.
enum class role : std::uint8_t { coordinator, worker, client };
/// "coordinator" / "worker" / "client".
std::string_view to_string(role r) noexcept;

/// What one actor system presents and trusts: PEM files.
struct credentials {
  std::string ca_file;           ///< the cluster's CA certificate: the only issuer trusted
  std::string certificate_file;  ///< this role's certificate, signed by that CA
  std::string key_file;          ///< its private key, readable by its owner only
  std::string passphrase;        ///< empty: the key is not encrypted
};

/// What generate_cluster_credentials wrote into `directory`: ca.pem and ca.key (the CA's key
/// stays with the launcher; nodes get ca.pem and their role's pair), and <role>.pem, <role>.key.
struct cluster_credentials {
  std::string directory;
  std::string ca_key_file;
  credentials coordinator;
  credentials worker;
  credentials client;
  /// The files of `r`.
  const credentials& of(role r) const;
};

/// The files of role `r` in a directory laid out as generate_cluster_credentials writes it:
/// DIR/ca.pem, DIR/<role>.pem, DIR/<role>.key (not checked here; see check_credentials).
credentials credentials_of(const std::string& directory, role r);

/// Settings of a new cluster CA.
struct generate_options {
  std::string cluster_name = "afd";  ///< in the subject of every certificate
  /// Names and addresses of the coordinator (subjectAltName of its certificate; IPs as IP
  /// entries). CAF does not check them; other TLS clients can.
  std::vector<std::string> coordinator_hosts;
  int validity_days = 30;  ///< every certificate; from one hour ago, so that clock skew between nodes is tolerated
};

/// Makes a CA (EC P-256, SHA-256) and one certificate and key per role into `directory`
/// (created 0700 when missing; keys 0600, certificates 0644; existing files are replaced). Uses
/// the OpenSSL library only. errc::io_error when a file cannot be written.
expected<cluster_credentials> generate_cluster_credentials(const std::string& directory,
                                                           const generate_options& options);

/// Checks before CAF sees them (CAF's OpenSSL module throws inside its I/O thread on a file it
/// cannot load): every file readable and PEM; the key not readable by group or others, matching
/// the certificate, and opened with `passphrase`; the certificate issued by the CA and valid now.
/// errc::invalid_config naming the file and the problem.
expected<void> check_credentials(const credentials& c);

/// Loads CAF's OpenSSL module into `cfg` and sets openssl.certificate, .key, .passphrase and
/// .cafile to `c`, after check_credentials. Call after cfg.load<caf::io::middleman>() (the module
/// needs the middleman) and before the actor system is made. From then on the system's TLS
/// endpoints (publish / connect with secure = true) require a peer certificate issued by the CA,
/// on both ends.
expected<void> apply(const credentials& c, caf::actor_system_config& cfg);

/// Publishes `whom` at host:port (host empty: every address; port 0: any), through TLS when
/// `secure` (apply() must have loaded the module), else through the plain middleman. The port.
expected<std::uint16_t> publish(caf::actor_system& sys, const caf::actor& whom, std::uint16_t port,
                                const std::string& host, bool secure);

/// The actor published at host:port, through TLS when `secure`. Gives up after `timeout`: a TLS
/// endpoint and a plain one wait for each other's first bytes forever, and CAF's remote_actor
/// has no deadline. Refusals are errc::unavailable with a message saying what was refused.
expected<caf::actor> connect(caf::actor_system& sys, const std::string& host, std::uint16_t port, bool secure,
                             std::chrono::milliseconds timeout);

}  // namespace afd::launch::tls
