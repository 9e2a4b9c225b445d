// The relay with real libzmq sockets on both sides, all in one process: a
// stand-in kernel binds ipc sockets in a temp dir, clients connect over tcp
// to 127.0.0.1 (or ipc), and the relay runs in a thread stopped through an
// eventfd. The relay forwards bytes, so what the kernel sees is exactly
// what each client sent (identities, subscriptions), as without a relay.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "common/log.hpp"
#include "relay/exit_notice.hpp"
#include "relay/hmac.hpp"
#include "relay/relay.hpp"
#include <zmq.hpp>

using ik::relay::Channel;
using ik::relay::ConnectionInfo;
using ik::relay::Relay;
using ik::relay::RelayOptions;
using Frames = std::vector<std::string>;
using namespace std::chrono_literals;

namespace {

constexpr int kTimeoutMs = 5000;

// A listening TCP socket on 127.0.0.1 with a kernel-chosen port.
ik::UniqueFd listen_on_free_port(int& port) {
  ik::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd.get(), 1) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
  port = ntohs(a.sin_port);
  return fd;
}

ConnectionInfo host_info() {
  ConnectionInfo c;
  c.transport = "tcp";
  c.ip = "127.0.0.1";
  // Hold all five at once so they differ; closed again on return.
  ik::UniqueFd f[5];
  int* ports[5] = {&c.shell_port, &c.iopub_port, &c.stdin_port, &c.control_port, &c.hb_port};
  for (int i = 0; i < 5; ++i) f[i] = listen_on_free_port(*ports[i]);
  c.key = "secret";
  c.signature_scheme = "hmac-sha256";
  return c;
}

void send_frames(zmq::socket_t& s, const Frames& frames) {
  for (size_t i = 0; i < frames.size(); ++i)
    s.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

// Sends from a ROUTER_MANDATORY socket, retrying while the peer is not yet
// connected (EHOSTUNREACH) instead of letting libzmq drop the message.
bool send_when_routable(zmq::socket_t& router, const Frames& frames) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTimeoutMs);
  while (std::chrono::steady_clock::now() < deadline) {
    if (zmq_send(router.handle(), frames[0].data(), frames[0].size(), ZMQ_SNDMORE) >= 0) {
      for (size_t i = 1; i < frames.size(); ++i)
        zmq_send(router.handle(), frames[i].data(), frames[i].size(), i + 1 < frames.size() ? ZMQ_SNDMORE : 0);
      return true;
    }
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

// One whole message, or {} after timeout_ms.
Frames recv_frames(zmq::socket_t& s, int timeout_ms = kTimeoutMs) {
  zmq_pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&item, 1, timeout_ms) <= 0) return {};
  Frames out;
  zmq::message_t m;
  do {
    REQUIRE(s.recv(m));
    out.push_back(m.to_string());
  } while (m.more());
  return out;
}

bool eventually(const std::function<bool()>& cond, int timeout_ms = kTimeoutMs) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return cond();
}

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// The sockets ipykernel binds, at the ipc paths kernel_side_connection()
// gives it. ROUTER_MANDATORY so tests can wait until a client is connected.
struct FakeKernel {
  zmq::socket_t shell, iopub, stdin_, control, hb;
  FakeKernel(zmq::context_t& ctx, const std::string& base)
      : shell(ctx, zmq::socket_type::router),
        iopub(ctx, zmq::socket_type::xpub),
        stdin_(ctx, zmq::socket_type::router),
        control(ctx, zmq::socket_type::router),
        hb(ctx, zmq::socket_type::router) {
    int n = 1;
    for (zmq::socket_t* s : {&shell, &iopub, &stdin_, &control, &hb}) {
      s->set(zmq::sockopt::linger, 0);
      if (s != &iopub) s->set(zmq::sockopt::router_mandatory, 1);
      s->bind("ipc://" + base + "-" + std::to_string(n++));
    }
    // Verbose, so the test sees every subscription, not only the first.
    iopub.set(zmq::sockopt::xpub_verbose, 1);
    // As ipykernel: a reconnecting peer with a known id takes over at once.
    for (zmq::socket_t* s : {&shell, &stdin_, &control}) s->set(zmq::sockopt::router_handover, 1);
  }
};

