// Cluster credentials with OpenSSL 3 (no openssl command), and CAF's OpenSSL module switched on
// with them. What CAF 0.17.6 does with the settings (libcaf_openssl, session.cpp): with any of
// certificate, key, passphrase, capath or cafile set, every TLS context it makes, for accepted and
// for outgoing connections alike, loads the certificate chain and key, trusts the cafile, and
// sets SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT with ciphers "HIGH:!aNULL:!MD5": both
// ends must present a certificate the other's CA issued. Without them it falls back to anonymous
// ECDH ciphers that authenticate nobody; apply() never leaves it there.
#include "deploy/launch/tls.hpp"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/all.hpp>
#include <caf/scoped_actor.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>

namespace afd::launch::tls {

namespace {

template <class T, void (*Free)(T*)>
struct openssl_deleter {
  void operator()(T* p) const { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, openssl_deleter<EVP_PKEY, EVP_PKEY_free>>;
using x509_ptr = std::unique_ptr<X509, openssl_deleter<X509, X509_free>>;
using bio_ptr = std::unique_ptr<BIO, openssl_deleter<BIO, BIO_free_all>>;
using bignum_ptr = std::unique_ptr<BIGNUM, openssl_deleter<BIGNUM, BN_free>>;
using store_ptr = std::unique_ptr<X509_STORE, openssl_deleter<X509_STORE, X509_STORE_free>>;
using store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, openssl_deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using extension_ptr = std::unique_ptr<X509_EXTENSION, openssl_deleter<X509_EXTENSION, X509_EXTENSION_free>>;

// The errors OpenSSL queued, oldest first, as one line; clears the queue.
std::string openssl_errors() {
  std::string text;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!text.empty()) text += "; ";
    text += buf;
  }
  return text.empty() ? std::string("no detail from OpenSSL") : text;
}

constexpr int seconds_per_day = 86400;
// Certificates start an hour in the past: nodes whose clocks differ a little still accept them.
constexpr long clock_skew_allowance_s = 3600;

struct issued {
  pkey_ptr key;
  x509_ptr certificate;
};

expected<void> add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  extension_ptr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    return fail(errc::internal, "cannot add the certificate extension ", OBJ_nid2sn(nid), " = ", value, ": ",
                openssl_errors());
  return {};
}

// A new key and a certificate for it with `common_name`, signed by `issuer` (self-signed when
// null), a CA when `ca`.
expected<issued> issue(const std::string& common_name, const std::string& cluster_name, const issued* issuer, bool ca,
                       const std::vector<std::string>& alt_names, int validity_days) {
  issued out;
  out.key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  out.certificate.reset(X509_new());
  if (!out.key || !out.certificate) return fail(errc::internal, "cannot make a key pair: ", openssl_errors());
  X509* cert = out.certificate.get();
  X509_set_version(cert, X509_VERSION_3);
  // A random 127-bit serial: unique without a database.
  bignum_ptr serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert)))
    return fail(errc::internal, "cannot make a serial number: ", openssl_errors());
  X509_gmtime_adj(X509_getm_notBefore(cert), -clock_skew_allowance_s);
  X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(validity_days) * seconds_per_day);
  X509_set_pubkey(cert, out.key.get());
  X509_NAME* subject = X509_get_subject_name(cert);
  const std::string organization = "afd cluster " + cluster_name;
  X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(organization.c_str()),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509* issuer_cert = issuer ? issuer->certificate.get() : cert;
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  auto extensions = [&]() -> expected<void> {
    if (auto ok = add_extension(cert, issuer_cert, NID_basic_constraints, ca ? "critical,CA:TRUE,pathlen:0" : "critical,CA:FALSE"); !ok)
      return ok;
    if (auto ok = add_extension(cert, issuer_cert, NID_key_usage,
                                ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature,keyAgreement");
        !ok)
      return ok;
    if (auto ok = add_extension(cert, issuer_cert, NID_subject_key_identifier, "hash"); !ok) return ok;
    if (auto ok = add_extension(cert, issuer_cert, NID_authority_key_identifier, "keyid:always"); !ok) return ok;
    // Every CAF node both accepts and opens connections: each certificate serves both ends.
    if (!ca)
      if (auto ok = add_extension(cert, issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth"); !ok) return ok;
    if (!alt_names.empty()) {
      std::string list;
      for (const auto& name : alt_names) {
        unsigned char buf[sizeof(in6_addr)];
        const bool ip = ::inet_pton(AF_INET, name.c_str(), buf) == 1 || ::inet_pton(AF_INET6, name.c_str(), buf) == 1;
        list += (list.empty() ? "" : ",") + std::string(ip ? "IP:" : "DNS:") + name;
      }
      if (auto ok = add_extension(cert, issuer_cert, NID_subject_alt_name, list); !ok) return ok;
    }
    return {};
  };
  if (auto ok = extensions(); !ok) return ok.err();
  EVP_PKEY* signer = issuer ? issuer->key.get() : out.key.get();
  if (X509_sign(cert, signer, EVP_sha256()) <= 0) return fail(errc::internal, "cannot sign the certificate: ", openssl_errors());
  return out;
}

// Writes through a temporary file created with `mode`, then renames: readers never see a half
// file, and a key is never readable by others, not even for a moment.
expected<void> write_pem(const std::string& path, ::mode_t mode, int (*write)(BIO*, void*), void* object) {
  const std::string temporary = path + ".tmp";
  ::unlink(temporary.c_str());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return fail(errc::io_error, "cannot create ", temporary, ": ", std::strerror(errno));
  ::fchmod(fd, mode);  // the umask may have taken bits away; never adds any
  FILE* file = ::fdopen(fd, "w");
  if (!file) {
    ::close(fd);
    return fail(errc::io_error, "cannot open ", temporary, ": ", std::strerror(errno));
  }
  bio_ptr bio(BIO_new_fp(file, BIO_CLOSE));
  if (!bio) {
    std::fclose(file);
    return fail(errc::io_error, "cannot write ", temporary, ": ", openssl_errors());
  }
  const bool written = write(bio.get(), object) == 1 && BIO_flush(bio.get()) == 1;
  bio.reset();  // closes the file
  if (!written) {
    ::unlink(temporary.c_str());
    return fail(errc::io_error, "cannot write ", temporary, ": ", openssl_errors());
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    return fail(errc::io_error, "cannot rename ", temporary, " to ", path, ": ", std::strerror(err));
  }
  return {};
}

int write_key(BIO* bio, void* key) {
  return PEM_write_bio_PrivateKey(bio, static_cast<EVP_PKEY*>(key), nullptr, nullptr, 0, nullptr, nullptr);
}
int write_certificate(BIO* bio, void* cert) { return PEM_write_bio_X509(bio, static_cast<X509*>(cert)); }

constexpr ::mode_t private_mode = 0600;
constexpr ::mode_t public_mode = 0644;

int passphrase_callback(char* buf, int size, int, void* user) {
  const auto* passphrase = static_cast<const std::string*>(user);
  if (!passphrase || size <= 0) return 0;
  const int n = static_cast<int>(std::min<std::size_t>(passphrase->size(), static_cast<std::size_t>(size)));
  std::memcpy(buf, passphrase->data(), static_cast<std::size_t>(n));
  return n;
}

expected<x509_ptr> read_certificate(const std::string& path, const char* what) {
  bio_ptr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return fail(errc::invalid_config, what, " '", path, "' cannot be read: ", std::strerror(errno));
  x509_ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return fail(errc::invalid_config, what, " '", path, "' is not a PEM certificate: ", openssl_errors());
  return cert;
}


using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, openssl_deleter<SSL_CTX, SSL_CTX_free>>;
using ssl_ptr = std::unique_ptr<SSL, openssl_deleter<SSL, SSL_free>>;

// A file descriptor closed on scope exit.
struct socket_fd {
  int fd = -1;
  ~socket_fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits until `fd` is ready for `events` or `deadline` passes; false on timeout.
bool wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the next call report the error
  }
}

// A TLS handshake of afd's own, with the system's credentials and a deadline, before CAF's:
// CAF 0.17.6's OpenSSL session spins a core while a handshake waits on a silent peer and its
// actor system cannot shut down until that peer closes; here a silent or non-TLS endpoint, and
// a refused certificate, end in a precise error instead. The peer's acceptance of this side's
// certificate shows as its first application bytes (BASP's handshake): under TLS 1.3 a refusal
// arrives only after the client has finished its part.
expected<void> probe_handshake(const caf::actor_system_config& cfg, const std::string& host, std::uint16_t port,
                               std::chrono::milliseconds timeout) {
  const std::string where = host + ":" + std::to_string(port);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    return fail(errc::unavailable, "cannot resolve ", host, ": ", ::gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, ::freeaddrinfo);
  socket_fd sock;
  std::string connect_error = "no address";
  for (const addrinfo* a = found; a; a = a->ai_next) {
    sock.fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (sock.fd < 0) continue;
    if (::connect(sock.fd, a->ai_addr, a->ai_addrlen) == 0) break;
    if (errno == EINPROGRESS && wait_ready(sock.fd, POLLOUT, deadline)) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(sock.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == 0) break;
      connect_error = std::strerror(err);
    } else {
      connect_error = errno == EINPROGRESS ? "timed out" : std::strerror(errno);
    }
    ::close(sock.fd);
    sock.fd = -1;
  }
  if (sock.fd < 0) return fail(errc::unavailable, "cannot connect to ", where, ": ", connect_error);

  ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return fail(errc::internal, "cannot make a TLS context: ", openssl_errors());
  std::string passphrase = cfg.openssl_passphrase;
  SSL_CTX_set_default_passwd_cb(ctx.get(), passphrase_callback);
  SSL_CTX_set_default_passwd_cb_userdata(ctx.get(), &passphrase);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.openssl_certificate.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.openssl_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx.get(), cfg.openssl_cafile.empty() ? nullptr : cfg.openssl_cafile.c_str(),
                                    cfg.openssl_capath.empty() ? nullptr : cfg.openssl_capath.c_str()) != 1)
    return fail(errc::invalid_config, "cannot load this side's TLS credentials: ", openssl_errors());
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  ssl_ptr ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), sock.fd) != 1) return fail(errc::internal, "cannot make a TLS session: ", openssl_errors());
  ERR_clear_error();
  // Drives a non-blocking call until done; the OpenSSL error text, or "" on success.
  auto drive = [&](auto call, const char* what) -> std::optional<std::string> {
    for (;;) {
      const int rc = call();
      if (rc > 0) return std::nullopt;
      const int why = SSL_get_error(ssl.get(), rc);
      if (why == SSL_ERROR_WANT_READ || why == SSL_ERROR_WANT_WRITE) {
        if (!wait_ready(sock.fd, why == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
          return std::string("timeout");
        continue;
      }
      if (SSL_get_verify_result(ssl.get()) != X509_V_OK)
        return std::string("verify:") + X509_verify_cert_error_string(SSL_get_verify_result(ssl.get()));
      std::string detail = openssl_errors();
      if (why == SSL_ERROR_ZERO_RETURN || (why == SSL_ERROR_SYSCALL && detail == "no detail from OpenSSL"))
        detail = std::string("the peer closed the connection during the ") + what;
      return detail;
    }
  };
  auto refused = [&](const std::string& detail) -> error {
    if (detail == "timeout")
      return fail(errc::unavailable, "no TLS handshake with ", where, " within ", timeout.count(),
                  " ms: it accepted the connection but did not answer (not an afd endpoint?)");
    if (detail.rfind("verify:", 0) == 0)
      return fail(errc::unavailable, "the TLS handshake with ", where, " failed: its certificate was not issued by "
                  "this cluster's CA (", detail.substr(7), ")");
    if (detail.find("wrong version number") != std::string::npos || detail.find("packet length too long") != std::string::npos)
      return fail(errc::unavailable, "the TLS handshake with ", where, " failed: the peer does not speak TLS (",
                  detail, ")");
    if (detail.find("alert") != std::string::npos)
      return fail(errc::unavailable, "the TLS handshake with ", where, " failed: the peer refused this side's "
                  "certificate (", detail, ")");
    return fail(errc::unavailable, "the TLS handshake with ", where, " failed: ", detail);
  };
  if (auto e = drive([&] { return SSL_connect(ssl.get()); }, "handshake")) return refused(*e);
  char first = 0;
  if (auto e = drive([&] { return SSL_read(ssl.get(), &first, 1); }, "first exchange")) return refused(*e);
  SSL_shutdown(ssl.get());  // best effort: the peer sees an orderly close
  return {};
}

}  // namespace

