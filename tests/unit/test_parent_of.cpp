// parent_of (apply/client_watch): the parent a real process's
// /proc/<pid>/stat names, which the pool daemon checks before it SIGKILLs a
// pid it remembers (pool/daemon.cpp, end_waiting_sandboxes).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "apply/client_watch.hpp"

TEST_CASE("parent_of: ourselves, a child whose name holds ') ', a reaped child") {
  CHECK(ik::parent_of(getpid()) == getppid());
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // comm may hold spaces and ')': the parser starts after the last ')'.
    prctl(PR_SET_NAME, "x) 1 2 (y) ", 0, 0, 0);
    (void)!write(ready[1], "r", 1);
    pause();  // until the parent's SIGKILL
    _exit(0);
  }
  close(ready[1]);
  char c;
  REQUIRE(read(ready[0], &c, 1) == 1);
  close(ready[0]);
  CHECK(ik::parent_of(child) == getpid());
  kill(child, SIGKILL);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  // Reaped: no such process, or (the number reused at once) not our child.
  CHECK(ik::parent_of(child) != getpid());
}