// The relay under test, running in its own thread.
struct Harness {
  zmq::context_t ctx;
  std::string dir;
  std::string base;
  ik::UniqueFd dir_fd;
  ConnectionInfo host = host_info();
  std::unique_ptr<Relay> relay;
  ik::UniqueFd stop_fd{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  std::thread thread;
  ik::Status result = ik::ok();
  double run_cpu_ms = 0;
  int stop_calls = 0;

  Harness() {
    char tmpl[] = "/tmp/ik-relay-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    base = dir + "/kernel";
    dir_fd = ik::UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    REQUIRE(dir_fd.valid());
  }
  ~Harness() {
    stop();
    relay.reset();
    std::system(("rm -rf '" + dir + "'").c_str());
  }
  ik::Result<std::unique_ptr<Relay>> create(RelayOptions options = {}) {
    return Relay::create(host, {dir_fd.get(), "kernel"}, options);
  }

  void start(RelayOptions options = {}) {
    auto r = create(options);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().describe()));
    relay = std::move(*r);
    thread = std::thread([this] {
      const int fd = stop_fd.get();
      result = relay->run({fd}, [this, fd](int ready) {
        CHECK(ready == fd);
        uint64_t v;
        CHECK(::read(fd, &v, sizeof v) == sizeof v);
        ++stop_calls;
        return false;
      });
      run_cpu_ms = thread_cpu_ms();
    });
  }
  void stop() {
    if (!thread.joinable()) return;
    uint64_t one = 1;
    CHECK(::write(stop_fd.get(), &one, sizeof one) == sizeof one);
    thread.join();
    CHECK_MESSAGE(result.ok(), (result.ok() ? "" : result.error().describe()));
  }

  zmq::socket_t client(zmq::socket_type type, int port, const std::string& identity = {}) {
    zmq::socket_t s(ctx, type);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::reconnect_ivl, 10);
    if (!identity.empty()) s.set(zmq::sockopt::routing_id, identity);
    s.connect(host.endpoint(port));
    return s;
  }
  ik::relay::ChannelCounters counters(Channel c) const { return relay->counters()[c]; }
};

// A unix socket server on the "host" that records whether anyone connected.
struct HostSocket {
  std::string path;
  ik::UniqueFd fd;
  explicit HostSocket(const std::string& p) : path(p) {
    fd = ik::UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", p.c_str());
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 8) == 0);
  }
  bool someone_connected() const {
    ik::UniqueFd c(::accept4(fd.get(), nullptr, nullptr, SOCK_NONBLOCK));
    return c.valid();
  }
};

}  // namespace

TEST_SUITE_BEGIN("relay");

TEST_CASE("relay: each client reaches the kernel under its own identity") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  auto b = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-B");
  send_frames(a, {"<IDS|MSG>", "sig", "req-A"});
  send_frames(b, {"<IDS|MSG>", "sig", "req-B"});

  for (int i = 0; i < 2; ++i) {
    Frames req = recv_frames(k.shell);
    REQUIRE(req.size() == 4);
    CHECK(req[0] == (req[3] == "req-A" ? "client-A" : "client-B"));  // no relay id in between
    CHECK(req[1] == "<IDS|MSG>");
    send_frames(k.shell, {req[0], "<IDS|MSG>", "sig", "reply-to-" + req[3]});
  }
  CHECK(recv_frames(a) == Frames{"<IDS|MSG>", "sig", "reply-to-req-A"});
  CHECK(recv_frames(b) == Frames{"<IDS|MSG>", "sig", "reply-to-req-B"});

  CHECK(eventually([&] { return h.counters(Channel::kShell).to_host.messages == 2; }));
  const auto c = h.counters(Channel::kShell);
  CHECK(c.connections == 2);
  CHECK(c.to_kernel.messages == 2);
  CHECK(c.to_kernel.bytes == 2 * (9 + 3 + 5));
  CHECK(c.to_host.bytes == 2 * (9 + 3 + 14));
  CHECK(c.oversized == 0);
  h.stop();
  CHECK(h.stop_calls == 1);
}

