"""Where sections register themselves, and the fixtures they share.

A section is one module of ikbench.sections that calls register() at import
time. load_sections() imports every module of that package; the order field
(not the file name) decides where a section appears in --only, in --help's
count options, in the targets table and in the report.
"""
from __future__ import annotations

import contextlib
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Count:
    """A count option of the section (group "counts" of --help). full and
    quick are the defaults of a full run and of --quick; a count with neither
    takes `default` in both. later: listed after every section's other
    counts (the counts of a section's side measurements)."""
    flag: str
    full: object = None
    quick: object = None
    type: Callable = int
    help: str | None = None
    default: object = None
    later: bool = False

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Step:
    """One measurement. Steps of all chosen sections run in order of stage.
    run(bench) stores its results in bench.results; with `uses`, it is
    run(bench, value) where value comes from the named fixture, entered once
    for each run of consecutive steps that use it."""
    stage: int
    run: Callable
    uses: str | None = None


@dataclass(frozen=True)
class Section:
    """name: as given to --only. render(res) -> markdown lines of its part of
    the report ([] when res has none of its results); targets(res) -> rows
    (target, measured, met) of the targets table; kernelspecs(env) ->
    {variant: argv} of extra kernelspecs (ikbench-VARIANT)."""
    name: str
    order: int
    steps: tuple[Step, ...]
    counts: tuple[Count, ...] = ()
    render: Callable[[dict], list] | None = None
    targets: Callable[[dict], list] | None = None
    kernelspecs: Callable | None = None


_SECTIONS: dict[str, Section] = {}
_FIXTURES: dict[str, Callable] = {}


def register(section: Section) -> Section:
    if section.name in _SECTIONS:
        raise ValueError(f"bench section {section.name!r} registered twice")
    taken = {s.order: s.name for s in _SECTIONS.values()}
    if section.order in taken:
        raise ValueError(f"bench sections {taken[section.order]!r} and {section.name!r} share order {section.order}")
    _SECTIONS[section.name] = section
    return section


def fixture(name: str):
    """Decorator: registers a context manager factory (bench) -> value that
    steps with uses=name share."""
    def deco(fn):
        _FIXTURES[name] = contextlib.contextmanager(fn)
        return fn
    return deco


def get_fixture(name: str):
    return _FIXTURES[name]


def load_sections() -> list[Section]:
    """Imports every module of ikbench.sections; the sections in order."""
    from . import sections
    for mod in sorted(m.name for m in pkgutil.iter_modules(sections.__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"{sections.__name__}.{mod}")
    return all_sections()


def all_sections() -> list[Section]:
    return sorted(_SECTIONS.values(), key=lambda s: s.order)
