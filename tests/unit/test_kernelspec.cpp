// kernelspec/'s pure parts: which directories a wrapped kernel needs
// (interpreter mount inference), checking the kernelspec to wrap, rewriting
// it into an isolated one, and reading the settings back as the launcher
// merges them (metadata, argv flags, MNTDIRS, {connection_file}); and the
// launcher's connection-file helpers (kernel/launch) on a made-up host.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "host/memory_fs.hpp"
#include "kernel/launch.hpp"
#include "kernelspec/install.hpp"
#include "kernelspec/interpreter_mounts.hpp"
#include "kernelspec/spec_read.hpp"
#include "parse/mount_list.hpp"

using nlohmann::json;
using Dirs = std::vector<std::string>;

namespace {

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

ik::InterpreterInfo interpreter(const std::string& executable, const std::string& prefix,
                                const std::string& base_prefix, const Dirs& paths) {
  ik::InterpreterInfo info;
  info.executable = executable;
  info.prefix = prefix;
  info.base_prefix = base_prefix;
  info.paths = paths;
  return info;
}

ik::KernelspecInfo installed(const json& spec, const std::string& error = {}) {
  ik::KernelspecInfo k;
  k.name = "python3";
  k.resource_dir = "/usr/share/jupyter/kernels/python3";
  k.spec = spec;
  k.error = error;
  return k;
}

const Dirs kIpykernel = {"/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"};

ik::WrappedKernel wrapped(const Dirs& argv = kIpykernel, const Dirs& detected = {}) {
  ik::WrappedKernel w;
  w.spec = {{"display_name", "Python 3 (ipykernel)"}, {"language", "python"}, {"argv", argv}};
  w.argv = argv;
  w.detected_mounts = detected;
  return w;
}

std::vector<std::string> mount_texts(const ik::Options& o) {
  std::vector<std::string> out;
  for (const auto& m : o.mounts) out.push_back(m.text);
  return out;
}

ik::Options with_mounts(const std::string& list) {
  ik::Options o;
  auto m = ik::parse_mount_list(list);
  REQUIRE(m.ok());
  o.mounts = *m;
  return o;
}

}  // namespace

TEST_CASE("interpreter mounts: system directories are in every sandbox already") {
  for (const char* p :
       {"/usr", "/usr/local/bin/python3", "/bin/sh", "/lib/python3/dist-packages", "/lib64", "/sbin", "/etc/jupyter"})
    CHECK_MESSAGE(ik::is_system_path(p), p);
  for (const char* p : {"/opt/conda", "/home/alice/venv", "/library", "/usrx", "/srv/etc", "/"})
    CHECK_MESSAGE(!ik::is_system_path(p), p);
}

TEST_CASE("interpreter mounts: a Python interpreter is recognised by its name") {
  for (const char* p : {"python", "python3", "/usr/bin/python3.11", "/opt/conda/bin/python3", "python3-dbg"})
    CHECK_MESSAGE(ik::looks_like_python(p), p);
  for (const char* p : {"/usr/bin/R", "/opt/julia/bin/julia", "/opt/python/bin/R", "ipython", "/usr/bin/ipython3"})
    CHECK_MESSAGE(!ik::looks_like_python(p), p);
}

TEST_CASE("interpreter mounts: what an interpreter needs beyond the system") {
  SUBCASE("Debian's python3: nothing") {
    auto info = interpreter("/usr/bin/python3.11", "/usr", "/usr",
                            {"/usr/lib/python311.zip", "/usr/lib/python3.11", "/usr/lib/python3/dist-packages"});
    CHECK(ik::needed_directories(info).empty());
  }
  SUBCASE("a venv on Debian's python: the venv only") {
    auto info = interpreter("/usr/bin/python3.11", "/home/alice/venv", "/usr",
                            {"/usr/lib/python3.11", "/home/alice/venv/lib/python3.11/site-packages"});
    CHECK(ik::needed_directories(info) == Dirs{"/home/alice/venv"});
  }
  SUBCASE("conda and the user site: the top-most directories, sorted, once each") {
    auto info = interpreter("/opt/conda/bin/python3.11", "/opt/conda", "/opt/conda",
                            {"/opt/conda/lib/python3.11", "/opt/conda/lib/python3.11/site-packages",
                             "/home/alice/.local/lib/python3.11/site-packages"});
    CHECK(ik::needed_directories(info) == Dirs{"/home/alice/.local/lib/python3.11/site-packages", "/opt/conda"});
  }
  SUBCASE("the executable's own directory, paths normalised, relative entries ignored") {
    auto info = interpreter("/srv/py/bin/python3", "/usr", "/usr", {"lib/relative", "/srv/tools/../extra//", ""});
    CHECK(ik::needed_directories(info) == Dirs{"/srv/extra", "/srv/py/bin"});
  }
  SUBCASE("a directory and one inside it: only the outer one") {
    auto info = interpreter("/usr/bin/python3", "/data/env", "/usr", {"/data/env/lib", "/data", "/datb"});
    CHECK(ik::needed_directories(info) == Dirs{"/data", "/datb"});
  }
  SUBCASE("a directory inside one whose name is a prefix of a sibling's: still only the outer one") {
    // Sorted, "/opt/conda-envs" comes between "/opt/conda" and
    // "/opt/conda/pkgs" ('-' < '/'): the inner one must not get a bind of its own.
    auto info = interpreter("/opt/conda/bin/python3", "/opt/conda", "/opt/conda",
                            {"/opt/conda-envs/x", "/opt/conda/pkgs", "/opt/conda.d/lib", "/opt/conda/lib"});
    CHECK(ik::needed_directories(info) == Dirs{"/opt/conda", "/opt/conda-envs/x", "/opt/conda.d/lib"});
  }
}

