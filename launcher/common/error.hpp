// Error values that carry the failing step, errno and a hint for the user.
// Every layer returns these; only main() prints them (one line) and exits.
#pragma once
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace ik {

// Exit statuses, same convention as env(1)/bash/bwrap.
enum ExitCode : int {
  kExitUsage = 2,    // bad command line or config
  kExitSetup = 125,  // the sandbox could not be built
  kExitNotExecutable = 126,
  kExitNotFound = 127,
};

struct Error {
  std::string step;     // what we were doing, e.g. "mount /usr"
  int err = 0;          // errno, 0 when not a syscall failure
  std::string message;  // extra detail
  std::string hint;     // how to fix it (may be empty)
  int exit_code = kExitSetup;

  std::string describe() const {
    std::string s = step;
    if (!message.empty()) s += ": " + message;
    if (err != 0) s += std::string(": ") + std::strerror(err);
    if (!hint.empty()) s += " (" + hint + ")";
    return s;
  }
};

inline Error sys_error(std::string step, int e = errno, std::string hint = {}) {
  return Error{std::move(step), e, {}, std::move(hint), kExitSetup};
}
inline Error usage_error(std::string what, std::string hint = {}) {
  return Error{std::move(what), 0, {}, std::move(hint), kExitUsage};
}

// Minimal std::expected stand-in (g++ 12 has no <expected>).
template <typename T>
class Result {
 public:
  Result(T v) : v_(std::move(v)) {}
  Result(Error e) : v_(std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;
inline Status ok() { return Ok{}; }

}  // namespace ik

// Propagate an error from an expression returning Status/Result.
#define IK_TRY(expr)                               \
  do {                                             \
    auto ik_try_r_ = (expr);                       \
    if (!ik_try_r_.ok()) return ik_try_r_.error(); \
  } while (0)