TEST_CASE("relay: stdin requests reach the client that sent on shell") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a_shell = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  auto a_stdin = h.client(zmq::socket_type::dealer, h.host.stdin_port, "client-A");
  auto b_stdin = h.client(zmq::socket_type::dealer, h.host.stdin_port, "client-B");

  send_frames(a_shell, {"<IDS|MSG>", "execute_request"});
  Frames req = recv_frames(k.shell);
  REQUIRE(req.size() == 3);
  CHECK(req[0] == "client-A");

  // ipykernel addresses input_request with the identity it saw on shell.
  REQUIRE(send_when_routable(k.stdin_, {req[0], "<IDS|MSG>", "input_request"}));
  CHECK(recv_frames(a_stdin) == Frames{"<IDS|MSG>", "input_request"});
  CHECK(recv_frames(b_stdin, 100).empty());

  send_frames(a_stdin, {"<IDS|MSG>", "input_reply"});
  CHECK(recv_frames(k.stdin_) == Frames{"client-A", "<IDS|MSG>", "input_reply"});
}

TEST_CASE("relay: iopub subscriptions go to the kernel and messages to subscribers") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto all1 = h.client(zmq::socket_type::sub, h.host.iopub_port);
  auto all2 = h.client(zmq::socket_type::sub, h.host.iopub_port);
  auto some = h.client(zmq::socket_type::sub, h.host.iopub_port);
  all1.set(zmq::sockopt::subscribe, "");
  all2.set(zmq::sockopt::subscribe, "");
  some.set(zmq::sockopt::subscribe, "kernel.");

  std::vector<std::string> subs;
  for (int i = 0; i < 3; ++i) {
    Frames s = recv_frames(k.iopub);
    REQUIRE(s.size() == 1);
    subs.push_back(s[0]);
  }
  std::sort(subs.begin(), subs.end());
  CHECK(subs ==
        std::vector<std::string>{std::string("\x01", 1), std::string("\x01", 1), std::string("\x01kernel.", 8)});

  send_frames(k.iopub, {"kernel.1.status", "<IDS|MSG>", "busy"});
  send_frames(k.iopub, {"other", "<IDS|MSG>", "stream"});
  const Frames status{"kernel.1.status", "<IDS|MSG>", "busy"};
  const Frames stream{"other", "<IDS|MSG>", "stream"};
  CHECK(recv_frames(all1) == status);
  CHECK(recv_frames(all1) == stream);
  CHECK(recv_frames(all2) == status);
  CHECK(recv_frames(some) == status);
  CHECK(recv_frames(some, 100).empty());  // filtered by topic, by the kernel's PUB
  CHECK(eventually([&] { return h.counters(Channel::kIopub).to_host.messages == 5; }));  // 2 + 2 + 1
  CHECK(h.counters(Channel::kIopub).connections == 3);
}

TEST_CASE("relay: heartbeat echo") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto req = h.client(zmq::socket_type::req, h.host.hb_port);
  req.send(zmq::str_buffer("ping"));
  // ipykernel's heartbeat is zmq.device(QUEUE, router, router): an echo.
  Frames got = recv_frames(k.hb);
  REQUIRE(got.size() == 3);
  CHECK(got[1].empty());  // REQ delimiter
  CHECK(got[2] == "ping");
  send_frames(k.hb, got);
  CHECK(recv_frames(req) == Frames{"ping"});
}

