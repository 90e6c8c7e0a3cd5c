// TLS on the control plane with CAF's OpenSSL module: an actor published by a system holding the
// cluster's coordinator certificate answers peers holding the cluster's worker or client
// certificate, and refuses, within a bound and with a clear error, a plain peer, an anonymous
// TLS peer and a peer whose certificate another CA issued. The files are checked with the
// openssl command, an implementation independent of the code under test.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <thread>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "deploy/launch/tls.hpp"

namespace afd::launch::tls {
namespace {

using namespace std::chrono_literals;

// A TLS handshake on loopback takes milliseconds; 3 s is a hang. A plain peer and a TLS peer
// wait for each other until this deadline, so every refusal arrives within it.
constexpr auto connect_timeout = 3000ms;
// What a refused connection may take at most, measured from the call: the deadline plus the
// time a loaded 2-core machine needs to notice it.
constexpr auto refusal_bound = connect_timeout + 2s;
constexpr auto request_timeout = 5s;

// A scratch directory, removed at the end.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    std::string t = (std::filesystem::temp_directory_path() / "afd-tls-test-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Output and status of a shell command.
std::pair<int, std::string> shell(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen((command + " 2>&1").c_str(), "r"), ::pclose);
  std::string out;
  char chunk[512];
  while (pipe && std::fgets(chunk, sizeof chunk, pipe.get())) out += chunk;
  const int status = ::pclose(pipe.release());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

unsigned mode_of(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// How a test actor system talks TLS.
enum class security { plain, anonymous_tls, credentials };

// One actor system with the middleman, two scheduler threads (2 cores), and TLS as asked.
struct node {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  node(security how, const credentials* c = nullptr) {
    cfg.set("scheduler.max-threads", 2);
    cfg.load<caf::io::middleman>();
    if (how == security::credentials) {
      auto ok = apply(*c, cfg);
      EXPECT_TRUE(ok) << ok.err().message();
    } else if (how == security::anonymous_tls) {
      cfg.load<caf::openssl::manager>();  // the module with no certificate: anonymous ciphers
    }
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  bool secure() const { return sys->has_openssl_manager(); }
};

// The coordinator's stand-in: answers an int with the next one and counts what it handled.
struct served {
  std::atomic<int> requests{0};
};
caf::behavior echo(caf::event_based_actor*, served* count) {
  return {[count](int x) {
    ++count->requests;
    return x + 1;
  }};
}

class tls_test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new scratch_dir;
    generate_options o;
    o.cluster_name = "tls-test";
    o.coordinator_hosts = {"127.0.0.1", "coordinator.example"};
    const auto started = std::chrono::steady_clock::now();
    auto made = generate_cluster_credentials((dir_->path / "cluster").string(), o);
    std::printf("[ measured ] a CA and 3 role certificates: %.1f ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    ASSERT_TRUE(made) << made.err().message();
    cluster_ = new cluster_credentials(*made);
    o.cluster_name = "stranger";
    auto other = generate_cluster_credentials((dir_->path / "other").string(), o);
    ASSERT_TRUE(other) << other.err().message();
    other_ = new cluster_credentials(*other);
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete other_;
    delete dir_;
  }
  static scratch_dir* dir_;
  static cluster_credentials* cluster_;
  static cluster_credentials* other_;
};
scratch_dir* tls_test::dir_ = nullptr;
cluster_credentials* tls_test::cluster_ = nullptr;
cluster_credentials* tls_test::other_ = nullptr;

TEST_F(tls_test, files_have_owner_only_keys_and_verify_with_the_openssl_command) {
  const auto& c = *cluster_;
  EXPECT_EQ(mode_of(c.ca_key_file), 0600u);
  EXPECT_EQ(mode_of(c.coordinator.ca_file), 0644u);
  EXPECT_EQ(mode_of(c.directory), 0700u);
  for (role r : {role::coordinator, role::worker, role::client}) {
    const credentials& files = c.of(r);
    EXPECT_EQ(mode_of(files.key_file), 0600u) << files.key_file;
    EXPECT_EQ(mode_of(files.certificate_file), 0644u) << files.certificate_file;
    auto [status, out] = shell("openssl verify -CAfile " + files.ca_file + " " + files.certificate_file);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
    // The other cluster's CA does not accept it.
    std::tie(status, out) = shell("openssl verify -CAfile " + other_->coordinator.ca_file + " " + files.certificate_file);
    EXPECT_NE(status, 0) << out;
    // The key is the certificate's: same public key.
    auto [s1, from_key] = shell("openssl pkey -in " + files.key_file + " -pubout");
    auto [s2, from_cert] = shell("openssl x509 -in " + files.certificate_file + " -noout -pubkey");
    EXPECT_EQ(s1, 0);
    EXPECT_EQ(from_key, from_cert);
  }
  auto [status, text] = shell("openssl x509 -in " + c.coordinator.certificate_file + " -noout -text");
  ASSERT_EQ(status, 0) << text;
  EXPECT_NE(text.find("IP Address:127.0.0.1"), std::string::npos) << text;
  EXPECT_NE(text.find("DNS:coordinator.example"), std::string::npos) << text;
  EXPECT_NE(text.find("TLS Web Server Authentication, TLS Web Client Authentication"), std::string::npos) << text;
  EXPECT_NE(text.find("CA:FALSE"), std::string::npos) << text;
  std::tie(status, text) = shell("openssl x509 -in " + c.coordinator.ca_file + " -noout -text");
  EXPECT_NE(text.find("CA:TRUE"), std::string::npos) << text;
  EXPECT_NE(text.find("prime256v1"), std::string::npos) << text;
}

TEST_F(tls_test, check_credentials_names_the_file_and_the_problem) {
  const credentials good = cluster_->worker;
  EXPECT_TRUE(check_credentials(good));

  credentials c = good;
  c.key_file = cluster_->coordinator.key_file;  // another role's key
  auto r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err().code(), errc::invalid_config);
  EXPECT_NE(r.err().message().find("does not belong to certificate '" + good.certificate_file + "'"), std::string::npos)
      << r.err().message();

  c = good;
  c.ca_file = other_->worker.ca_file;
  r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("is not accepted by CA '" + c.ca_file + "'"), std::string::npos) << r.err().message();

