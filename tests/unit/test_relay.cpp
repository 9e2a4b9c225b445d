// The relay with real libzmq sockets, all in one process: a fake kernel
// binds ipc sockets in a temp dir, fake clients connect over tcp to
// 127.0.0.1, and the relay runs in a thread stopped through an eventfd.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
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
#include "relay/relay.hpp"

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
// gives it. ROUTER_MANDATORY so tests can wait until the relay is connected.
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
    // Verbose here too, so the test sees every subscription the relay forwards.
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
    base = dir + "/k";
  }
  ~Harness() {
    stop();
    relay.reset();
    std::system(("rm -rf '" + dir + "'").c_str());
  }

  void start(RelayOptions options = {}) {
    auto r = Relay::create(ctx, host, base, options);
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
    if (!identity.empty()) s.set(zmq::sockopt::routing_id, identity);
    s.connect("tcp://127.0.0.1:" + std::to_string(port));
    return s;
  }
  ik::relay::ChannelCounters counters(Channel c) const { return relay->counters()[c]; }
};

}  // namespace

TEST_SUITE_BEGIN("relay");

TEST_CASE("relay: shell request and reply are routed by client identity") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  auto b = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-B");
  send_frames(a, {"<IDS|MSG>", "sig", "req-A"});
  send_frames(b, {"<IDS|MSG>", "sig", "req-B"});

  for (int i = 0; i < 2; ++i) {
    Frames req = recv_frames(k.shell);
    REQUIRE(req.size() == 5);
    CHECK(req[0] == h.relay->routing_id());  // the relay's DEALER
    CHECK(req[1] == (req[4] == "req-A" ? "client-A" : "client-B"));
    CHECK(req[2] == "<IDS|MSG>");
    send_frames(k.shell, {req[0], req[1], "<IDS|MSG>", "sig", "reply-to-" + req[4]});
  }
  CHECK(recv_frames(a) == Frames{"<IDS|MSG>", "sig", "reply-to-req-A"});
  CHECK(recv_frames(b) == Frames{"<IDS|MSG>", "sig", "reply-to-req-B"});

  // The relay counts after sending, so a client may see a message first.
  CHECK(eventually([&] { return h.counters(Channel::kShell).to_host.messages == 2; }));
  const auto c = h.counters(Channel::kShell);
  CHECK(c.to_kernel.messages == 2);
  CHECK(c.to_kernel.bytes == 2 * (8 + 9 + 3 + 5));  // client id + 3 frames
  CHECK(c.to_host.dropped == 0);
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

  // Both stdin clients say hello first, so the host ROUTER knows them
  // before the kernel sends (as a real client's stdin channel would).
  send_frames(a_stdin, {"<IDS|MSG>", "hello"});
  send_frames(b_stdin, {"<IDS|MSG>", "hello"});
  for (int i = 0; i < 2; ++i) REQUIRE(recv_frames(k.stdin_).size() == 4);

  send_frames(a_shell, {"<IDS|MSG>", "execute_request"});
  Frames req = recv_frames(k.shell);
  REQUIRE(req.size() == 4);
  CHECK(req[1] == "client-A");

  // ipykernel addresses input_request with the identities it saw on shell.
  REQUIRE(send_when_routable(k.stdin_, {req[0], req[1], "<IDS|MSG>", "input_request"}));
  CHECK(recv_frames(a_stdin) == Frames{"<IDS|MSG>", "input_request"});
  CHECK(recv_frames(b_stdin, 100).empty());

  send_frames(a_stdin, {"<IDS|MSG>", "input_reply"});
  Frames reply = recv_frames(k.stdin_);
  REQUIRE(reply.size() == 4);
  CHECK(reply[0] == req[0]);  // same routing id on the shell and stdin DEALERs
  CHECK(reply[1] == "client-A");
  CHECK(reply[3] == "input_reply");
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

  // Verbose XPUB on the host: both "" subscriptions arrive, not just one.
  std::vector<std::string> subs;
  for (int i = 0; i < 3; ++i) {
    Frames s = recv_frames(k.iopub);
    REQUIRE(s.size() == 1);
    subs.push_back(s[0]);
  }
  std::sort(subs.begin(), subs.end());
  CHECK(subs == std::vector<std::string>{std::string("\x01", 1), std::string("\x01", 1),
                                         std::string("\x01kernel.", 8)});

  send_frames(k.iopub, {"kernel.1.status", "<IDS|MSG>", "busy"});
  send_frames(k.iopub, {"other", "<IDS|MSG>", "stream"});
  const Frames status{"kernel.1.status", "<IDS|MSG>", "busy"};
  const Frames stream{"other", "<IDS|MSG>", "stream"};
  CHECK(recv_frames(all1) == status);
  CHECK(recv_frames(all1) == stream);
  CHECK(recv_frames(all2) == status);
  CHECK(recv_frames(some) == status);
  CHECK(recv_frames(some, 100).empty());  // filtered by topic
  CHECK(eventually([&] { return h.counters(Channel::kIopub).to_kernel.messages == 3; }));
  CHECK(eventually([&] { return h.counters(Channel::kIopub).to_host.messages == 2; }));
}

