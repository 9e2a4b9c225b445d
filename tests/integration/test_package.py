"""The Debian package, the man pages and the bash completion.

test_deb_package (root only; skipped otherwise) builds the .deb from the
current source with cpack, installs it on this machine with dpkg, runs the
installed programs (`isolated-kernel doctor`, `isolated-kernel install
--prefix` + `doctor`, `man -w`), then purges it and checks that nothing of
it is left, and that a /usr/local install of the same programs (scripts/demo,
`cmake --install`) was not touched.

The build directory is kept between runs, so only what changed is rebuilt
(a fresh Release build of the three programs takes a few minutes on two
cores); it is configured for /usr and without the unit tests, so cpack
builds only the three programs and the man pages.

The other tests need no root: the man pages render without groff warnings and
document exactly the options of --help; the completion scripts offer exactly
those options and complete mount lists, commands and kernelspec names.

Environment:
  IK_DEB_BUILD_DIR  build directory for the package (default: <repo>/build-deb)
  IK_BUILD_DIR      the programs whose --help the man pages are checked
                    against (default: <repo>/build)
"""

from __future__ import annotations

import fcntl
import fnmatch
import glob
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("isolate", "isolated-kernel-launcher", "isolated-kernel")
SUBCOMMANDS = ("install", "list", "show", "remove", "doctor", "run", "pool")
PACKAGE = "isolated-kernel"
# The deb's programs must be the ones found: no /usr/local in PATH.
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TIMEOUT = 3600


def project_version() -> str:
    m = re.search(r"project\(\s*isolated-kernel\s+VERSION\s+([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    assert m, "project(isolated-kernel VERSION x.y.z) not found in CMakeLists.txt"
    return m.group(1)


def run(cmd, *, timeout=120, check=False, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"$ {' '.join(map(str, cmd))}\n-> exit {p.returncode}\n{p.stdout}"
    return p


def clean_env(**extra) -> dict:
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "TERM": "dumb", "HOME": os.environ.get("HOME", "/root")}
    for k in ("USER", "LOGNAME", "SHELL"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update(extra)
    return env


# ------------------------------------------------------------ help parsing


HELP_OPTION = re.compile(r"^  (-[^\s]+?)(?: ([A-Z][A-Z0-9_=]*))?(?: \.\.\.)?(?:\s{2,}|$)")


def help_options(text: str) -> dict[str, str]:
    """{'--mnt': 'LIST', '-m': 'LIST', '--root': '', ...} from CLI11 --help output."""
    out = {}
    for line in text.splitlines():
        m = HELP_OPTION.match(line)
        if not m:
            continue
        for name in m.group(1).split(","):
            out[name] = m.group(2) or ""
    return out


def roff(name: str) -> str:
    return name.replace("-", r"\-")


def man_sections(text: str) -> dict[str, str]:
    """.SH NAME -> its text (up to the next .SH)."""
    parts = re.split(r"^\.SH +(.+)$", text, flags=re.M)
    return {parts[i].strip('"'): parts[i + 1] for i in range(1, len(parts), 2)}


def man_option_headers(section: str) -> list[str]:
    """The header lines of the .TP paragraphs that document options."""
    lines = section.splitlines()
    return [lines[i + 1] for i, line in enumerate(lines[:-1])
            if line.startswith(".TP") and lines[i + 1].startswith((r".B \-", r".BR \-", r".BI \-"))]


@pytest.fixture(scope="module")
def built_programs() -> Path:
    d = Path(os.environ.get("IK_BUILD_DIR", REPO / "build"))
    if not all((d / p).is_file() and os.access(d / p, os.X_OK) for p in PROGRAMS):
        pytest.skip(f"the programs are not built in {d} (set IK_BUILD_DIR)")
    return d


def program_help(bindir: Path, *args: str) -> str:
    p = run([bindir / args[0], *args[1:], "--help"], env=clean_env())
    assert p.returncode == 0, p.stdout
    return p.stdout


# ------------------------------------------------------------ man pages


@pytest.mark.parametrize("prog", PROGRAMS)
def test_man_page_renders_without_warnings(prog):
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    page = REPO / "share" / "man" / f"{prog}.1"
    text = page.read_text()
    th = re.search(r'^\.TH +(\S+) +1 +\S+ +"isolated-kernel ([0-9.]+)"', text, re.M)
    assert th, f"{page}: no .TH line"
    assert th.group(1) == prog.upper()
    assert th.group(2) == project_version(), f"{page}: .TH says version {th.group(2)}"
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "MOUNT LIST", "EXIT STATUS", "ENVIRONMENT",
                    "FILES", "EXAMPLES", "SEE ALSO"):
        assert section in man_sections(text), f"{page}: no {section} section"
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(page)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    plain = re.sub(".\b", "", p.stdout)  # no overstriking
    assert prog in plain and "EXIT STATUS" in plain and "MOUNT LIST" in plain


@pytest.mark.parametrize("prog", PROGRAMS)
def test_man_page_documents_every_option_of_help(prog, built_programs):
    helps = [program_help(built_programs, prog)]
    if prog == "isolated-kernel":
        helps += [program_help(built_programs, prog, sub) for sub in SUBCOMMANDS]
    options = {}
    for h in helps:
        options.update(help_options(h))
    assert "--help" in options and "--version" in options

    text = (REPO / "share" / "man" / f"{prog}.1").read_text()
    headers = man_option_headers(man_sections(text)["OPTIONS"])
    documented = set()
    for header in headers:
        documented.update(n.replace("\\", "") for n in re.findall(r"\\-(?:\\-[A-Za-z0-9\\-]+|[A-Za-z])\b", header))
    assert documented == set(options), (
        f"{prog}.1 OPTIONS vs --help: only in the man page {sorted(documented - set(options))}, "
        f"only in --help {sorted(set(options) - documented)}")
    for name, metavar in options.items():
        if not metavar:
            continue
        header = next(h for h in headers if re.search(re.escape(roff(name)) + r"(?![A-Za-z\\])", h))
        assert metavar in header, f"{prog}.1: {name} should show {metavar}: {header}"


# ------------------------------------------------------------ bash completion


def comp_words(line: str) -> list[str]:
    """COMP_WORDS as bash splits LINE (no quotes): ':' and '=' are words of their own."""
    words = []
    for w in line.split():
        words += [p for p in re.split(r"([:=]+)", w) if p != ""]
    if line.endswith(" ") or not words:
        words.append("")
    return words


def complete(prog: str, line: str, env: dict | None = None, *, bash_completion: bool = False) -> list[str]:
    """COMPREPLY of the completion function of PROG for LINE (cursor at its end)."""
    script = REPO / "share" / "completions" / prog
    fn = "_" + prog.replace("-", "_")
    pre = ""
    if bash_completion:
        pre = "source /usr/share/bash-completion/bash_completion; "
    code = (pre + 'source "$1"; fn=$2; COMP_LINE=$3; COMP_POINT=${#COMP_LINE}; shift 3; '
            'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); "$fn" 2>/dev/null; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c", code, "_", str(script), fn, line, *comp_words(line)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30,
                       env=env or clean_env())
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.splitlines() if w]