std::string_view to_string(role r) noexcept {
  switch (r) {
    case role::coordinator: return "coordinator";
    case role::worker: return "worker";
    case role::client: return "client";
  }
  return "?";
}

credentials credentials_of(const std::string& directory, role r) {
  const std::string name(to_string(r));
  return credentials{directory + "/ca.pem", directory + "/" + name + ".pem", directory + "/" + name + ".key", ""};
}

const credentials& cluster_credentials::of(role r) const {
  return r == role::coordinator ? coordinator : r == role::worker ? worker : client;
}

expected<cluster_credentials> generate_cluster_credentials(const std::string& directory,
                                                           const generate_options& options) {
  if (options.validity_days < 1) return fail(errc::invalid_argument, "validity_days must be at least 1");
  std::error_code ec;
  if (!std::filesystem::exists(directory, ec)) {
    if (!std::filesystem::create_directories(directory, ec))
      return fail(errc::io_error, "cannot create ", directory, ": ", ec.message());
    ::chmod(directory.c_str(), 0700);
  }
  auto ca = issue("afd " + options.cluster_name + " CA", options.cluster_name, nullptr, true, {}, options.validity_days);
  if (!ca) return ca.err();
  cluster_credentials out;
  out.directory = directory;
  out.ca_key_file = directory + "/ca.key";
  const std::string ca_file = directory + "/ca.pem";
  if (auto ok = write_pem(out.ca_key_file, private_mode, write_key, ca->key.get()); !ok) return ok.err();
  if (auto ok = write_pem(ca_file, public_mode, write_certificate, ca->certificate.get()); !ok) return ok.err();
  for (role r : {role::coordinator, role::worker, role::client}) {
    const std::string name(to_string(r));
    auto pair = issue("afd " + name, options.cluster_name, &*ca, false,
                      r == role::coordinator ? options.coordinator_hosts : std::vector<std::string>{},
                      options.validity_days);
    if (!pair) return pair.err();
    credentials c{ca_file, directory + "/" + name + ".pem", directory + "/" + name + ".key", ""};
    if (auto ok = write_pem(c.key_file, private_mode, write_key, pair->key.get()); !ok) return ok.err();
    if (auto ok = write_pem(c.certificate_file, public_mode, write_certificate, pair->certificate.get()); !ok)
      return ok.err();
    (r == role::coordinator ? out.coordinator : r == role::worker ? out.worker : out.client) = std::move(c);
  }
  return out;
}

