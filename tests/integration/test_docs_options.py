"""Docs and programs in step (issue 14): every option of each program's --help
is in its man page and in docs/config.md, every option the docs give a
program is accepted by it.

--help is parsed from the built programs (IK_BUILD_DIR, default <repo>/build):
isolate, isolated-kernel-launcher, isolated-kernel and each of its
subcommands. A branch that adds an option must document it in both places;
this test is what says so. Needs no root (it only runs --help).
"""

from __future__ import annotations

import re
import shlex

import pytest

from test_package import (PROGRAMS, REPO, SUBCOMMANDS, built_programs, help_options, man_option_headers,  # noqa: F401
                          man_sections, program_help)

CONFIG_MD = REPO / "docs" / "config.md"
# The documents a user follows literally: README, docs/, man pages.
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "share" / "man").glob("*.1"))]
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)")
# config.md sections (## / ###) that document each program's options.
COMMON = ("Command-line syntax", "Sandbox options", "Limits")
CONFIG_SECTIONS = {
    "isolate": (*COMMON, "Terminal", "stdio"),
    "isolated-kernel-launcher": (*COMMON, "isolated-kernel-launcher"),
    "isolated-kernel": ("Command-line syntax", "isolated-kernel"),
    "isolated-kernel install": (*COMMON, "install"),
    "isolated-kernel list": ("Command-line syntax", "isolated-kernel"),
    "isolated-kernel show": ("Command-line syntax", "isolated-kernel"),
    "isolated-kernel remove": ("Command-line syntax", "isolated-kernel"),
    "isolated-kernel doctor": ("Command-line syntax", "isolated-kernel", "doctor"),
}


@pytest.fixture(scope="module")
def accepted(built_programs) -> dict[str, dict[str, str]]:
    """{'isolate': {'--mnt': 'LIST', ...}, 'isolated-kernel install': {...}, ...} from --help."""
    out = {p: help_options(program_help(built_programs, p)) for p in PROGRAMS}
    for sub in SUBCOMMANDS:
        out[f"isolated-kernel {sub}"] = help_options(program_help(built_programs, "isolated-kernel", sub))
    for name, opts in out.items():
        assert "--help" in opts, f"no options parsed from {name} --help: {opts}"
    return out


def md_sections(text: str) -> dict[str, str]:
    """'## Title' and '### Title' -> the text up to the next heading of the same or a higher level."""
    out = {}
    heads = list(re.finditer(r"^(#{2,3}) +(.+)$", text, re.M))
    for i, m in enumerate(heads):
        level = len(m.group(1))
        end = next((h.start() for h in heads[i + 1:] if len(h.group(1)) <= level), len(text))
        out[m.group(2).strip()] = text[m.end():end]
    return out


def code_spans(md: str) -> list[str]:
    """Inline `code` and the lines of ``` blocks."""
    spans = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", md, re.M | re.S):
        spans += block.splitlines()
    spans += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", md, flags=re.M | re.S))
    return spans


def man_text_lines(roff: str) -> list[str]:
    """The man page's lines as plain text (escapes and font requests removed)."""
    lines = []
    for line in roff.splitlines():
        line = re.sub(r"^\.(B|I|BR|RB|BI|IB|IR|RI)\s+", "", line)
        if line.startswith("."):
            continue
        line = line.replace(r"\-", "-").replace(r"\(aq", "'").replace(r"\&", "").replace(r"\(ti", "~")
        lines.append(re.sub(r"\\f[BIRP]", "", line))
    return lines


def documented_in(text: str, option: str) -> bool:
    return any(re.search(r"(?<![\w-])" + re.escape(option) + r"(?![\w-])", s) for s in code_spans(text))


# ------------------------------------------------------------ --help -> docs


@pytest.mark.parametrize("prog", list(CONFIG_SECTIONS))
def test_every_help_option_is_in_config_md(prog, accepted):
    sections = md_sections(CONFIG_MD.read_text())
    for title in CONFIG_SECTIONS[prog]:
        assert title in sections, f"docs/config.md has no section '{title}'"
    text = "\n".join(sections[t] for t in CONFIG_SECTIONS[prog])
    missing = sorted(o for o in accepted[prog] if not documented_in(text, o))
    assert not missing, (f"{prog} --help has options docs/config.md does not document "
                         f"(sections {', '.join(CONFIG_SECTIONS[prog])}): {missing}")