def long_options(words: list[str]) -> set[str]:
    return {w for w in words if w.startswith("-") and w != "--"}


@pytest.mark.parametrize("prog", PROGRAMS)
def test_completion_offers_the_options_of_help(prog, built_programs):
    cases = [((prog,), f"{prog} -")]
    if prog == "isolated-kernel":
        cases = [((prog,), f"{prog} -")] + [((prog, sub), f"{prog} {sub} -") for sub in SUBCOMMANDS]
    for args, line in cases:
        want = set(help_options(program_help(built_programs, *args)))
        got = long_options(complete(prog, line))
        assert got == want, f"{line!r}: only completed {sorted(got - want)}, only in --help {sorted(want - got)}"


@pytest.fixture(scope="module")
def comp_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("comp")
    for sub in ("data/course", "data/cache", "opt"):
        (d / sub).mkdir(parents=True)
    (d / "notes.txt").write_text("x")
    kernels = d / "jupyter" / "kernels"
    for name, argv0 in (("Course-Iso", "/usr/bin/isolated-kernel-launcher"), ("plain-k", "/usr/bin/python3")):
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(json.dumps({"argv": [argv0, "-f", "{connection_file}"],
                                                                "display_name": name, "language": "python"}))
    return d


@pytest.mark.parametrize("bash_completion", [False, True], ids=["plain-bash", "bash-completion"])
def test_completion_isolate(comp_dir, bash_completion):
    if bash_completion and not Path("/usr/share/bash-completion/bash_completion").is_file():
        pytest.skip("the bash-completion package is not installed")
    d = comp_dir

    def c(line):
        return complete("isolate", line, bash_completion=bash_completion)

    assert c("isolate --sha") == ["--share-net"]
    assert c("isolate --mn") == ["--mnt"]
    # -m completes directories, after flags, in DEST=SRC, after --mnt=.
    assert c(f"isolate -m {d}/da") == [f"{d}/data/"]
    assert sorted(c(f"isolate -m {d}/data/c")) == [f"{d}/data/cache/", f"{d}/data/course/"]
    # Readline replaces only the text after the last ':' or '='.
    assert c(f"isolate -m ro:{d}/o") == [f"{d}/opt/"]
    assert c(f"isolate -m ro,rbind:{d}/o") == [f"{d}/opt/"]
    assert c(f"isolate --mnt=ro:{d}/o") == [f"{d}/opt/"]
    assert c(f"isolate -m /srv={d}/o") == [f"{d}/opt/"]
    assert c("isolate -m /srv=no") == ["none"]
    assert {"ro:", "rw:", "rbind:"} <= set(c("isolate -m r"))
    assert f"{d}/notes.txt" not in c(f"isolate -m {d}/")
    assert c("isolate --seccomp ") == ["default", "off"]
    assert c(f"isolate -b {d}/o") == [f"{d}/opt"]
    assert c("isolate --keep-env HOM") == ["HOME"]
    # After the options: the command, then its arguments.
    assert "python3" in c("isolate -v -m . pytho")
    assert "python3" in c("isolate -- pytho")
    assert f"{d}/notes.txt" in c(f"isolate -m . -- cat {d}/no")
    assert "--share-net" not in c("isolate -- ls --sha")


