#include "apply/spawn_program.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#if defined(__SANITIZE_ADDRESS__)
#define IK_SPAWN_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IK_SPAWN_FORK 1
#endif
#endif

namespace ik {

pid_t spawn_sharing_memory(int (*fn)(void*), void* arg) {
#ifdef IK_SPAWN_FORK
  pid_t pid = fork();
  if (pid == 0) _exit(fn(arg));
  return pid;
#else
  // Its own stack: the child runs while we are suspended, but it must not
  // scribble over our frames. Freed once it has exec'd or exited (vfork
  // semantics: clone returns only then). The program's steps before execve
  // are shallow; 256 KiB leaves ample room.
  constexpr size_t kStack = 256 * 1024;
  void* stack = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
  pid_t pid = clone(fn, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, arg);
  int saved = errno;
  munmap(stack, kStack);
  errno = saved;
  return pid;
#endif
}

}  // namespace ik