  c = good;
  c.certificate_file = (dir_->path / "missing.pem").string();
  r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("certificate '" + c.certificate_file + "' cannot be read"), std::string::npos)
      << r.err().message();

  c = good;
  c.ca_file = c.key_file;  // a key where a certificate belongs
  r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("is not a PEM certificate"), std::string::npos) << r.err().message();

  // A key others can read is refused.
  const std::string open_key = (dir_->path / "open.key").string();
  std::filesystem::copy_file(good.key_file, open_key);
  ::chmod(open_key.c_str(), 0644);
  c = good;
  c.key_file = open_key;
  r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("is readable by others (mode 0644); expected 0600"), std::string::npos)
      << r.err().message();

  // An encrypted key (made by the openssl command): its passphrase opens it, its absence is said.
  const std::string encrypted = (dir_->path / "encrypted.key").string();
  auto [status, out] = shell("openssl pkey -in " + good.key_file + " -aes256 -passout pass:s3cret -out " + encrypted +
                             " && chmod 600 " + encrypted);
  ASSERT_EQ(status, 0) << out;
  c = good;
  c.key_file = encrypted;
  r = check_credentials(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.err().message().find("or it is encrypted and no passphrase was given"), std::string::npos)
      << r.err().message();
  c.passphrase = "wrong";
  EXPECT_FALSE(check_credentials(c));
  c.passphrase = "s3cret";
  EXPECT_TRUE(check_credentials(c));
}

// The published side: the coordinator's certificate, an echo actor on 127.0.0.1.
struct published {
  served count;
  node server;
  caf::actor actor;
  std::uint16_t port = 0;
  published(security how, const credentials* c) : server(how, c) {
    actor = server.sys->spawn(echo, &count);
    auto bound = publish(*server.sys, actor, 0, "127.0.0.1", server.secure());
    EXPECT_TRUE(bound) << bound.err().message();
    if (bound) port = *bound;
  }
  ~published() { caf::anon_send_exit(actor, caf::exit_reason::user_shutdown); }
};

