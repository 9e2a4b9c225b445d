// host/user_db.hpp: the passwd/group shortcut gives what NSS gives, and
// leaves every case it cannot be sure of to NSS.
#include <doctest/doctest.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include "host/user_db.hpp"

using ik::files_answer_first;
using ik::find_colon_line;

TEST_CASE("user_db: nsswitch.conf lets files answer first") {
  CHECK(files_answer_first("passwd: files\n", "passwd"));
  CHECK(files_answer_first("# comment\npasswd:         files systemd\ngroup: files\n", "passwd"));
  CHECK(files_answer_first("passwd:files sss\n", "passwd"));
  CHECK(files_answer_first("  group : files ldap # trailing comment\n", "group"));
  CHECK(files_answer_first("passwd: files\ngroup: sss files\n", "passwd"));
}

TEST_CASE("user_db: anything else is left to NSS") {
  CHECK_FALSE(files_answer_first("", "passwd"));                                         // no line: glibc's default
  CHECK_FALSE(files_answer_first("group: files\n", "passwd"));                           // the other database
  CHECK_FALSE(files_answer_first("passwd: sss files\n", "passwd"));                      // another service first
  CHECK_FALSE(files_answer_first("passwd: compat\n", "passwd"));                         // +/- lines, NIS
  CHECK_FALSE(files_answer_first("passwd: files [SUCCESS=continue] ldap\n", "passwd"));  // an action
  CHECK_FALSE(files_answer_first("passwd: files\npasswd: ldap\n", "passwd"));            // twice: not ours to judge
  CHECK_FALSE(files_answer_first("# passwd: files\n", "passwd"));                        // commented out
  CHECK_FALSE(files_answer_first("passwdx: files\n", "passwd"));
  CHECK_FALSE(files_answer_first("passwd:\n", "passwd"));
  CHECK_FALSE(files_answer_first("passwd: FILES\n", "passwd"));
}

TEST_CASE("user_db: the first line with the id, as NSS's files backend reads it") {
  const std::string passwd = "root:x:0:0:root:/root:/bin/bash\n"
                             "# a comment\n"
                             "\n"
                             "alice:x:1000:1000:Alice A,,,:/home/alice:/bin/zsh\n"
                             "alias:x:1000:1000::/other:/bin/sh\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";
  auto a = find_colon_line(passwd, 1000, 7);
  REQUIRE(a);
  REQUIRE(a->found);
  CHECK(a->fields[0] == "alice");
  CHECK(a->fields[5] == "/home/alice");
  CHECK(a->fields[6] == "/bin/zsh");
  auto n = find_colon_line(passwd, 65534, 7);  // the last line, no newline
  REQUIRE(n);
  CHECK(n->fields[6] == "/usr/sbin/nologin");
  auto missing = find_colon_line(passwd, 4242, 7);
  REQUIRE(missing);
  CHECK_FALSE(missing->found);
  auto g = find_colon_line("root:x:0:\nstaff:x:50:alice,bob\n", 50, 4);
  REQUIRE(g);
  CHECK(g->fields[0] == "staff");
  CHECK(g->fields[3] == "alice,bob");
}

TEST_CASE("user_db: a line it cannot read the way NSS would sends the lookup to NSS") {
  CHECK_FALSE(find_colon_line("+alice::::::\nalice:x:1000:1000::/h:/bin/sh\n", 1000, 7));  // compat
  CHECK_FALSE(find_colon_line("-bob::::::\n", 1000, 7));
  CHECK_FALSE(find_colon_line("odd:x:1x:1::/h:/bin/sh\n", 1000, 7));             // not a number
  CHECK_FALSE(find_colon_line("short:x:1000:1000\n", 1000, 7));                  // too few fields
  CHECK_FALSE(find_colon_line("long:x:1000:1000::/h:/bin/sh:more\n", 1000, 7));  // too many
  CHECK_FALSE(find_colon_line(" lead:x:1000:1000::/h:/bin/sh\n", 1000, 7));      // leading blank
  CHECK_FALSE(find_colon_line(":x:1000:1000::/h:/bin/sh\n", 1000, 7));           // no name
  // ... but only when it comes before the answer.
  auto ok = find_colon_line("alice:x:1000:1000::/h:/bin/sh\n+::::::\n", 1000, 7);
  REQUIRE(ok);
  CHECK(ok->found);
}

TEST_CASE("user_db: the caller's own entries equal getpwuid/getgrgid's") {
  // Runs as whoever runs the unit tests (root, iktest in scripts/test).
  const uid_t uid = getuid();
  const gid_t gid = getgid();
  auto u = ik::lookup_user(uid);
  const passwd* pw = getpwuid(uid);
  REQUIRE(u.has_value() == (pw != nullptr));
  if (pw) {
    CHECK(u->name == pw->pw_name);
    CHECK(u->home == pw->pw_dir);
    CHECK(u->shell == pw->pw_shell);
  }
  auto g = ik::lookup_group_name(gid);
  const group* gr = getgrgid(gid);
  REQUIRE(g.has_value() == (gr != nullptr));
  if (gr) CHECK(*g == gr->gr_name);
  // An id no one has: no entry, as NSS says.
  CHECK(ik::lookup_user(4000000000u).has_value() == (getpwuid(4000000000u) != nullptr));
}
