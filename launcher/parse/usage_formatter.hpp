// CLI11's generated usage line cannot show "[--] PROG ARGS..." for
// programs that take a command; this formatter prints a fixed one.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

namespace ik {

class UsageFormatter : public CLI::Formatter {
 public:
  explicit UsageFormatter(std::string usage) : usage_(std::move(usage)) {}
  std::string make_usage(const CLI::App*, std::string) const override { return "Usage: " + usage_ + "\n"; }

 private:
  std::string usage_;
};

}  // namespace ik