// Connects from `client` and asks 41; the answer, or the error of the step that failed.
expected<int> ask(node& client, std::uint16_t port) {
  auto remote = connect(*client.sys, "127.0.0.1", port, client.secure(), connect_timeout);
  if (!remote) return remote.err();
  expected<int> answer = fail(errc::internal, "no answer");
  caf::scoped_actor self{*client.sys};
  self->request(*remote, caf::timespan{request_timeout}, 41)
      .receive([&](int x) { answer = x; },
               [&](const caf::error& e) { answer = fail(errc::unavailable, client.sys->render(e)); });
  return answer;
}

TEST_F(tls_test, peers_with_the_clusters_certificates_are_answered) {
  published coordinator(security::credentials, &cluster_->coordinator);
  ASSERT_NE(coordinator.port, 0);
  for (role r : {role::worker, role::client, role::coordinator}) {
    node peer(security::credentials, &cluster_->of(r));
    auto answer = ask(peer, coordinator.port);
    ASSERT_TRUE(answer) << to_string(r) << ": " << answer.err().message();
    EXPECT_EQ(*answer, 42);
  }
  EXPECT_EQ(coordinator.count.requests.load(), 3);
}

// Asks 41 through CAF's own connect path (its middleman actors, no afd code in between), so that
// what is shown is the published side refusing, not afd's client declining to try.
expected<int> caf_ask(caf::actor_system& sys, std::uint16_t port) {
  const caf::io::middleman_actor manager =
      sys.has_openssl_manager() ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  expected<int> answer = fail(errc::internal, "no answer");
  caf::scoped_actor self{sys};
  caf::strong_actor_ptr remote;
  self->request(manager, caf::timespan{connect_timeout}, caf::connect_atom_v, std::string("127.0.0.1"), port)
      .receive([&](const caf::node_id&, caf::strong_actor_ptr& r, const std::set<std::string>&) { remote = r; },
               [&](const caf::error& e) { answer = fail(errc::unavailable, sys.render(e)); });
  if (!remote) return answer;
  self->request(caf::actor_cast<caf::actor>(remote), caf::timespan{request_timeout}, 41)
      .receive([&](int x) { answer = x; }, [&](const caf::error& e) { answer = fail(errc::unavailable, sys.render(e)); });
  return answer;
}