TEST_CASE("relay: control channel round trip over an ipc host transport") {
  Harness h;
  h.host.transport = "ipc";
  h.host.ip = h.dir + "/host-ipc";
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto c = h.client(zmq::socket_type::dealer, h.host.control_port, "client-C");
  send_frames(c, {"<IDS|MSG>", "shutdown_request"});
  CHECK(recv_frames(k.control) == Frames{"client-C", "<IDS|MSG>", "shutdown_request"});
  send_frames(k.control, {"client-C", "<IDS|MSG>", "shutdown_reply"});
  CHECK(recv_frames(c) == Frames{"<IDS|MSG>", "shutdown_reply"});
  const std::string sock = h.host.ip + "-" + std::to_string(h.host.control_port);
  struct stat st {};
  REQUIRE(::stat(sock.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  h.stop();
  h.relay.reset();
  CHECK(::stat(sock.c_str(), &st) != 0);  // removed with the relay, as libzmq does
}

TEST_CASE("relay: requests sent before the kernel binds are delivered as soon as it does") {
  Harness h;
  h.start();
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "kernel_info_request"});
  CHECK(eventually([&] { return h.counters(Channel::kShell).connections == 1; }));
  std::this_thread::sleep_for(30ms);
  FakeKernel k(h.ctx, h.base);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(recv_frames(k.shell) == Frames{"client-A", "<IDS|MSG>", "kernel_info_request"});
  // inotify sees the socket file appear: no polling interval to wait out.
  CHECK(std::chrono::steady_clock::now() - t0 < 90ms);
}

TEST_CASE("relay: a kernel message over the cap cuts that connection; no client receives it") {
  Harness h;
  RelayOptions opt;
  opt.max_message_bytes = 4096;
  h.start(opt);
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "hello"});
  REQUIRE(recv_frames(k.shell).size() == 3);
  const std::string chunk(2000, 'x');

  // After the cut the client's libzmq reconnects by itself; the kernel's
  // ROUTER may lose messages sent meanwhile, so resend until one arrives.
  auto small_arrives = [&](zmq::socket_t& kernel_sock, const Frames& msg, zmq::socket_t& client, const Frames& want) {
    for (int i = 0; i < 100; ++i) {
      if (!send_when_routable(kernel_sock, msg)) return false;
      const Frames got = recv_frames(client, 50);
      if (got == want) return true;
      if (!got.empty()) return false;  // a piece of the refused message
    }
    return false;
  };
  SUBCASE("many frames each under the cap: the sum counts") {
    REQUIRE(send_when_routable(k.shell, {"client-A", "<IDS|MSG>", chunk, chunk, chunk}));
    CHECK(eventually([&] { return h.counters(Channel::kShell).oversized == 1; }));
    CHECK(small_arrives(k.shell, {"client-A", "<IDS|MSG>", "small"}, a, Frames{"<IDS|MSG>", "small"}));
    CHECK(h.counters(Channel::kShell).connections >= 2);  // the client came back
  }
  SUBCASE("one frame over the cap") {
    REQUIRE(send_when_routable(k.shell, {"client-A", "<IDS|MSG>", std::string(10000, 'y')}));
    CHECK(eventually([&] { return h.counters(Channel::kShell).oversized == 1; }));
    CHECK(small_arrives(k.shell, {"client-A", "<IDS|MSG>", "small"}, a, Frames{"<IDS|MSG>", "small"}));
  }
  SUBCASE("on iopub too") {
    auto sub = h.client(zmq::socket_type::sub, h.host.iopub_port);
    sub.set(zmq::sockopt::subscribe, "");
    REQUIRE(recv_frames(k.iopub).size() == 1);
    send_frames(k.iopub, {"t", chunk, chunk, chunk});
    CHECK(eventually([&] { return h.counters(Channel::kIopub).oversized == 1; }));
    Frames got;
    for (int i = 0; i < 100 && got.empty(); ++i) {
      send_frames(k.iopub, {"t", "small"});
      got = recv_frames(sub, 50);
    }
    CHECK(got == Frames{"t", "small"});  // never the big one, nor a piece of it
  }
}