expected<void> check_credentials(const credentials& c) {
  if (c.ca_file.empty() || c.certificate_file.empty() || c.key_file.empty())
    return fail(errc::invalid_config, "TLS credentials need a CA file, a certificate file and a key file");
  auto ca = read_certificate(c.ca_file, "CA certificate");
  if (!ca) return ca.err();
  auto cert = read_certificate(c.certificate_file, "certificate");
  if (!cert) return cert.err();

  struct stat st{};
  if (::stat(c.key_file.c_str(), &st) != 0)
    return fail(errc::invalid_config, "key file '", c.key_file, "' cannot be read: ", std::strerror(errno));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(errc::invalid_config, "key file '", c.key_file, "' is readable by others (mode ", mode,
                "); expected 0600");
  }
  bio_ptr key_bio(BIO_new_file(c.key_file.c_str(), "r"));
  if (!key_bio) return fail(errc::invalid_config, "key file '", c.key_file, "' cannot be read: ", std::strerror(errno));
  std::string passphrase = c.passphrase;
  pkey_ptr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, passphrase_callback, &passphrase));
  if (!key)
    return fail(errc::invalid_config, "key file '", c.key_file, "' is not a PEM private key",
                c.passphrase.empty() ? " (or it is encrypted and no passphrase was given)" : " or the passphrase is wrong",
                ": ", openssl_errors());
  if (X509_check_private_key(cert->get(), key.get()) != 1)
    return fail(errc::invalid_config, "key file '", c.key_file, "' does not belong to certificate '",
                c.certificate_file, "': ", openssl_errors());

  store_ptr store(X509_STORE_new());
  store_ctx_ptr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca->get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert->get(), nullptr) != 1)
    return fail(errc::internal, "cannot set up certificate verification: ", openssl_errors());
  if (X509_verify_cert(ctx.get()) != 1) {
    const int why = X509_STORE_CTX_get_error(ctx.get());
    return fail(errc::invalid_config, "certificate '", c.certificate_file, "' is not accepted by CA '", c.ca_file,
                "': ", X509_verify_cert_error_string(why));
  }
  return {};
}