@pytest.mark.parametrize("prog", PROGRAMS)
def test_every_help_option_is_in_the_man_page(prog, accepted):
    roff = (REPO / "share" / "man" / f"{prog}.1").read_text()
    headers = " ".join(man_option_headers(man_sections(roff)["OPTIONS"])).replace("\\", "")
    names = {n for p, opts in accepted.items() if p == prog or p.startswith(prog + " ") for n in opts}
    missing = sorted(n for n in names if not re.search(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", headers))
    assert not missing, f"{prog} --help has options its man page's OPTIONS do not document: {missing}"


# ------------------------------------------------------------ docs -> programs


def table_options(section: str) -> set[str]:
    """Options in the first cell of the section's table rows."""
    out = set()
    for row in re.findall(r"^\|([^|\n]*)\|", section, re.M):
        if "`" in row:
            out.update(OPTION.findall(" ".join(re.findall(r"`([^`]*)`", row))))
    return out


@pytest.mark.parametrize("section,progs", [
    ("Sandbox options", ("isolate", "isolated-kernel-launcher", "isolated-kernel install")),
    ("Limits", ("isolate", "isolated-kernel-launcher", "isolated-kernel install")),
    ("isolated-kernel-launcher", ("isolated-kernel-launcher",)),
    ("install", ("isolated-kernel install",)),
])
def test_config_md_tables_name_accepted_options(section, progs, accepted):
    options = table_options(md_sections(CONFIG_MD.read_text())[section])
    assert options, f"no options found in the tables of '{section}'"
    for prog in progs:
        unknown = sorted(options - set(accepted[prog]))
        assert not unknown, f"docs/config.md '{section}' documents options that {prog} does not accept: {unknown}"


INVOCATION = re.compile(r"(?:^|(?<=[\s(`'\"|;&$]))(isolated-kernel-launcher|isolated-kernel|isolate)(?=\s)")


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """[(program, its words)] for each command line in LINE that starts one of ours."""
    out = []
    for m in INVOCATION.finditer(line):
        rest = line[m.end():]
        rest = re.split(r"\s#|\s[|;&]|\)|\s\\$", rest)[0]
        try:
            words = shlex.split(rest)
        except ValueError:
            words = rest.split()
        out.append((m.group(1), words))
    return out


def options_given(prog: str, words: list[str], accepted: dict) -> tuple[str, list[str]]:
    """(the program name with its subcommand, the option words given to it)."""
    if prog == "isolated-kernel" and words and words[0] in SUBCOMMANDS:
        prog, words = f"isolated-kernel {words[0]}", words[1:]
    opts = accepted[prog]
    given = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "--" or not w.startswith("-") or w == "-":
            break
        name = w.split("=", 1)[0]
        if not name.startswith("--") and len(name) > 2:
            name = name[:2]  # -mLIST
        given.append(name)
        if opts.get(name) and "=" not in w and len(w) <= 2 or (name.startswith("--") and opts.get(name) and "=" not in w):
            i += 1  # its value
        i += 1
    return prog, given


def doc_command_lines(path) -> list[str]:
    text = path.read_text()
    return man_text_lines(text) if path.suffix == ".1" else code_spans(text)


def test_documented_command_lines_use_accepted_options(accepted):
    problems, checked = [], 0
    for path in DOC_FILES:
        for line in doc_command_lines(path):
            for prog, words in invocations(line):
                # Placeholders and prose: "isolate [OPTIONS]", "isolated-kernel SUBCOMMAND".
                if words and (words[0].startswith("[") or words[0].isupper()):
                    continue
                name, given = options_given(prog, words, accepted)
                if prog == "isolated-kernel" and name == prog and words and not words[0].startswith("-"):
                    continue  # "isolated-kernel install | list ..." in prose
                for opt in given:
                    checked += 1
                    if opt not in accepted[name]:
                        problems.append(f"{path.relative_to(REPO)}: {name} does not accept {opt}: {line.strip()}")
    assert not problems, "\n".join(problems)
    assert checked >= 30, f"only {checked} options found in the docs' command lines: the parser missed them"


def test_the_checker_catches_an_unknown_option(accepted):
    """The test above can fail: a made-up option in a command line is found."""
    found = [options_given(p, w, accepted) for p, w in invocations("isolate --frobnicate -m . -- python3 x.py")]
    assert found == [("isolate", ["--frobnicate", "-m"])]
    assert "--frobnicate" not in accepted["isolate"]
    found = [options_given(p, w, accepted) for p, w in invocations("`isolated-kernel install --user --mnt ro:/x`")]
    assert found == [("isolated-kernel install", ["--user", "--mnt"])]