TEST_CASE("relay: a kernel that breaks ZMTP has its connection cut, and the client comes back") {
  Harness h;
  h.start();
  // A raw unix socket stands in for a hostile kernel's shell socket.
  HostSocket raw(h.base + "-1");
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "hello"});
  ik::UniqueFd conn;
  REQUIRE(eventually([&] {
    conn = ik::UniqueFd(::accept4(raw.fd.get(), nullptr, nullptr, 0));
    return conn.valid();
  }));
  const std::string garbage(200, '\x42');
  REQUIRE(::write(conn.get(), garbage.data(), garbage.size()) == static_cast<ssize_t>(garbage.size()));
  CHECK(eventually([&] { return h.counters(Channel::kShell).protocol_errors == 1; }));
  // The client's libzmq reconnects; the relay dials the kernel again.
  ik::UniqueFd again;
  CHECK(eventually([&] {
    again = ik::UniqueFd(::accept4(raw.fd.get(), nullptr, nullptr, 0));
    return again.valid();
  }));
  CHECK(h.counters(Channel::kShell).to_host.bytes == 0);
}

TEST_CASE("relay: kernel socket files that are symlinks or not sockets are never followed") {
  Harness h;
  // A "host" socket outside the kernel's directory, e.g. the user's agent.
  char tmpl[] = "/tmp/ik-host-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string host_dir = tmpl;
  {
    HostSocket victim(host_dir + "/agent.sock");
    REQUIRE(::symlink(victim.path.c_str(), (h.base + "-1").c_str()) == 0);  // shell
    REQUIRE(::mkfifo((h.base + "-4").c_str(), 0600) == 0);                  // control
    h.start();
    auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
    auto c = h.client(zmq::socket_type::dealer, h.host.control_port, "client-C");
    send_frames(a, {"<IDS|MSG>", "hello"});
    send_frames(c, {"<IDS|MSG>", "hello"});
    CHECK(eventually([&] { return h.counters(Channel::kShell).rejected_sockets >= 1; }));
    CHECK(eventually([&] { return h.counters(Channel::kControl).rejected_sockets >= 1; }));
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(victim.someone_connected());
  }
  std::system(("rm -rf '" + host_dir + "'").c_str());
}

TEST_CASE("relay: a kernel that never reads gets back-pressure, not host memory") {
  Harness h;
  RelayOptions opt;
  opt.buffer_bytes = 64 << 10;
  h.start(opt);
  HostSocket raw(h.base + "-1");  // accepts, then never reads
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  a.set(zmq::sockopt::sndhwm, 0);  // unlimited on the client side
  send_frames(a, {"x"});
  ik::UniqueFd conn;
  REQUIRE(eventually([&] {
    conn = ik::UniqueFd(::accept4(raw.fd.get(), nullptr, nullptr, 0));
    return conn.valid();
  }));
  // 64 MiB offered; the relay may hold at most its buffers.
  const std::string block(1 << 20, 'z');
  for (int i = 0; i < 64; ++i) a.send(zmq::buffer(block), zmq::send_flags::dontwait);
  std::this_thread::sleep_for(300ms);
  int queued = 0;
  REQUIRE(::ioctl(conn.get(), FIONREAD, &queued) == 0);
  // What reached the kernel's socket is bounded by the socket buffers, and
  // the relay's own queue by buffer_bytes, whatever the client offers.
  CHECK(queued < (16 << 20));
}

