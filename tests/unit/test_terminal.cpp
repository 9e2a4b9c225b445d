// isolate's terminal: --pty/--no-pty (parse/terminal_cli), the pty decision
// (plan/terminal), its place in --print-plan, and RawTerminal on a real pty.
#include <doctest/doctest.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "parse/cli.hpp"
#include "parse/terminal_cli.hpp"
#include "plan/plan.hpp"
#include "plan/terminal.hpp"
#include "relay/terminal.hpp"

using ik::PtyMode;

namespace {

ik::Result<ik::Options> parse(const std::vector<std::string>& args) {
  CLI::App app{"test", "isolate"};
  ik::TerminalCli cli(app);
  REQUIRE(ik::parse_options(app, args, "isolate") == -1);
  ik::Options o;
  auto s = cli.finish(o);
  if (!s) return s.error();
  return o;
}

}  // namespace

TEST_CASE("terminal cli: --pty, --no-pty, neither, both") {
  CHECK(parse({})->pty == PtyMode::kAuto);
  CHECK(parse({"--pty"})->pty == PtyMode::kAlways);
  CHECK(parse({"--no-pty"})->pty == PtyMode::kNever);
  auto both = parse({"--pty", "--no-pty"});
  REQUIRE_FALSE(both.ok());
  CHECK(both.error().exit_code == ik::kExitUsage);
  CHECK(both.error().step == "--pty and --no-pty contradict each other");
}

TEST_CASE("choose_terminal: auto needs stdin and stdout on a terminal") {
  auto t = ik::choose_terminal(PtyMode::kAuto, true, true, true);
  CHECK(t.pty);
  CHECK(t.stderr_to_pty);
  CHECK(t.why == "stdin and stdout are terminals");
  t = ik::choose_terminal(PtyMode::kAuto, true, true, false);  // 2>log
  CHECK(t.pty);
  CHECK_FALSE(t.stderr_to_pty);
  t = ik::choose_terminal(PtyMode::kAuto, false, true, true);  // < file
  CHECK_FALSE(t.pty);
  CHECK(t.why == "stdin is not a terminal");
  t = ik::choose_terminal(PtyMode::kAuto, true, false, true);  // > file: no \r\n in it
  CHECK_FALSE(t.pty);
  CHECK(t.why == "stdout is not a terminal");
  t = ik::choose_terminal(PtyMode::kAuto, true, true, true, false);  // isolate cmd &
  CHECK_FALSE(t.pty);
  CHECK(t.why == "isolate is in the background of its terminal");
  CHECK(ik::choose_terminal(PtyMode::kAlways, true, true, true, false).pty);
}

TEST_CASE("choose_terminal: --pty and --no-pty win over what is a terminal") {
  auto t = ik::choose_terminal(PtyMode::kAlways, false, false, false);
  CHECK(t.pty);
  CHECK_FALSE(t.stderr_to_pty);  // a redirected stderr stays apart
  CHECK(ik::choose_terminal(PtyMode::kAlways, false, false, true).stderr_to_pty);
  t = ik::choose_terminal(PtyMode::kNever, true, true, true);
  CHECK_FALSE(t.pty);
  CHECK(t.why == "--no-pty");
}

TEST_CASE("plan_to_json shows the terminal") {
  ik::Plan p;
  CHECK(ik::plan_to_json(p)["terminal"] == nlohmann::json{{"mode", "inherit"}});
  p.terminal = ik::choose_terminal(PtyMode::kAuto, true, true, false);
  CHECK(ik::plan_to_json(p)["terminal"] ==
        nlohmann::json{{"mode", "pty"}, {"stderr", "inherit"}, {"why", "stdin and stdout are terminals"}});
}

TEST_CASE("RawTerminal: raw while it lives, the saved modes back after") {
  int master, slave;
  REQUIRE(openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
  termios before;
  REQUIRE(tcgetattr(slave, &before) == 0);
  REQUIRE((before.c_lflag & ICANON));
  {
    auto raw = ik::RawTerminal::enter(slave);
    REQUIRE(raw.ok());
    termios now;
    REQUIRE(tcgetattr(slave, &now) == 0);
    CHECK_FALSE((now.c_lflag & (ICANON | ECHO | ISIG)));
    CHECK_FALSE((now.c_oflag & OPOST));
    raw->restore();  // as before stopping itself
    REQUIRE(tcgetattr(slave, &now) == 0);
    CHECK((now.c_lflag & ICANON));
    raw->reapply();  // continued
    REQUIRE(tcgetattr(slave, &now) == 0);
    CHECK_FALSE((now.c_lflag & ICANON));
    auto moved = std::move(*raw);  // only the last owner restores
  }
  termios after;
  REQUIRE(tcgetattr(slave, &after) == 0);
  CHECK(after.c_lflag == before.c_lflag);
  CHECK(after.c_iflag == before.c_iflag);
  CHECK(after.c_oflag == before.c_oflag);
  close(master);
  close(slave);
}

TEST_CASE("RawTerminal: not a terminal is an error with a hint") {
  int p[2];
  REQUIRE(pipe(p) == 0);
  auto raw = ik::RawTerminal::enter(p[0]);
  REQUIRE_FALSE(raw.ok());
  CHECK(raw.error().err == ENOTTY);
  CHECK(raw.error().hint == "try --no-pty");
  close(p[0]);
  close(p[1]);
}