expected<void> apply(const credentials& c, caf::actor_system_config& cfg) {
  if (auto ok = check_credentials(c); !ok) return ok;
  cfg.load<caf::openssl::manager>();
  cfg.openssl_certificate = c.certificate_file;
  cfg.openssl_key = c.key_file;
  cfg.openssl_passphrase = c.passphrase;
  cfg.openssl_cafile = c.ca_file;
  // capath would add every CA of a directory (the system's, say): only the cluster's CA is trusted.
  cfg.openssl_capath.clear();
  return {};
}

expected<std::uint16_t> publish(caf::actor_system& sys, const caf::actor& whom, std::uint16_t port,
                                const std::string& host, bool secure) {
  if (secure && !sys.has_openssl_manager())
    return fail(errc::invalid_argument, "publishing over TLS needs the OpenSSL module (tls::apply) in this actor system");
  const char* in = host.empty() ? nullptr : host.c_str();
  auto bound = secure ? caf::openssl::publish(whom, port, in, true) : sys.middleman().publish(whom, port, in, true);
  if (!bound)
    return fail(errc::unavailable, "cannot publish on ", host.empty() ? std::string("*") : host, ":", port,
                secure ? " (TLS)" : "", ": ", sys.render(bound.error()));
  return *bound;
}

expected<caf::actor> connect(caf::actor_system& sys, const std::string& host, std::uint16_t port, bool secure,
                             std::chrono::milliseconds timeout) {
  if (secure && !sys.has_openssl_manager())
    return fail(errc::invalid_argument, "connecting over TLS needs the OpenSSL module (tls::apply) in this actor system");
  const std::string where = host + ":" + std::to_string(port);
  if (secure)
    if (auto checked = probe_handshake(sys.config(), host, port, timeout); !checked) return checked.err();
  const caf::io::middleman_actor manager =
      secure ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  expected<caf::actor> result = fail(errc::internal, "no answer from the middleman");
  caf::scoped_actor self{sys};
  self->request(manager, caf::timespan{timeout}, caf::connect_atom_v, host, port)
      .receive(
          [&](const caf::node_id&, caf::strong_actor_ptr& remote, const std::set<std::string>&) {
            if (remote)
              result = caf::actor_cast<caf::actor>(std::move(remote));
            else
              result = fail(errc::unavailable, "nothing is published at ", where);
          },
          [&](const caf::error& e) {
            // A plain endpoint and a TLS one close on each other's first bytes (BASP's client
            // speaks first): that is disconnect_during_handshake, within milliseconds. Only a
            // peer that accepts and stays silent runs into the deadline.
            if (e == caf::sec::request_timeout)
              result = fail(errc::unavailable, "no handshake with ", where, " within ", timeout.count(),
                            " ms: it accepted the connection but did not answer (not an afd endpoint?)");
            else if (secure && e == caf::sec::disconnect_during_handshake)
              result = fail(errc::unavailable, "the TLS handshake with ", where,
                            " failed: the peer refused this side's certificate, presented one this side's CA did not "
                            "issue, or does not speak TLS");
            else if (secure && e == caf::sec::cannot_connect_to_node)
              result = fail(errc::unavailable, "cannot connect to ", where,
                            " over TLS: nothing listens there, or the handshake failed at once (the peer does not "
                            "speak TLS)");
            else if (e == caf::sec::disconnect_during_handshake)
              result = fail(errc::unavailable, "cannot connect to ", where,
                            ": the peer closed the connection during the handshake (it may require TLS, and this "
                            "side has no cluster credentials)");
            else
              result = fail(errc::unavailable, "cannot connect to ", where, secure ? " over TLS: " : ": ",
                            sys.render(e));
          });
  return result;
}

}  // namespace afd::launch::tls

// CAF 0.17.6's OpenSSL session classifies every SSL_read/SSL_write/SSL_accept/SSL_connect result
// with SSL_get_error() without clearing the thread's OpenSSL error queue first, and drains the
// queue only in log statements that Debian's build compiles out. One failed peer (a plain client
// refused by a TLS endpoint, a client that exits without close_notify: OpenSSL 3 queues
// "unexpected eof") leaves an entry behind in the multiplexer thread; the next operation on any
// healthy connection that merely wants to read then reads as SSL_ERROR_SSL, and CAF closes it:
// workers were lost with remote_link_unreachable, requests went unanswered (tests/multinode, about
// one run in three). OpenSSL requires an empty queue before each of these calls (SSL_get_error(3)),
// so afd interposes them: defined here, in the process that loads libcaf_openssl, they clear the
// queue and call the library's own.
namespace {

template <class Fn>
Fn real_ssl_function(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = real_ssl_function<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = real_ssl_function<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static const auto real = real_ssl_function<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static const auto real = real_ssl_function<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

}  // extern "C"
