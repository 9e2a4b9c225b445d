#include "apply/network.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/log.hpp"

namespace ik {

Status bring_up_loopback() {
  // Needs CAP_NET_ADMIN in the namespace: must run before capabilities drop.
  UniqueFd sock(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock.valid()) return sys_error("network: socket for lo");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (ioctl(sock.get(), SIOCGIFFLAGS, &ifr) != 0) return sys_error("network: read lo flags");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (ioctl(sock.get(), SIOCSIFFLAGS, &ifr) != 0) return sys_error("network: bring lo up");
  log::step("network: new namespace, lo up, no other interface");
  return ok();
}

namespace {

// unshare(CLONE_NEWNET) for the calling thread only (a per-thread property);
// the new namespace is owned by the sandbox's user namespace, as with clone().
Status new_network_namespace() {
  if (unshare(CLONE_NEWNET) != 0)
    return sys_error("network: create the network namespace (unshare)", errno,
                     "check 'sysctl user.max_net_namespaces'; --share-net keeps the host's network");
  return ok();
}

// Whether another CPU is likely idle now, so that a helper thread would
// overlap with the caller rather than wait for a turn: /proc/loadavg's
// fourth field counts the machine's runnable tasks, the caller included.
// On a busy machine the thread only adds a wake-up and a join to the
// critical path, and its creation and the setns cost CPU (bench/analysis.md).
bool idle_cpu_likely() {
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2) return false;
  UniqueFd fd(open("/proc/loadavg", O_RDONLY | O_CLOEXEC));
  char buf[128] = {};
  if (!fd.valid() || read(fd.get(), buf, sizeof buf - 1) <= 0) return false;
  const char* p = buf;  // "0.52 0.58 0.59 3/412 12345"
  for (int field = 0; field < 3 && p; ++field)
    if ((p = std::strchr(p, ' '))) ++p;
  return p && std::strtol(p, nullptr, 10) < CPU_COUNT(&cpus);
}

}  // namespace

// The helper thread. It allocates nothing unless a step fails (so it needs
// no malloc arena of its own), and reports through State.
void* PrivateNetwork::run(void* state) {
  auto* st = static_cast<State*>(state);
  if (Status ns = new_network_namespace(); !ns) {
    st->status = ns;
  } else if (Status lo = bring_up_loopback(); !lo) {
    st->status = lo;
  } else {
    // thread-self in the host's procfs: this thread, whatever the caller's root is by now.
    st->ns.reset(openat(st->proc.get(), "thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    if (!st->ns.valid()) st->status = sys_error("network: open the new namespace");
  }
  st->proc.reset();  // no handle on the host's /proc outlives this
  return nullptr;
}

Result<PrivateNetwork> PrivateNetwork::start() {
  PrivateNetwork net;
  if (!idle_cpu_likely()) {
    // In place: the calling thread is in the new namespace at once, so there
    // is nothing to join, open or setns into later (enter() sees no state).
    log::step("network: no idle CPU to overlap on: made in place");
    IK_TRY(new_network_namespace());
    IK_TRY(bring_up_loopback());
    return net;
  }
  net.state_ = std::make_unique<State>();
  net.state_->proc.reset(open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!net.state_->proc.valid()) return sys_error("network: open /proc");
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);  // a few calls deep (ample under ASan too)
  net.running_ = pthread_create(&net.thread_, &attr, &PrivateNetwork::run, net.state_.get()) == 0;
  pthread_attr_destroy(&attr);
  if (!net.running_) run(net.state_.get());  // no thread to be had (a tight pids limit, say): in series
  return net;
}

void PrivateNetwork::join() {
  if (running_) pthread_join(thread_, nullptr);
  running_ = false;
}

Status PrivateNetwork::enter() {
  if (!state_) return ok();  // made in place by start()
  join();
  IK_TRY(state_->status);
  // setns needs CAP_SYS_ADMIN over the namespace's owner: our user namespace.
  if (setns(state_->ns.get(), CLONE_NEWNET) != 0) return sys_error("network: enter the new namespace (setns)");
  state_->ns.reset();
  return ok();
}

PrivateNetwork::~PrivateNetwork() { join(); }

Status set_hostname(const std::string& name) {
  if (sethostname(name.data(), name.size()) != 0) return sys_error("uts: sethostname " + name);
  log::step("uts: hostname %s", name.c_str());
  return ok();
}

}  // namespace ik