TEST_CASE("interpreter mounts: another program: the directory above its bin/") {
  CHECK(ik::program_directories("/opt/julia-1.9/bin/julia") == Dirs{"/opt/julia-1.9"});
  CHECK(ik::program_directories("/home/alice/.cargo/bin/evcxr_jupyter") == Dirs{"/home/alice/.cargo"});
  CHECK(ik::program_directories("/usr/bin/R").empty());
  CHECK(ik::program_directories("/usr/local/bin/julia").empty());
  CHECK(ik::program_directories("julia").empty());  // not found on PATH: nothing to mount
  CHECK(ik::program_directories("").empty());
}

TEST_CASE("install: the kernelspec to wrap is checked") {
  SUBCASE("a good one: its spec and argv as written") {
    auto w = ik::wrapped_kernel("python3", installed({{"argv", {"python3", "-m", "ipykernel_launcher"}}}));
    REQUIRE(w.ok());
    CHECK(w->argv == Dirs{"python3", "-m", "ipykernel_launcher"});
    CHECK(w->spec["argv"].size() == 3);
    CHECK(w->detected_mounts.empty());
  }
  SUBCASE("a broken kernel.json is named, with the fix") {
    auto w = ik::wrapped_kernel("mine", installed(json::object(), "/k/kernel.json:3:7: invalid JSON"));
    REQUIRE_FALSE(w.ok());
    CHECK(w.error().exit_code == ik::kExitUsage);
    CHECK(has(w.error().describe(), "kernelspec 'mine': /k/kernel.json:3:7: invalid JSON"));
    CHECK(has(w.error().describe(), "--from"));
  }
  SUBCASE("an isolated one is not wrapped twice") {
    auto w = ik::wrapped_kernel("python3-isolated",
                                installed({{"argv", {"/usr/bin/isolated-kernel-launcher", "--", "python3"}}}));
    REQUIRE_FALSE(w.ok());
    CHECK(has(w.error().describe(), "already isolated"));
  }
  SUBCASE("argv must be strings, and not empty") {
    CHECK(has(ik::wrapped_kernel("k", installed({{"argv", {"python3", 3}}})).error().describe(),
              "argv must be an array of strings"));
    CHECK(has(ik::wrapped_kernel("k", installed({{"argv", json::array()}})).error().describe(), "empty argv"));
    CHECK(has(ik::wrapped_kernel("k", installed({{"argv", "python3"}})).error().describe(), "empty argv"));
    CHECK(has(ik::wrapped_kernel("k", installed({{"display_name", "x"}})).error().describe(), "empty argv"));
  }
}