TEST_CASE("relay: heartbeat echo") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto req = h.client(zmq::socket_type::req, h.host.hb_port);
  req.send(zmq::str_buffer("ping"));
  // ipykernel's heartbeat is zmq.device(QUEUE, router, router): an echo.
  Frames got = recv_frames(k.hb);
  REQUIRE(got.size() == 4);
  CHECK(got[0] == h.relay->routing_id());
  CHECK(got[2].empty());  // REQ delimiter
  CHECK(got[3] == "ping");
  send_frames(k.hb, got);
  CHECK(recv_frames(req) == Frames{"ping"});
}

TEST_CASE("relay: control channel round trip") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto c = h.client(zmq::socket_type::dealer, h.host.control_port, "client-C");
  send_frames(c, {"<IDS|MSG>", "shutdown_request"});
  Frames got = recv_frames(k.control);
  REQUIRE(got.size() == 4);
  CHECK(got[1] == "client-C");
  send_frames(k.control, {got[0], got[1], "<IDS|MSG>", "shutdown_reply"});
  CHECK(recv_frames(c) == Frames{"<IDS|MSG>", "shutdown_reply"});
}

TEST_CASE("relay: requests sent before the kernel binds are delivered once it does") {
  Harness h;
  h.start();
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "kernel_info_request"});
  CHECK(eventually([&] { return h.counters(Channel::kShell).to_kernel.messages == 1; }));
  std::this_thread::sleep_for(30ms);  // the relay's DEALER is now retrying
  FakeKernel k(h.ctx, h.base);
  const auto t0 = std::chrono::steady_clock::now();
  Frames got = recv_frames(k.shell);
  REQUIRE(got.size() == 4);
  CHECK(got[3] == "kernel_info_request");
  // The short reconnect interval keeps this well under libzmq's 100 ms.
  CHECK(std::chrono::steady_clock::now() - t0 < 90ms);
}

