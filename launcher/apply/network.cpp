#include "apply/network.hpp"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "common/fd.hpp"
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

Status set_hostname(const std::string& name) {
  if (sethostname(name.data(), name.size()) != 0) return sys_error("uts: sethostname " + name);
  log::step("uts: hostname %s", name.c_str());
  return ok();
}

}  // namespace ik
