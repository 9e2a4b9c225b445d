// Just enough of a Jupyter message header to know its type: the relay uses
// it to notice the kernel's shutdown_reply (see apply/shutdown_watch.hpp).
// Not a JSON parser: a header whose "msg_type" is not a plain string with
// no escapes simply does not match.
#pragma once
#include <string_view>

namespace ik::relay {

// True if HEADER (the start of a header frame's JSON) has "msg_type": TYPE.
bool header_msg_type_is(std::string_view header, std::string_view type);

}  // namespace ik::relay
