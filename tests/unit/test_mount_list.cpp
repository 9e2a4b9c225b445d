// The mount-list grammar shared with isolate.sh (parse/mount_list).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "parse/mount_list.hpp"

using ik::MountEntry;
using ik::parse_mount_entry;
using ik::parse_mount_list;

namespace {

MountEntry entry(const std::string& text) {
  auto r = parse_mount_entry(text);
  REQUIRE_MESSAGE(r.ok(), text << ": " << (r.ok() ? std::string() : r.error().describe()));
  return *r;
}

ik::Error entry_error(const std::string& text) {
  auto r = parse_mount_entry(text);
  REQUIRE_MESSAGE(!r.ok(), text << " should have been rejected");
  return r.error();
}

}  // namespace

TEST_CASE("mount entry: plain PATH") {
  auto e = entry("/data");
  CHECK(e.text == "/data");
  CHECK(e.dest == "/data");
  CHECK(e.src.empty());
  CHECK_FALSE(e.readonly);
  CHECK_FALSE(e.rbind);
  CHECK_FALSE(e.none);

  CHECK(entry(".").dest == ".");
  CHECK(entry("~/course").dest == "~/course");
  CHECK(entry("relative/dir").dest == "relative/dir");
}

TEST_CASE("mount entry: single flags ro, rw, rbind") {
  auto ro = entry("ro:/data");
  CHECK(ro.readonly);
  CHECK_FALSE(ro.rbind);
  CHECK(ro.dest == "/data");
  CHECK(ro.text == "ro:/data");

  auto rw = entry("rw:/data");
  CHECK_FALSE(rw.readonly);
  CHECK(rw.dest == "/data");

  auto rb = entry("rbind:/data");
  CHECK(rb.rbind);
  CHECK_FALSE(rb.readonly);
  CHECK(rb.dest == "/data");
}

TEST_CASE("mount entry: comma-joined flags") {
  auto e = entry("ro,rbind:/x");
  CHECK(e.readonly);
  CHECK(e.rbind);
  CHECK(e.dest == "/x");

  auto e2 = entry("rbind,ro:~/y");
  CHECK(e2.readonly);
  CHECK(e2.rbind);
  CHECK(e2.dest == "~/y");

  // Later flags win: "ro,rw" ends read-write, "rw,ro" read-only.
  CHECK_FALSE(entry("ro,rw:/x").readonly);
  CHECK(entry("rw,ro:/x").readonly);
}

TEST_CASE("mount entry: DEST=SRC") {
  auto e = entry("/data=~/course/data");
  CHECK(e.dest == "/data");
  CHECK(e.src == "~/course/data");
  CHECK_FALSE(e.none);
  CHECK_FALSE(e.readonly);
}

TEST_CASE("mount entry: flags with DEST=SRC") {
  auto e = entry("ro:/data=/srv/data");
  CHECK(e.readonly);
  CHECK(e.dest == "/data");
  CHECK(e.src == "/srv/data");

  auto e2 = entry("ro,rbind:/a=b");
  CHECK(e2.readonly);
  CHECK(e2.rbind);
  CHECK(e2.dest == "/a");
  CHECK(e2.src == "b");
}

TEST_CASE("mount entry: DEST=none") {
  auto e = entry("/secret=none");
  CHECK(e.none);
  CHECK(e.dest == "/secret");
  CHECK(e.src.empty());
  CHECK(e.text == "/secret=none");

  auto e2 = entry("~/.ssh=none");
  CHECK(e2.none);
  CHECK(e2.dest == "~/.ssh");
}

TEST_CASE("mount entry: a colon that does not follow a flag list belongs to the path") {
  auto e = entry("/a:b");
  CHECK(e.dest == "/a:b");
  CHECK_FALSE(e.readonly);
  CHECK_FALSE(e.rbind);

  // A flag-like prefix with an unknown word is still a path.
  auto e2 = entry("ro,bogus:/x");
  CHECK(e2.dest == "ro,bogus:/x");
  CHECK_FALSE(e2.readonly);

  auto e3 = entry("rox:/x");
  CHECK(e3.dest == "rox:/x");
  CHECK_FALSE(e3.readonly);

  // Only the first colon splits flags; the rest stays in the path.
  auto e4 = entry("ro:/a:b");
  CHECK(e4.readonly);
  CHECK(e4.dest == "/a:b");

  // DEST=SRC where SRC holds a colon.
  auto e5 = entry("/d=/s:t");
  CHECK(e5.dest == "/d");
  CHECK(e5.src == "/s:t");
}

TEST_CASE("mount entry errors") {
  SUBCASE("flags with an empty path") {
    auto err = entry_error("ro:");
    CHECK(err.exit_code == ik::kExitUsage);
    CHECK(err.describe().find("ro:") != std::string::npos);
    CHECK(err.describe().find("empty path") != std::string::npos);
    CHECK(entry_error("ro,rbind:").exit_code == ik::kExitUsage);
  }
  SUBCASE("empty entry") { CHECK(entry_error("").exit_code == ik::kExitUsage); }
  SUBCASE("=x: empty DEST") {
    auto err = entry_error("=x");
    CHECK(err.exit_code == ik::kExitUsage);
    CHECK(err.describe().find("'=x'") != std::string::npos);
    CHECK(err.describe().find("both sides") != std::string::npos);
  }
  SUBCASE("x=: empty SRC") {
    auto err = entry_error("x=");
    CHECK(err.exit_code == ik::kExitUsage);
    CHECK(err.describe().find("'x='") != std::string::npos);
  }
  SUBCASE("ro:=x") { CHECK(entry_error("ro:=x").exit_code == ik::kExitUsage); }
  SUBCASE("=none") { CHECK(entry_error("=none").exit_code == ik::kExitUsage); }
}

TEST_CASE("mount list: splitting on spaces") {
  SUBCASE("several entries keep their order") {
    auto r = parse_mount_list("ro:/usr/share/data . /x=/y /s=none");
    REQUIRE(r.ok());
    REQUIRE(r->size() == 4);
    CHECK((*r)[0].dest == "/usr/share/data");
    CHECK((*r)[0].readonly);
    CHECK((*r)[1].dest == ".");
    CHECK((*r)[2].dest == "/x");
    CHECK((*r)[2].src == "/y");
    CHECK((*r)[3].none);
  }
  SUBCASE("multiple, leading and trailing spaces are ignored") {
    auto r = parse_mount_list("  /a    ro:/b   ");
    REQUIRE(r.ok());
    REQUIRE(r->size() == 2);
    CHECK((*r)[0].dest == "/a");
    CHECK((*r)[1].dest == "/b");
    CHECK((*r)[1].readonly);
  }
  SUBCASE("tabs and newlines separate too") {
    auto r = parse_mount_list("/a\t/b\n/c");
    REQUIRE(r.ok());
    CHECK(r->size() == 3);
  }
  SUBCASE("empty and blank lists give no entries") {
    auto r = parse_mount_list("");
    REQUIRE(r.ok());
    CHECK(r->empty());
    auto r2 = parse_mount_list("    ");
    REQUIRE(r2.ok());
    CHECK(r2->empty());
  }
  SUBCASE("one bad entry fails the whole list and is named") {
    auto r = parse_mount_list("/a ro: /b");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().exit_code == ik::kExitUsage);
    CHECK(r.error().describe().find("'ro:'") != std::string::npos);
    auto r2 = parse_mount_list("/a x= /b");
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.error().describe().find("'x='") != std::string::npos);
  }
}
