// The caller's passwd and group entries, as getpwuid(3)/getgrgid(3) give
// them, without NSS's set-up when nsswitch.conf lets /etc/passwd and
// /etc/group answer first.
//
// With "passwd: files ..." (Debian's "files systemd", "files sss" on an
// SSSD client, "files ldap") NSS asks /etc/passwd first and returns the
// first line with the uid if there is one; reading that file ourselves
// gives the same entry at a fraction of the cost (no nsswitch parser, no
// nscd socket tried twice per database, no stdio). Whenever that is not
// certain -- another service first, an action after "files", no
// nsswitch.conf, a compat "+"/"-" line, a line we cannot read, the id not
// in the file -- the answer is NSS's own.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>

namespace ik {

struct UserEntry {
  std::string name, home, shell;
};

// getpwuid(uid) / getgrgid(gid) with the shortcut above; nullopt when there
// is no such entry (as NSS says).
std::optional<UserEntry> lookup_user(uid_t uid);
std::optional<std::string> lookup_group_name(gid_t gid);

// The pure parts, for the unit tests.
//
// True when `nsswitch` (the text of nsswitch.conf) has exactly one line for
// `db` and its first service is "files" with the default actions.
bool files_answer_first(const std::string& nsswitch, const std::string& db);

// What the first line of `text` (an /etc/passwd or /etc/group) with `id`
// in field 3 says. `found` false: no such line. nullopt: a line that is not
// plain (compat "+"/"-", a non-numeric id, too few fields) came before, so
// only NSS can tell.
struct ColonLine {
  bool found = false;
  std::string fields[7];
};
std::optional<ColonLine> find_colon_line(const std::string& text, unsigned long id, int nfields);

}  // namespace ik
