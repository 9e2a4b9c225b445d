#include "relay/hmac.hpp"

#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <mutex>

namespace ik::relay {
namespace {

// The absolute path found at build time: a MAC is made while or after the
// kernel runs, and a bare name would be searched along LD_LIBRARY_PATH,
// whose entries may be directories the kernel could write (an empty entry
// is the working directory, the notebook's folder): the launcher would load
// the kernel's library on the host.
#ifndef IK_LIBCRYPTO_PATH
#define IK_LIBCRYPTO_PATH "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
#endif

struct Crypto {
  decltype(&::EVP_MAC_fetch) mac_fetch = nullptr;
  decltype(&::EVP_MAC_free) mac_free = nullptr;
  decltype(&::EVP_MAC_CTX_new) ctx_new = nullptr;
  decltype(&::EVP_MAC_CTX_free) ctx_free = nullptr;
  decltype(&::EVP_MAC_init) init = nullptr;
  decltype(&::EVP_MAC_update) update = nullptr;
  decltype(&::EVP_MAC_final) final = nullptr;
  std::string error;
};

template <typename F>
bool bind(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(::dlsym(lib, name));
  return f != nullptr;
}

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
    if (!bind(lib, "EVP_MAC_fetch", c.mac_fetch) || !bind(lib, "EVP_MAC_free", c.mac_free) ||
        !bind(lib, "EVP_MAC_CTX_new", c.ctx_new) || !bind(lib, "EVP_MAC_CTX_free", c.ctx_free) ||
        !bind(lib, "EVP_MAC_init", c.init) || !bind(lib, "EVP_MAC_update", c.update) ||
        !bind(lib, "EVP_MAC_final", c.final))
      c.error = IK_LIBCRYPTO_PATH " lacks the EVP_MAC functions";
  });
  return c;
}

}  // namespace

struct HmacStream::Ctx {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  ~Ctx() {
    if (ctx) crypto().ctx_free(ctx);
    if (mac) crypto().mac_free(mac);
  }
};

HmacStream::HmacStream() = default;
HmacStream::~HmacStream() = default;

Status HmacStream::start(const std::string& scheme, const std::string& key) {
  constexpr std::string_view kPrefix = "hmac-";
  if (scheme.compare(0, kPrefix.size(), kPrefix) != 0)
    return usage_error("signature_scheme '" + scheme + "' is not hmac-<digest>");
  const Crypto& c = crypto();
  if (!c.error.empty()) return Error{"load OpenSSL's libcrypto for an HMAC", 0, c.error, "install libssl3", kExitSetup};
  if (!ctx_) {
    auto fresh = std::make_unique<Ctx>();
    fresh->mac = c.mac_fetch(nullptr, "HMAC", nullptr);
    if (fresh->mac) fresh->ctx = c.ctx_new(fresh->mac);
    if (!fresh->ctx) return Error{"set up an HMAC (EVP_MAC_fetch)", 0, {}, {}, kExitSetup};
    ctx_ = std::move(fresh);
  }
  std::string digest = scheme.substr(kPrefix.size());
  const OSSL_PARAM params[] = {OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, digest.data(), 0), OSSL_PARAM_END};
  // Every init with a key starts a fresh MAC on the same context.
  if (!c.init(ctx_->ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(), params))
    return usage_error("signature_scheme '" + scheme + "': unknown digest");
  return ok();
}

void HmacStream::update(std::string_view data) {
  if (ctx_ && !data.empty())
    crypto().update(ctx_->ctx, reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

Result<std::string> HmacStream::hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t len = 0;
  if (!ctx_ || !crypto().final(ctx_->ctx, out, &len, sizeof out)) return Error{"HMAC", 0, {}, {}, kExitSetup};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (size_t i = 0; i < len; ++i) {
    hex.push_back(kHex[out[i] >> 4]);
    hex.push_back(kHex[out[i] & 15]);
  }
  return hex;
}

Result<std::string> hmac_hex(const std::string& scheme, const std::string& key,
                             const std::vector<std::string_view>& parts) {
  if (key.empty()) return std::string();
  HmacStream mac;
  IK_TRY(mac.start(scheme, key));
  for (auto p : parts) mac.update(p);
  return mac.hex();
}

bool same_signature(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace ik::relay