TEST_CASE("relay: a kernel that closes and rebinds its sockets is joined again") {
  Harness h;
  h.start();
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  {
    FakeKernel k(h.ctx, h.base);
    send_frames(a, {"<IDS|MSG>", "one"});
    CHECK(recv_frames(k.shell) == Frames{"client-A", "<IDS|MSG>", "one"});
  }
  FakeKernel k2(h.ctx, h.base);
  Frames got;
  for (int i = 0; i < 100 && got.empty(); ++i) {
    send_frames(a, {"<IDS|MSG>", "two"});
    got = recv_frames(k2.shell, 50);
  }
  CHECK(got == Frames{"client-A", "<IDS|MSG>", "two"});
}

TEST_CASE("relay: connections beyond the per-channel limit are refused") {
  Harness h;
  RelayOptions opt;
  opt.max_connections_per_channel = 2;
  h.start(opt);
  FakeKernel k(h.ctx, h.base);
  std::vector<zmq::socket_t> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(h.client(zmq::socket_type::dealer, h.host.hb_port));
  CHECK(eventually([&] { return h.counters(Channel::kHb).refused_connections >= 2; }));
  CHECK(h.counters(Channel::kHb).connections == 2);
}

TEST_CASE("relay: many idle connections from someone else do not lock the client out") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  // Anyone on the host can connect to the tcp port; without the key they
  // send nothing useful, but they must not use up the relay's connections.
  std::vector<ik::UniqueFd> squatters;
  for (int i = 0; i < 150; ++i) {
    ik::UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(h.host.shell_port));
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    squatters.push_back(std::move(fd));
  }
  CHECK(eventually([&] { return h.counters(Channel::kShell).connections == 150; }));
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "still-served"});
  CHECK(recv_frames(k.shell) == Frames{"client-A", "<IDS|MSG>", "still-served"});
  CHECK(h.counters(Channel::kShell).refused_connections == 0);
}

TEST_CASE("relay: -v logging leaves forwarding intact") {
  ik::log::set_verbose(1);
  {
    Harness h;
    h.start();
    FakeKernel k(h.ctx, h.base);
    auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
    for (int i = 0; i < 2; ++i) send_frames(a, {"<IDS|MSG>", "x"});
    for (int i = 0; i < 2; ++i) CHECK(recv_frames(k.shell).size() == 3);
    CHECK(eventually([&] { return h.counters(Channel::kShell).to_kernel.messages == 2; }));
    CHECK(h.relay->describe_counters().find("shell: 1 connections") != std::string::npos);
  }
  ik::log::set_verbose(0);
}

TEST_CASE("relay: an idle relay blocks in epoll_wait and uses no CPU") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  auto waiting = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-B");
  std::this_thread::sleep_for(500ms);
  h.stop();
  // A busy-polling loop would burn ~500 ms here.
  CHECK(h.run_cpu_ms < 50);
}

