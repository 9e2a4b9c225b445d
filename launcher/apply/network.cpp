#include "apply/network.hpp"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

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

// The helper thread. It allocates nothing unless a step fails (so it needs
// no malloc arena of its own), and reports through State.
void* PrivateNetwork::run(void* state) {
  auto* st = static_cast<State*>(state);
  // Only this thread changes network namespace (a per-thread property); the
  // new one is owned by the sandbox's user namespace, as with clone().
  if (unshare(CLONE_NEWNET) != 0) {
    st->status = sys_error("network: create the network namespace (unshare)", errno,
                           "check 'sysctl user.max_net_namespaces'; --share-net keeps the host's network");
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