TEST_CASE("install: the isolated kernel.json") {
  ik::InstallRequest req;
  SUBCASE("argv: the launcher, its own kernelspec, then the wrapped argv unchanged") {
    json spec = ik::make_isolated_spec(req, wrapped(), "/usr/bin/isolated-kernel-launcher");
    Dirs argv = spec["argv"].get<Dirs>();
    Dirs expected = {"/usr/bin/isolated-kernel-launcher", "--kernelspec", "{resource_dir}", "--"};
    expected.insert(expected.end(), kIpykernel.begin(), kIpykernel.end());
    CHECK(argv == expected);
    CHECK(spec["interrupt_mode"] == "signal");
    CHECK(spec["language"] == "python");
    CHECK(spec["env"] == json::object());
    CHECK(ik::is_isolated_spec(spec));
  }
  SUBCASE("mounts: the working directory, the interpreter's (read-only), then the user's") {
    req.sandbox = with_mounts("ro:/srv/data rw:~/out");
    json spec = ik::make_isolated_spec(req, wrapped(kIpykernel, {"/opt/conda", "/home/alice/.local"}), "/l");
    CHECK(spec["metadata"]["isolated_kernel"]["mounts"] ==
          json::array({".", "ro:/opt/conda", "ro:/home/alice/.local", "ro:/srv/data", "rw:~/out"}));
    CHECK(spec["metadata"]["isolated_kernel_install"]["detected_mounts"] ==
          json::array({"/opt/conda", "/home/alice/.local"}));
    CHECK(spec["metadata"]["isolated_kernel_install"]["wraps"] == "python3");
  }
  SUBCASE("the wrapped kernel's env becomes --setenv; its other metadata stays") {
    ik::WrappedKernel w = wrapped();
    w.spec["env"] = {{"OMP_NUM_THREADS", "1"}, {"BAD", 3}};
    w.spec["metadata"] = {{"debugger", true}};
    json spec = ik::make_isolated_spec(req, w, "/l");
    CHECK(spec["metadata"]["isolated_kernel"]["setenv"] == json{{"OMP_NUM_THREADS", "1"}});
    CHECK(spec["metadata"]["debugger"] == true);
    CHECK(spec["env"] == json::object());  // the settings live in one place
  }
  SUBCASE("only what differs from the defaults is stored, and the network always") {
    json config = ik::make_isolated_spec(req, wrapped(), "/l")["metadata"]["isolated_kernel"];
    CHECK(config["network"] == "none");
    for (const char* key :
         {"root", "tmpfs_size", "hostname", "seccomp", "allow_userns", "setenv", "keep_env", "limits", "build_dir"})
      CHECK_MESSAGE(!config.contains(key), key);
    req.sandbox.limits.memory_bytes = 2ull << 30;
    req.sandbox.net = ik::NetMode::kShare;
    config = ik::make_isolated_spec(req, wrapped(), "/l")["metadata"]["isolated_kernel"];
    CHECK(config["limits"] == json{{"memory", 2ull << 30}});
    CHECK(config["network"] == "share");
  }
  SUBCASE("--python: what it wraps is the interpreter") {
    req.python = "/opt/py/bin/python3";
    CHECK(ik::make_isolated_spec(req, wrapped(), "/l")["metadata"]["isolated_kernel_install"]["wraps"] ==
          "/opt/py/bin/python3");
  }
}

TEST_CASE("install then launch: the launcher reads back what install wrote") {
  ik::InstallRequest req;
  req.sandbox = with_mounts("ro:/srv/data");
  req.sandbox.limits.nproc = 64;
  req.sandbox.limits.wall_seconds = 600;
  req.sandbox.setenv = {{"COURSE", "ml"}};
  ik::WrappedKernel w = wrapped(kIpykernel, {"/opt/conda"});
  w.spec["env"] = {{"OMP_NUM_THREADS", "1"}};
  json spec = ik::make_isolated_spec(req, w, "/usr/bin/isolated-kernel-launcher");
  auto s = ik::kernelspec_settings(spec, "{resource_dir}");
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().describe()));
  CHECK(mount_texts(s->opts) == Dirs{".", "ro:/opt/conda", "ro:/srv/data"});
  CHECK(*s->opts.limits.nproc == 64);
  CHECK(*s->opts.limits.wall_seconds == 600);
  CHECK_FALSE(s->opts.limits.memory_bytes);
  CHECK(s->opts.net == ik::NetMode::kNone);
  CHECK(s->opts.setenv == std::vector<std::pair<std::string, std::string>>{{"COURSE", "ml"}, {"OMP_NUM_THREADS", "1"}});
  CHECK(s->kernel_argv == kIpykernel);
  CHECK(ik::settings_summary(s->opts) == "network=none  mounts=[. ro:/opt/conda ro:/srv/data]  limits: "
                                         "wall_time=10m nproc=64");
}

