// common/strings.hpp: the one list splitter (cgroup options, ...).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/strings.hpp"

using V = std::vector<std::string>;

TEST_CASE("split_nonempty: pieces between separators, empty ones dropped") {
  CHECK(ik::split_nonempty("", ',') == V{});
  CHECK(ik::split_nonempty(",", ',') == V{});
  CHECK(ik::split_nonempty("a", ',') == V{"a"});
  CHECK(ik::split_nonempty("numpy,,pandas,", ',') == V{"numpy", "pandas"});
  CHECK(ik::split_nonempty(",a b,c", ',') == V{"a b", "c"});
  CHECK(ik::split_nonempty("0::/ cgroup2  rw", ' ') == V{"0::/", "cgroup2", "rw"});
}
