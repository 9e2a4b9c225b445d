// HMAC for signing Jupyter messages (the connection file's key and
// signature_scheme, e.g. "hmac-sha256"), computed by OpenSSL's libcrypto.
// libcrypto is loaded with dlopen the first time a message must be signed:
// linking it would cost every launcher start its relocations, for a
// signature made at most once, when a kernel dies.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace ik::relay {

// Lower-case hex HMAC of the concatenated `parts` with `key`, by the digest
// that `scheme` names ("hmac-" + an OpenSSL digest name: sha256, sha512,
// sha1, md5, ...). An empty key means no signing: returns "".
Result<std::string> hmac_hex(const std::string& scheme, const std::string& key,
                             const std::vector<std::string_view>& parts);

}  // namespace ik::relay
