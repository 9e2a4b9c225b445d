// Privileges: empties every capability set (bounding included) and sets
// no_new_privs, so even uid 0 inside cannot remount, unmount or regain
// capabilities through execve.
#pragma once
#include "common/error.hpp"

namespace ik {

Status drop_all_capabilities();
Status set_no_new_privs();

}  // namespace ik
