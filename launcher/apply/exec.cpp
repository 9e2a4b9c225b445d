#include "apply/exec.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <sstream>

namespace ik {
namespace {

std::string env_value(const std::vector<std::string>& env, const std::string& name) {
  for (const auto& kv : env)
    if (kv.compare(0, name.size() + 1, name + "=") == 0) return kv.substr(name.size() + 1);
  return {};
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> out;
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) out.push_back(dir.empty() ? "." : dir);
  return out;
}

// execve gives ENOENT both when the file is missing and when the
// interpreter named on its #! line is: name the one that is really missing.
std::string missing_interpreter(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return {};
  FILE* f = std::fopen(path.c_str(), "re");
  if (!f) return {};
  char line[256] = {};
  bool got = std::fgets(line, sizeof line, f) != nullptr;
  std::fclose(f);
  if (!got || line[0] != '#' || line[1] != '!') return {};
  std::string interp = line + 2;
  size_t b = interp.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  interp = interp.substr(b, interp.find_first_of(" \t\n", b) - b);
  return access(interp.c_str(), F_OK) == 0 ? std::string() : interp;
}

Error exec_error(const std::string& program, int err, const std::string& where) {
  if (err == ENOENT) {
    std::string interp = missing_interpreter(program);
    if (!interp.empty())
      return Error{
          interp, 0, "not found inside the sandbox (the #! interpreter of " + program + ")", {}, kExitNotFound};
    return Error{program, 0, "not found inside the sandbox" + where, {}, kExitNotFound};
  }
  return Error{program, err, "cannot execute inside the sandbox", {}, kExitNotExecutable};
}

}  // namespace

Error exec_program(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);
  const std::string& prog = argv[0];
  if (prog.find('/') != std::string::npos) {
    execve(prog.c_str(), cargv.data(), cenv.data());
    return exec_error(prog, errno, "");
  }
  // PATH search with the sandbox's PATH (execvpe would use ours).
  int first_error = ENOENT;
  for (const auto& dir : split_path(env_value(env, "PATH"))) {
    std::string candidate = dir + "/" + prog;
    execve(candidate.c_str(), cargv.data(), cenv.data());
    if (errno == ENOENT && !missing_interpreter(candidate).empty()) return exec_error(candidate, ENOENT, "");
    if (errno != ENOENT && errno != ENOTDIR && first_error == ENOENT) first_error = errno;
  }
  return exec_error(prog, first_error, first_error == ENOENT ? " (searched PATH=" + env_value(env, "PATH") + ")" : "");
}

std::string not_found_hint(const std::string& program, const std::string& host_path_var) {
  std::string host_path;
  if (program.find('/') != std::string::npos) {
    if (access(program.c_str(), F_OK) == 0) host_path = program;
  } else {
    for (const auto& dir : split_path(host_path_var)) {
      std::string candidate = dir + "/" + program;
      if (access(candidate.c_str(), X_OK) == 0) {
        host_path = candidate;
        break;
      }
    }
  }
  if (host_path.empty()) return "check the name, and mount the directory that holds it with --mnt ro:DIR";
  // Suggest the prefix that holds .../bin/prog (a conda env, a venv, /opt/x),
  // as reached (a venv's bin/python is a link into /usr, but the venv is
  // what is missing).
  char real[PATH_MAX];
  std::string p = host_path;
  if (p[0] != '/' && realpath(host_path.c_str(), real)) p = real;
  std::string dir = p.substr(0, p.rfind('/'));
  if (dir.size() > 4 && dir.compare(dir.size() - 4, 4, "/bin") == 0) dir = dir.substr(0, dir.size() - 4);
  if (dir.empty()) dir = "/";
  return "on the host it is " + p + ", under " + dir + ": add --mnt ro:" + dir;
}

Error with_not_found_hint(Error e, const std::map<std::string, std::string>& host_env) {
  if (e.exit_code != kExitNotFound) return e;
  auto path = host_env.find("PATH");
  e.hint = not_found_hint(e.step, path == host_env.end() ? "" : path->second);
  return e;
}

}  // namespace ik
