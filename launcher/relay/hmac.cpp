#include "relay/hmac.hpp"

#include <dlfcn.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <mutex>

namespace ik::relay {
namespace {

struct Crypto {
  decltype(&::EVP_get_digestbyname) digest_by_name = nullptr;
  decltype(&::HMAC) hmac = nullptr;
  std::string error;
};

const Crypto& crypto() {
  static Crypto c;
  static std::once_flag once;
  std::call_once(once, [] {
    // Never closed: the process ends soon after, and libcrypto registers
    // atexit handlers that must stay mapped.
    void* lib = ::dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = ::dlerror();
      c.error = e ? e : "dlopen failed";
      return;
    }
    c.digest_by_name = reinterpret_cast<decltype(c.digest_by_name)>(::dlsym(lib, "EVP_get_digestbyname"));
    c.hmac = reinterpret_cast<decltype(c.hmac)>(::dlsym(lib, "HMAC"));
    if (!c.digest_by_name || !c.hmac) c.error = "libcrypto.so.3 lacks EVP_get_digestbyname or HMAC";
  });
  return c;
}

}  // namespace

Result<std::string> hmac_hex(const std::string& scheme, const std::string& key,
                             const std::vector<std::string_view>& parts) {
  if (key.empty()) return std::string();
  constexpr std::string_view kPrefix = "hmac-";
  if (scheme.compare(0, kPrefix.size(), kPrefix) != 0)
    return usage_error("signature_scheme '" + scheme + "' is not hmac-<digest>");
  const Crypto& c = crypto();
  if (!c.error.empty())
    return Error{"load OpenSSL's libcrypto to sign a message", 0, c.error, "install libssl3", kExitSetup};
  const EVP_MD* md = c.digest_by_name(scheme.c_str() + kPrefix.size());
  if (!md) return usage_error("signature_scheme '" + scheme + "': unknown digest");
  std::string data;
  for (auto p : parts) data.append(p);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!c.hmac(md, key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
              data.size(), out, &len))
    return Error{"sign a message (HMAC)", 0, {}, {}, kExitSetup};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex.push_back(kHex[out[i] >> 4]);
    hex.push_back(kHex[out[i] & 15]);
  }
  return hex;
}

}  // namespace ik::relay
