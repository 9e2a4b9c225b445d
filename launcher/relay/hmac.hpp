// HMAC for signing and checking Jupyter messages (the connection file's key
// and signature_scheme, e.g. "hmac-sha256"), computed by OpenSSL's libcrypto.
// libcrypto is loaded with dlopen the first time a MAC is needed (a signed
// execute_request on the shell channel, or the exit notice): linking it
// would cost every launcher start its relocations, also for `isolate`.
#pragma once
#include <memory>
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

// The same MAC fed piece by piece, for a message that is not kept whole
// (an execute_request's content can be megabytes): start(), update()...,
// hex(). One libcrypto context, reused by every start().
class HmacStream {
 public:
  HmacStream();
  ~HmacStream();
  HmacStream(const HmacStream&) = delete;
  HmacStream& operator=(const HmacStream&) = delete;

  // Begins a new MAC. `key` must not be empty.
  Status start(const std::string& scheme, const std::string& key);
  void update(std::string_view data);
  // Lower-case hex of the MAC of everything fed since start().
  Result<std::string> hex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Compares two signatures in time that does not depend on where they differ.
bool same_signature(std::string_view a, std::string_view b);

}  // namespace ik::relay