TEST_CASE("relay: oversized kernel-side messages are dropped, later ones pass") {
  Harness h;
  RelayOptions opt;
  opt.max_message_bytes = 4096;
  h.start(opt);
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "hello"});
  Frames req = recv_frames(k.shell);
  REQUIRE(req.size() == 4);
  const std::string chunk(2000, 'x');

  SUBCASE("many frames each under the cap: the relay's sum check") {
    REQUIRE(send_when_routable(k.shell, {req[0], req[1], "<IDS|MSG>", chunk, chunk, chunk}));
    CHECK(eventually([&] { return h.counters(Channel::kShell).oversized == 1; }));
    send_frames(k.shell, {req[0], req[1], "<IDS|MSG>", "small"});
    CHECK(recv_frames(a) == Frames{"<IDS|MSG>", "small"});  // and not the big one
    CHECK(eventually([&] { return h.counters(Channel::kShell).to_host.messages == 1; }));
  }
  SUBCASE("on iopub too") {
    auto sub = h.client(zmq::socket_type::sub, h.host.iopub_port);
    sub.set(zmq::sockopt::subscribe, "");
    REQUIRE(recv_frames(k.iopub).size() == 1);
    send_frames(k.iopub, {"t", chunk, chunk, chunk});
    CHECK(eventually([&] { return h.counters(Channel::kIopub).oversized == 1; }));
    send_frames(k.iopub, {"t", "small"});
    CHECK(recv_frames(sub) == Frames{"t", "small"});
  }
  SUBCASE("one frame over the cap: libzmq drops the link, which comes back") {
    const std::string huge(10000, 'y');
    REQUIRE(send_when_routable(k.shell, {req[0], req[1], "<IDS|MSG>", huge}));
    // Messages sent while the ipc link is being re-established may be lost
    // by the kernel's ROUTER, so resend until one arrives.
    Frames got;
    for (int i = 0; i < 50 && got.empty(); ++i) {
      if (!send_when_routable(k.shell, {req[0], req[1], "<IDS|MSG>", "small"})) break;
      got = recv_frames(a, 100);
    }
    CHECK(got == Frames{"<IDS|MSG>", "small"});
    // libzmq gives up on a link after a protocol error; the relay redials.
    CHECK(h.counters(Channel::kShell).kernel_link_resets >= 1);
    CHECK(eventually([&] { return h.counters(Channel::kShell).to_host.messages >= 1; }));
  }
}

TEST_CASE("relay: a message for a client that is gone is dropped and counted") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
  send_frames(a, {"<IDS|MSG>", "hello"});
  Frames req = recv_frames(k.shell);
  REQUIRE(req.size() == 4);
  send_frames(k.shell, {req[0], "nobody", "<IDS|MSG>", "lost"});
  send_frames(k.shell, {req[0], "client-A", "<IDS|MSG>", "found"});
  CHECK(recv_frames(a) == Frames{"<IDS|MSG>", "found"});
  CHECK(h.counters(Channel::kShell).to_host.dropped == 1);
  CHECK(h.relay->describe_counters().find("shell: to kernel 1 msg") != std::string::npos);
}

TEST_CASE("relay: -v logging of new clients leaves forwarding intact") {
  ik::log::set_verbose(1);
  {
    Harness h;
    h.start();
    FakeKernel k(h.ctx, h.base);
    auto sub = h.client(zmq::socket_type::sub, h.host.iopub_port);
    sub.set(zmq::sockopt::subscribe, "");
    REQUIRE(recv_frames(k.iopub).size() == 1);
    auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
    auto anon = h.client(zmq::socket_type::dealer, h.host.shell_port);  // libzmq-made binary id
    for (int i = 0; i < 2; ++i) {
      send_frames(a, {"<IDS|MSG>", "x"});
      send_frames(anon, {"<IDS|MSG>", "y"});
    }
    for (int i = 0; i < 4; ++i) CHECK(recv_frames(k.shell).size() == 4);
    CHECK(eventually([&] { return h.counters(Channel::kShell).to_kernel.messages == 4; }));
  }
  ik::log::set_verbose(0);
}

TEST_CASE("relay: an idle relay blocks in poll and uses no CPU") {
  Harness h;
  h.start();
  FakeKernel k(h.ctx, h.base);
  auto a = h.client(zmq::socket_type::dealer, h.host.shell_port, "client-A");
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
  auto r = Relay::create(h.ctx, h.host, h.base, {});
  REQUIRE_FALSE(r.ok());
  const std::string msg = r.error().describe();
  CHECK(msg.find("control") != std::string::npos);
  CHECK(msg.find("tcp://127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(r.error().err == EADDRINUSE);
  // Nothing stays bound after the failure: the same ports work again
  // (libzmq closes listeners in its reaper thread, hence "eventually").
  taken.reset();
  CHECK(eventually([&] { return Relay::create(h.ctx, h.host, h.base, {}).ok(); }, 2000));
}

TEST_CASE("relay: an ipc path too long for a unix socket is refused") {
  Harness h;
  auto r = Relay::create(h.ctx, h.host, "/" + std::string(120, 'p'), {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().describe().find("too long") != std::string::npos);
}

TEST_SUITE_END();
