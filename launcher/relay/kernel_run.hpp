// The kernel launcher's part of the lifecycle (apply/lifecycle.hpp): before
// the start, the client watch (a client already gone gets no kernel); while
// the kernel runs, the relay (or, for --share-net with tcp, the poll loop)
// serving the kernel's output pipes, the client watch and the shutdown
// watch as event sources; at the end, the exit notice to iopub clients.
#pragma once
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>

#include "apply/client_watch.hpp"
#include "apply/lifecycle.hpp"
#include "apply/shutdown_watch.hpp"
#include "relay/connection_file.hpp"
#include "relay/relay.hpp"
#include "relay/stdio_pump.hpp"

namespace ik {

struct KernelRunSettings {
  relay::ConnectionInfo host_conn;  // the connection file jupyter_client wrote
  relay::RelayOptions relay_options;
  bool use_relay = true;        // false: --share-net with tcp, the kernel binds the host ports itself
  std::string kernel_ipc_base;  // the kernel's ipc sockets inside: "<base>-1" ... "<base>-5"
  pid_t parent_at_start = 0;    // getppid() first thing in main, for the client watch
  std::string client_pid;       // the client to follow, as JPY_PARENT_PID gives it; "": JPY_PARENT_PID
};

class KernelHooks : public LifecycleHooks {
 public:
  explicit KernelHooks(KernelRunSettings settings) : settings_(std::move(settings)) {}

  const char* subject() const override { return "kernel"; }
  // The kernel never gets our stdio (the Jupyter server's log, a terminal).
  bool pipe_stdio() const override { return true; }
  std::optional<int> before_start() override;
  Ending run(Running& r) override;
  void after_end(Running& r, const Ending& end) override;

 private:
  Ending run_relay(Running& r);
  void tell_clients_why(const Running& r);

  KernelRunSettings settings_;
  std::optional<ClientWatch> client_;
  std::unique_ptr<StdioPump> pump_;
  std::optional<ShutdownWatch> shutdown_watch_;
  std::unique_ptr<relay::Relay> relay_;  // kept after run() for the exit notice
};

}  // namespace ik
