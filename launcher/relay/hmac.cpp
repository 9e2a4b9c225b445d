#include "relay/hmac.hpp"

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <mutex>

namespace ik::relay {
namespace {

// The absolute path found at build time: the notice is signed after the
// kernel has run, and a bare name would be searched along LD_LIBRARY_PATH,
// whose entries may be directories the kernel could write (an empty entry
// is the working directory, the notebook's folder): the launcher would load
// the kernel's library on the host.
#ifndef IK_LIBCRYPTO_PATH
#define IK_LIBCRYPTO_PATH "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
#endif

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
    void* lib = ::dlopen(IK_LIBCRYPTO_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = ::dlerror();
      c.error = e ? e : "dlopen failed";
      return;
    }
    // No configuration file (OPENSSL_CONF could name one the kernel wrote),
    // so no provider modules either: the built-in default provider signs.
    auto init = reinterpret_cast<decltype(&::OPENSSL_init_crypto)>(::dlsym(lib, "OPENSSL_init_crypto"));
    if (!init || !init(OPENSSL_INIT_NO_LOAD_CONFIG, nullptr)) {
      c.error = "OPENSSL_init_crypto failed";
      return;
    }
    c.digest_by_name = reinterpret_cast<decltype(c.digest_by_name)>(::dlsym(lib, "EVP_get_digestbyname"));
    c.hmac = reinterpret_cast<decltype(c.hmac)>(::dlsym(lib, "HMAC"));
    if (!c.digest_by_name || !c.hmac) c.error = IK_LIBCRYPTO_PATH " lacks EVP_get_digestbyname or HMAC";
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