// One actor system with the openssl.* settings written directly, bypassing apply()'s checks:
// a peer that trusts the cluster's CA but presents another CA's certificate, or the reverse.
struct raw_node {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  raw_node(const std::string& ca_file, const credentials& presents) {
    cfg.set("scheduler.max-threads", 2);
    cfg.load<caf::io::middleman>();
    cfg.load<caf::openssl::manager>();
    cfg.openssl_cafile = ca_file;
    cfg.openssl_certificate = presents.certificate_file;
    cfg.openssl_key = presents.key_file;
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

TEST_F(tls_test, strangers_are_refused_by_the_published_side_within_a_bound) {
  published coordinator(security::credentials, &cluster_->coordinator);
  ASSERT_NE(coordinator.port, 0);
  auto refused = [&](const char* who, caf::actor_system& sys) {
    const auto started = std::chrono::steady_clock::now();
    auto answer = caf_ask(sys, coordinator.port);
    const auto took = std::chrono::steady_clock::now() - started;
    std::printf("[ refused  ] %s after %.3f s: %s\n", who, std::chrono::duration<double>(took).count(),
                answer ? "(answered!)" : answer.err().message().c_str());
    EXPECT_FALSE(answer) << who << " was answered";
    EXPECT_LT(took, refusal_bound) << who;
  };
  { node peer(security::plain); refused("a plain middleman", *peer.sys); }
  { node peer(security::anonymous_tls); refused("TLS without a certificate (CAF's anonymous mode)", *peer.sys); }
  // Trusts the coordinator but presents a stranger's certificate: only the coordinator can refuse.
  { raw_node peer(cluster_->client.ca_file, other_->client); refused("another CA's certificate", *peer.sys); }
  // Any CAF 0.17 program: the middleman's own blocking remote_actor returns, it does not hang.
  {
    node peer(security::plain);
    const auto started = std::chrono::steady_clock::now();
    auto remote = peer.sys->middleman().remote_actor("127.0.0.1", coordinator.port);
    EXPECT_FALSE(remote) << "a plain CAF peer got a handle on the actor";
    if (!remote) {
      EXPECT_EQ(remote.error(), caf::sec::disconnect_during_handshake) << peer.sys->render(remote.error());
    }
    EXPECT_LT(std::chrono::steady_clock::now() - started, refusal_bound);
  }
  EXPECT_EQ(coordinator.count.requests.load(), 0) << "a stranger's request reached the actor";

  // The endpoint still serves the cluster after the refusals.
  node worker(security::credentials, &cluster_->worker);
  auto answer = ask(worker, coordinator.port);
  ASSERT_TRUE(answer) << answer.err().message();
  EXPECT_EQ(*answer, 42);
}

TEST_F(tls_test, afd_connect_says_why_it_was_refused) {
  published coordinator(security::credentials, &cluster_->coordinator);
  ASSERT_NE(coordinator.port, 0);
  auto expect_refusal = [&](const char* who, caf::actor_system& sys, bool secure, errc code, const std::string& says) {
    const auto started = std::chrono::steady_clock::now();
    auto remote = connect(sys, "127.0.0.1", coordinator.port, secure, connect_timeout);
    const auto took = std::chrono::steady_clock::now() - started;
    ASSERT_FALSE(remote) << who;
    std::printf("[ says     ] %s after %.3f s: %s\n", who, std::chrono::duration<double>(took).count(),
                remote.err().message().c_str());
    EXPECT_EQ(remote.err().code(), code) << who;
    EXPECT_NE(remote.err().message().find(says), std::string::npos) << who << ": " << remote.err().message();
    EXPECT_LT(took, refusal_bound) << who;
  };
  const std::string where = "127.0.0.1:" + std::to_string(coordinator.port);
  {
    node peer(security::plain);
    expect_refusal("no credentials", *peer.sys, false, errc::unavailable,
                   "cannot connect to " + where + ": the peer closed the connection during the handshake (it may "
                   "require TLS, and this side has no cluster credentials)");
  }
  {
    node peer(security::credentials, &other_->client);
    expect_refusal("another cluster's credentials", *peer.sys, true, errc::unavailable,
                   "the TLS handshake with " + where + " failed: its certificate was not issued by this cluster's CA");
  }
  {
    raw_node peer(cluster_->client.ca_file, other_->client);
    expect_refusal("a certificate the coordinator's CA did not issue", *peer.sys, true, errc::unavailable,
                   "the TLS handshake with " + where + " failed: the peer refused this side's certificate");
  }
  EXPECT_EQ(coordinator.count.requests.load(), 0);
}

TEST_F(tls_test, both_ends_verify_the_other_mutual_authentication) {
  published coordinator(security::credentials, &cluster_->coordinator);
  ASSERT_NE(coordinator.port, 0);
  // Presents the cluster's certificate, trusts only another CA: CAF on this side refuses the
  // coordinator (the coordinator alone would have let it in).
  {
    raw_node peer(other_->client.ca_file, cluster_->client);
    auto answer = caf_ask(*peer.sys, coordinator.port);
    EXPECT_FALSE(answer) << "a peer accepted a coordinator certificate its CA did not issue";
  }
  EXPECT_EQ(coordinator.count.requests.load(), 0);

  // The same at the TLS level with the openssl command as the peer: no client certificate, or
  // another CA's, ends the handshake; the cluster's client certificate completes it. Refusals
  // over TLS 1.2, where the server judges the client's certificate before the handshake ends
  // (TLS 1.3 tells the client after it has finished, a race for a command that exits at once).
  const std::string target = "-connect 127.0.0.1:" + std::to_string(coordinator.port) + " -CAfile " +
                             cluster_->client.ca_file + " -verify_return_error -brief";
  auto s_client = [&](const std::string& extra) {
    return shell("timeout 10 openssl s_client " + target + " " + extra + " </dev/null");
  };
  auto [status, out] = s_client("-tls1_2");
  EXPECT_NE(out.find("alert handshake failure"), std::string::npos) << "no client certificate:\n" << out;
  EXPECT_EQ(out.find("CONNECTION ESTABLISHED"), std::string::npos) << out;
  std::tie(status, out) = s_client("-tls1_2 -cert " + other_->client.certificate_file + " -key " + other_->client.key_file);
  EXPECT_NE(out.find("alert unknown ca"), std::string::npos) << "another CA's certificate:\n" << out;
  EXPECT_EQ(out.find("CONNECTION ESTABLISHED"), std::string::npos) << out;
  std::tie(status, out) = s_client("-cert " + cluster_->client.certificate_file + " -key " + cluster_->client.key_file);
  EXPECT_NE(out.find("CONNECTION ESTABLISHED"), std::string::npos) << "the cluster's certificate:\n" << out;
  EXPECT_NE(out.find("Verification: OK"), std::string::npos) << out;
  EXPECT_EQ(out.find("alert"), std::string::npos) << out;
}

TEST_F(tls_test, a_cluster_peer_does_not_talk_to_a_plain_endpoint_either) {
  // The other way round: a TLS client meeting a plain coordinator fails within the bound too.
  published plain(security::plain, nullptr);
  ASSERT_NE(plain.port, 0);
  node worker(security::credentials, &cluster_->worker);
  const auto started = std::chrono::steady_clock::now();
  auto answer = ask(worker, plain.port);
  const auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(answer);
  EXPECT_NE(answer.err().message().find("failed: the peer does not speak TLS"), std::string::npos)
      << answer.err().message();
  EXPECT_LT(took, refusal_bound);
  EXPECT_EQ(plain.count.requests.load(), 0);
}

// A socket that accepts (the kernel does, from the backlog) and never says a word.
struct silent_endpoint {
  int fd = -1;
  std::uint16_t port = 0;
  silent_endpoint() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 8) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      return;
    port = ntohs(addr.sin_port);
  }
  ~silent_endpoint() {
    if (fd >= 0) ::close(fd);
  }
};