def test_completion_launcher(comp_dir):
    d = comp_dir
    c = lambda line: complete("isolated-kernel-launcher", line)  # noqa: E731
    assert c("isolated-kernel-launcher --conn") == ["--connection-file"]
    assert {"--", "--mnt", "-f", "--kernelspec"} <= set(c("isolated-kernel-launcher "))
    assert c(f"isolated-kernel-launcher --kernelspec {d}/o") == [f"{d}/opt"]
    assert c(f"isolated-kernel-launcher -m ro:{d}/o") == [f"{d}/opt/"]
    assert "python3" in c("isolated-kernel-launcher -m . -- pytho")


def test_completion_isolated_kernel(comp_dir):
    d = comp_dir
    env = clean_env(JUPYTER_PATH=str(d / "jupyter"), HOME=str(d))
    c = lambda line: complete("isolated-kernel", line, env)  # noqa: E731
    assert c("isolated-kernel ") == list(SUBCOMMANDS)
    assert c("isolated-kernel sh") == ["show"]
    assert c("isolated-kernel --v") == ["--version"]
    # show/remove: the isolated kernelspecs (names as Jupyter lowercases them).
    assert "course-iso" in c("isolated-kernel show ")
    assert "plain-k" not in c("isolated-kernel remove ")
    assert c("isolated-kernel show cou") == ["course-iso"]
    assert c("isolated-kernel show course-iso ") == []
    # install --from: the kernelspecs that are not isolated.
    assert "plain-k" in c("isolated-kernel install --from ")
    assert "course-iso" not in c("isolated-kernel install --from ")
    assert c("isolated-kernel install --from=pl") == ["plain-k"]
    assert c(f"isolated-kernel install -m ro:{d}/o") == [f"{d}/opt/"]
    assert c(f"isolated-kernel install --prefix {d}/o") == [f"{d}/opt"]
    assert c("isolated-kernel doctor --no") == ["--no-kernels"]


# ------------------------------------------------------------ the .deb


def dpkg_status(package: str) -> str:
    p = run(["dpkg-query", "-W", "-f=${Status}", package])
    return p.stdout.strip() if p.returncode == 0 else ""


def dpkg_excludes(path: str) -> bool:
    """Whether dpkg is configured not to install PATH (path-exclude, e.g. minimized images)."""
    rules = []
    for cfg in [Path("/etc/dpkg/dpkg.cfg"), *sorted(Path("/etc/dpkg/dpkg.cfg.d").glob("*"))]:
        try:
            lines = cfg.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] in ("path-exclude", "path-include"):
                rules.append((parts[0], parts[1].strip()))
    excluded = False
    for kind, pattern in rules:
        if fnmatch.fnmatch(path, pattern):
            excluded = kind == "path-exclude"
    return excluded