TEST_CASE("relay: a port already in use is an error naming the channel") {
  Harness h;
  int port = 0;
  ik::UniqueFd taken = listen_on_free_port(port);
  h.host.control_port = port;
  auto r = h.create();
  REQUIRE_FALSE(r.ok());
  const std::string msg = r.error().describe();
  CHECK(msg.find("control") != std::string::npos);
  CHECK(msg.find("tcp://127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(r.error().err == EADDRINUSE);
  // Nothing stays bound after the failure: the same ports work again.
  taken.reset();
  CHECK(h.create().ok());
}

TEST_CASE("relay: an ipc host path too long for a unix socket is refused") {
  Harness h;
  h.host.transport = "ipc";
  h.host.ip = "/" + std::string(120, 'p');
  auto r = h.create();
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe().find("too long") != std::string::npos);
}

TEST_CASE("relay: once the kernel is gone, the exit notice reaches each iopub subscriber, parented to the last "
          "signed execute_request") {
  Harness h;
  h.start();
  auto sub1 = h.client(zmq::socket_type::sub, h.host.iopub_port);
  auto sub2 = h.client(zmq::socket_type::sub, h.host.iopub_port);
  auto shell = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  sub1.set(zmq::sockopt::subscribe, "");
  sub2.set(zmq::sockopt::subscribe, "");
  const std::string exec1 = R"({"msg_id":"e1","msg_type":"execute_request"})";
  const std::string exec2 = R"({"msg_id":"e2","msg_type":"execute_request"})";
  const std::string info = R"({"msg_id":"k1","msg_type":"kernel_info_request"})";
  {
    FakeKernel k(h.ctx, h.base);
    for (int i = 0; i < 2; ++i) REQUIRE(recv_frames(k.iopub).size() == 1);  // both subscriptions
    const std::string forged = R"({"msg_id":"forged","msg_type":"execute_request"})";
    for (const auto& header : {exec1, exec2, info, forged}) {
      // Signed with the connection key, except the one from someone without it.
      auto sig = ik::relay::hmac_hex(h.host.signature_scheme, header == forged ? "guess" : h.host.key,
                                     {header, "{}", "{}", "{}"});
      REQUIRE(sig);
      send_frames(shell, {"<IDS|MSG>", *sig, header, "{}", "{}", "{}"});
      CHECK(recv_frames(k.shell).at(3) == header);  // relayed unchanged
    }
    // Nor from another connection, unsigned.
    auto other = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-B");
    send_frames(other, {"<IDS|MSG>", "", forged, "{}", "{}", "{}"});
    CHECK(recv_frames(k.shell).at(3) == forged);
    send_frames(k.iopub, {"kernel.1.status", "<IDS|MSG>", "busy"});
    CHECK(recv_frames(sub1) == Frames{"kernel.1.status", "<IDS|MSG>", "busy"});
    CHECK(recv_frames(sub2) == Frames{"kernel.1.status", "<IDS|MSG>", "busy"});
  }  // the kernel's sockets close, as when it dies
  std::this_thread::sleep_for(100ms);
  h.stop();
  CHECK(h.relay->last_execute_header() == exec2);
  ConnectionInfo conn = h.host;
  conn.key = "secret";
  conn.signature_scheme = "hmac-sha256";
  auto wire = ik::relay::exit_notice_wire(conn, h.relay->last_execute_header(), "killed by signal 9 (SIGKILL)");
  REQUIRE(wire);
  CHECK(h.relay->publish_to_iopub(*wire, 1000ms) == 2);
  for (zmq::socket_t* s : {&sub1, &sub2}) {
    Frames stream = recv_frames(*s);
    REQUIRE(stream.size() == 7);
    CHECK(stream[0] == "stream.stderr");
    CHECK(stream[4] == exec2);
    CHECK(stream[6].find("Kernel stopped: killed by signal 9 (SIGKILL)") != std::string::npos);
    Frames status = recv_frames(*s);
    REQUIRE(status.size() == 7);
    CHECK(status[6].find("idle") != std::string::npos);
  }
}

TEST_CASE("relay: an iopub client whose kernel side closed is let go after a second if the kernel lives on") {
  Harness h;
  h.start();
  auto sub = h.client(zmq::socket_type::sub, h.host.iopub_port);
  sub.set(zmq::sockopt::subscribe, "");
  {
    FakeKernel k(h.ctx, h.base);
    REQUIRE(recv_frames(k.iopub).size() == 1);
    send_frames(k.iopub, {"t", "one"});
    CHECK(recv_frames(sub) == Frames{"t", "one"});
  }
  FakeKernel k2(h.ctx, h.base);  // same socket files, a kernel that lives on
  const auto start = std::chrono::steady_clock::now();
  Frames got;
  for (int i = 0; i < 100 && got.empty(); ++i) {
    send_frames(k2.iopub, {"t", "two"});
    got = recv_frames(sub, 50);
  }
  CHECK(got == Frames{"t", "two"});
  CHECK(std::chrono::steady_clock::now() - start >= 900ms);  // held first, for the exit notice
}

TEST_SUITE_END();