TEST_F(tls_test, a_silent_endpoint_is_given_up_on_at_the_deadline) {
  // CAF's own remote_actor would wait forever (and, over TLS, spin a core); connect() stops at its
  // deadline, TLS or not.
  constexpr auto short_deadline = 500ms;
  for (bool secure : {false, true}) {
    silent_endpoint silent;
    ASSERT_NE(silent.port, 0);
    node peer(secure ? security::credentials : security::plain, &cluster_->client);
    const auto started = std::chrono::steady_clock::now();
    auto remote = connect(*peer.sys, "127.0.0.1", silent.port, secure, short_deadline);
    const auto took = std::chrono::steady_clock::now() - started;
    ASSERT_FALSE(remote);
    EXPECT_NE(remote.err().message().find("within 500 ms: it accepted the connection but did not answer"),
              std::string::npos)
        << remote.err().message();
    EXPECT_GE(took, short_deadline - 50ms);  // timers round to the millisecond and start a little early
    EXPECT_LT(took, short_deadline + 2s);
  }
}

// CAF 0.17.6's OpenSSL module: while a TLS handshake waits for a peer's first bytes, its
// multiplexer thread spins (force_empty_write keeps the socket writable and do_some reports
// progress). One silent TCP connection to a TLS endpoint costs a whole core until it closes:
// measured 1.00 s of CPU per second here; a plain endpoint, 0.01 s. Enabled, this test fails
// until that is fixed (deploy/launch/README.md, "TLS"); run it with --gtest_also_run_disabled_tests.
TEST_F(tls_test, DISABLED_a_silent_client_does_not_spin_the_tls_endpoint) {
  published coordinator(security::credentials, &cluster_->coordinator);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(coordinator.port);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const double before = std::clock() / double(CLOCKS_PER_SEC);
  std::this_thread::sleep_for(1s);
  const double used = std::clock() / double(CLOCKS_PER_SEC) - before;
  ::close(fd);
  std::printf("[ measured ] CPU during 1 s with one silent TCP client on the TLS endpoint: %.2f s\n", used);
  EXPECT_LT(used, 0.2);
}

TEST_F(tls_test, an_encrypted_key_works_with_its_passphrase) {
  const std::string encrypted = (dir_->path / "client-encrypted.key").string();
  auto [status, out] = shell("openssl pkey -in " + cluster_->client.key_file + " -aes256 -passout pass:open-sesame -out " +
                             encrypted + " && chmod 600 " + encrypted);
  ASSERT_EQ(status, 0) << out;
  credentials c = cluster_->client;
  c.key_file = encrypted;
  c.passphrase = "open-sesame";
  published coordinator(security::credentials, &cluster_->coordinator);
  node client(security::credentials, &c);
  auto answer = ask(client, coordinator.port);
  ASSERT_TRUE(answer) << answer.err().message();
  EXPECT_EQ(*answer, 42);
}

}  // namespace
}  // namespace afd::launch::tls