def file_digests(paths) -> dict[str, str]:
    out = {}
    for p in paths:
        if os.path.isfile(p):
            out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def build_deb(build_dir: Path) -> Path:
    """Configures, builds and packages the current source; returns the .deb."""
    build_dir.mkdir(parents=True, exist_ok=True)
    jobs = str(os.cpu_count() or 2)
    with open(build_dir / ".test-package.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one cpack at a time in this directory
        # An existing build directory (scripts/test passes its own) keeps
        # its build type, so the package costs no second full build.
        fresh = [] if (build_dir / "CMakeCache.txt").exists() else ["-DCMAKE_BUILD_TYPE=Release", "-DIK_BUILD_TESTS=OFF"]
        run(["cmake", "-S", REPO, "-B", build_dir, *fresh, "-DCMAKE_INSTALL_PREFIX=/usr"], check=True, timeout=600)
        run(["cmake", "--build", build_dir, "-j", jobs, "--target", *PROGRAMS], check=True, timeout=BUILD_TIMEOUT)
        for old in glob.glob(str(build_dir / f"{PACKAGE}_*.deb")):
            os.unlink(old)
        run(["cpack", "-G", "DEB"], cwd=build_dir, check=True, timeout=BUILD_TIMEOUT)
        debs = glob.glob(str(build_dir / f"{PACKAGE}_*.deb"))
        assert len(debs) == 1, f"cpack made {debs}"
        return Path(debs[0])


def test_deb_package(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("installs a Debian package: needs root")
    for tool in ("cmake", "cpack", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if "installed" in dpkg_status(PACKAGE).split():
        pytest.skip(f"the {PACKAGE} package is already installed here; this test would remove it")
    version = project_version()
    usr_local = [f"/usr/local/bin/{p}" for p in PROGRAMS] + [
        "/usr/local/share/isolated-kernel/kernelspecs/python3-isolated/kernel.json",
        "/usr/local/share/jupyter/kernels/python3-isolated/kernel.json"]
    before = file_digests(usr_local)

    deb = build_deb(Path(os.environ.get("IK_DEB_BUILD_DIR", REPO / "build-deb")))
    assert deb.name == f"{PACKAGE}_{version}_{run(['dpkg', '--print-architecture']).stdout.strip()}.deb"

    # The control file and the contents.
    fields = run(["dpkg-deb", "-f", deb], check=True).stdout
    assert f"Package: {PACKAGE}\n" in fields and f"Version: {version}\n" in fields
    assert "Section: utils\n" in fields
    assert "Maintainer: isolated-kernel developers <dev@isolated-kernel.invalid>\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    for lib in ("libc6 (>= 2.36)", "libstdc++6", "libseccomp2"):
        assert lib in depends
    # The relay forwards bytes: the programs do not link libzmq.
    assert "libzmq" not in depends
    recommends = re.search(r"^Recommends: (.*)$", fields, re.M).group(1)
    for pkg in ("python3-ipykernel", "python3-jupyter-client", "jupyter-nbconvert"):
        assert pkg in recommends
    listing = run(["dpkg-deb", "-c", deb], check=True).stdout
    files = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    template = "/usr/share/isolated-kernel/kernelspecs/python3-isolated"
    expected = {f"/usr/bin/{p}" for p in PROGRAMS} | {f"/usr/share/man/man1/{p}.1.gz" for p in PROGRAMS} | {
        f"/usr/share/bash-completion/completions/{p}" for p in PROGRAMS} | {
        f"{template}/{f}" for f in ("kernel.json", "logo-32x32.png", "logo-64x64.png", "logo-svg.svg")} | {
        f"/usr/share/doc/{PACKAGE}/{f}" for f in ("README.md", "config.md", "nbgrader.md", "security.md")} | {
        "/usr/lib/systemd/user/isolated-kernel-pool.service"}  # the optional pool unit (docs/pool.md)
    assert expected <= files, f"missing from the .deb: {sorted(expected - files)}"
    assert not [f for f in files if f.startswith("/usr/local")], "the .deb installs into /usr/local"

    home = tmp_path / "home"
    home.mkdir()
    prefix = tmp_path / "prefix"
    env = clean_env(HOME=str(home))
    try:
        p = run(["dpkg", "-i", deb], timeout=300, env=dict(env, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode != 0 and shutil.which("apt-get"):  # missing dependencies: let apt fetch them
            p = run(["apt-get", "install", "-y", "-f", "--no-install-recommends"], timeout=900,
                    env=dict(env, DEBIAN_FRONTEND="noninteractive"))
        assert "install ok installed" == dpkg_status(PACKAGE), p.stdout

        for prog in PROGRAMS:
            r = run([f"/usr/bin/{prog}", "--version"], env=env, check=True)
            assert version in r.stdout
            # --help points to installed documents (issue 14: it named docs/ of the source tree).
            docs = re.findall(r"(/usr/share/doc/\S+?\.md)", run([f"/usr/bin/{prog}", "--help"], env=env).stdout)
            assert docs, f"{prog} --help names no installed document"
            for d in docs:
                assert os.path.isfile(d), f"{prog} --help points to {d}, which the package does not install"

        # The host checks, with the installed programs.
        r = run(["/usr/bin/isolated-kernel", "doctor", "--no-kernels"], env=env, timeout=120)
        assert r.returncode == 0, r.stdout
        assert re.search(r"^PASS +user namespaces", r.stdout, re.M), r.stdout
        assert "FAIL" not in r.stdout, r.stdout

        # A kernelspec made by the installed isolated-kernel uses the installed
        # launcher and the installed template's logos, and starts.
        r = run(["/usr/bin/isolated-kernel", "install", "--prefix", prefix, "--name", "deb-check"], env=env,
                timeout=300)
        assert r.returncode == 0, r.stdout
        spec_dir = prefix / "share" / "jupyter" / "kernels" / "deb-check"
        spec = json.loads((spec_dir / "kernel.json").read_text())
        assert spec["argv"][0] == "/usr/bin/isolated-kernel-launcher", spec["argv"]
        assert (spec_dir / "logo-64x64.png").read_bytes() == Path(f"{template}/logo-64x64.png").read_bytes()

        jenv = dict(env, JUPYTER_PATH=str(prefix / "share" / "jupyter"))
        r = run(["/usr/bin/isolated-kernel", "list"], env=jenv, check=True)
        assert "deb-check" in r.stdout and str(spec_dir) in r.stdout, r.stdout
        r = run(["/usr/bin/isolated-kernel", "doctor"], env=jenv, timeout=600)
        assert re.search(r"^PASS +kernel deb-check ", r.stdout, re.M), r.stdout
        failed = re.findall(r"^FAIL +(.*)$", r.stdout, re.M)
        # Other isolated kernelspecs on this machine (e.g. a /usr/local one
        # from scripts/demo) are not this package's business.
        assert all(f.startswith("kernel ") and not f.startswith("kernel deb-check ") for f in failed), r.stdout
        if not failed:
            assert r.returncode == 0, r.stdout

        # The man pages, where man finds them.
        if dpkg_excludes("/usr/share/man/man1/isolate.1.gz"):
            pass  # a minimized image: dpkg drops man pages on purpose
        else:
            for prog in PROGRAMS:
                page = Path(f"/usr/share/man/man1/{prog}.1.gz")
                head = gzip.decompress(page.read_bytes()).decode()
                assert f".TH {prog.upper()} 1 " in head
            if shutil.which("man"):
                r = run(["man", "-aw", "isolate"], env=env)
                assert "/usr/share/man/man1/isolate.1.gz" in r.stdout.split(), r.stdout
                r = run(["man", "-w", "isolated-kernel-launcher"], env=env)
                assert r.stdout.strip().endswith("/man1/isolated-kernel-launcher.1.gz"), r.stdout

        # The completion, as bash-completion loads it on demand.
        if Path("/usr/share/bash-completion/bash_completion").is_file():
            r = run(["bash", "--norc", "--noprofile", "-c",
                     "source /usr/share/bash-completion/bash_completion; "
                     "for p in isolate isolated-kernel-launcher isolated-kernel; do "
                     "_completion_loader $p; complete -p $p; done"], env=env)
            for prog in PROGRAMS:
                assert f"complete -F _{prog.replace('-', '_')} {prog}" in r.stdout, r.stdout
    finally:
        purge = run(["dpkg", "-P", PACKAGE], timeout=300)

    assert purge.returncode == 0, purge.stdout
    assert dpkg_status(PACKAGE) in ("", "unknown ok not-installed")
    for path in expected:
        assert not os.path.lexists(path), f"{path} is left after dpkg -P"
    assert not os.path.exists("/usr/share/isolated-kernel")
    assert file_digests(usr_local) == before, "the /usr/local install changed"