TEST_CASE("kernelspec settings: how the sources merge") {
  const json kernel = json::array({"--", "python3", "-f", "{connection_file}"});
  auto spec_with = [&](json flags, json metadata) {
    json argv = json::array({"/usr/bin/isolated-kernel-launcher"});
    for (const auto& f : flags) argv.push_back(f);
    for (const auto& k : kernel) argv.push_back(k);
    json spec{{"argv", argv}, {"display_name", "x"}, {"language", "python"}};
    if (!metadata.is_null()) spec["metadata"] = {{"isolated_kernel", metadata}};
    return spec;
  };
  SUBCASE("--mnt in argv adds to the metadata's mounts; MNTDIRS is then ignored") {
    json spec = spec_with({"--kernelspec", "{resource_dir}", "--mnt", "ro:/b"}, {{"mounts", {".", "ro:/a"}}});
    spec["env"] = {{"MNTDIRS", "/never"}};
    auto s = ik::kernelspec_settings(spec, "/k/x");
    REQUIRE(s.ok());
    CHECK(mount_texts(s->opts) == Dirs{".", "ro:/a", "ro:/b"});
  }
  SUBCASE("MNTDIRS only when neither gives mounts") {
    json spec = spec_with({"--memory", "1G"}, nullptr);
    spec["env"] = {{"MNTDIRS", "ro:/data ."}};
    auto s = ik::kernelspec_settings(spec, "/k/x");
    REQUIRE(s.ok());
    CHECK(mount_texts(s->opts) == Dirs{"ro:/data", "."});
    spec["env"]["MNTDIRS"] = 5;  // not a string: as if unset
    CHECK(mount_texts(ik::kernelspec_settings(spec, "/k/x")->opts) == Dirs{"."});
  }
  SUBCASE("{connection_file} and {resource_dir} inside launcher flags") {
    json spec = spec_with({"--mnt", "{connection_file} ro:{resource_dir}/data"}, nullptr);
    auto s = ik::kernelspec_settings(spec, "/k/x", "/run/user/1000/jupyter/kernel-1.json");
    REQUIRE(s.ok());
    CHECK(mount_texts(s->opts) == Dirs{"/run/user/1000/jupyter/kernel-1.json", "ro:/k/x/data"});
  }
  SUBCASE("--kernelspec of another directory is read like any flag (and fails here: no such file)") {
    auto s = ik::kernelspec_settings(spec_with({"--kernelspec", "/elsewhere"}, {{"mounts", {"."}}}), "/k/x");
    REQUIRE_FALSE(s.ok());
    CHECK(has(s.error().describe(), "/elsewhere"));
  }
  SUBCASE("the launcher's own flags are accepted, not sandbox settings") {
    auto s = ik::kernelspec_settings(spec_with({"--max-message-size", "64M", "-f", "/x.json"}, nullptr), "/k/x");
    REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().describe()));
    CHECK(mount_texts(s->opts) == Dirs{"."});
  }
}

TEST_CASE("kernel launch: the connection file in the kernel argv") {
  CHECK(ik::find_connection_file({"python3", "-m", "ipykernel_launcher", "-f", "/r/k.json"}) == "/r/k.json");
  CHECK(ik::find_connection_file({"python3", "-f=/r/k.json"}) == "/r/k.json");
  CHECK(ik::find_connection_file({"julia", "--connection-file=/r/k.json"}) == "/r/k.json");
  CHECK(ik::find_connection_file({"x", "--connection-file", "/r/k.json"}) == "/r/k.json");
  CHECK(ik::find_connection_file({"x", "--existing", "/r/k.json"}) == "/r/k.json");
  CHECK(ik::find_connection_file({"x", "-f"}).empty());  // no value
  CHECK(ik::find_connection_file({"x", "--file", "/r/k.json"}).empty());
}

TEST_CASE("kernel launch: mounts of the connection file itself are dropped (isolate.sh kernelspecs)") {
  ik::MemoryFs fs = ik::MemoryFs::debian();
  fs.user("bob", "/home/bob");
  ik::Options o = with_mounts("/run/k.json . ~/k.json ~bob/k.json ro:/data");
  ik::drop_connection_file_mounts(o, "/run/k.json", "/work", "/home/alice", fs);
  CHECK(mount_texts(o) == Dirs{".", "~/k.json", "~bob/k.json", "ro:/data"});
  ik::Options rel = with_mounts("k.json ~/k.json ~bob/k.json ~nobody_here/k.json");
  ik::drop_connection_file_mounts(rel, "k.json", "/home/bob", "/home/bob", fs);
  CHECK(mount_texts(rel) == Dirs{"~nobody_here/k.json"});  // an unknown ~user is kept (the planner names it)
}

TEST_CASE("kernel launch: the kernel's private connection file and runtime directory") {
  SUBCASE("outside the working directory: its directory hidden by a tmpfs, the file written into it") {
    auto ops = ik::kernel_ops("/run/user/1000/jupyter/kernel-1.json", "{\"key\": \"k\"}", true, "/home/alice/nb");
    REQUIRE(ops.size() == 3);
    CHECK(ops[0].kind == ik::OpKind::kTmpfs);
    CHECK(ops[0].dest == "/run/user/1000/jupyter");
    CHECK(ops[0].mode == 0700);
    CHECK(ops[0].owned);
    CHECK(ops[1].dest == ik::kKernelRuntimeDir);
    CHECK(ops[2].kind == ik::OpKind::kFile);
    CHECK(ops[2].dest == "/run/user/1000/jupyter/kernel-1.json");
    CHECK(ops[2].content == "{\"key\": \"k\"}");
    CHECK(ops[2].mode == 0600);
    CHECK_FALSE(ops[2].readonly);  // ipykernel rewrites it
  }
  SUBCASE("in the working directory (or above it), no relay: only the file") {
    auto ops = ik::kernel_ops("/home/alice/nb/kernel-1.json", "{}", false, "/home/alice/nb/sub");
    REQUIRE(ops.size() == 1);
    CHECK(ops[0].kind == ik::OpKind::kFile);
  }
}
