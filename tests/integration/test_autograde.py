"""The nbgrader autograde execution path with an isolated kernel.

A course-like tree (source/ with the solutions, gradebook.db, several
students' submissions) is graded the way `nbgrader autograde` does it: each
submitted notebook goes through nbconvert's ExecutePreprocessor with the
isolated kernel and the working directory at the submission folder. The
students' notebooks try to reach each other's work, the solutions, the
gradebook and HOME; each must see its own folder only, be able to write
there, have its outputs captured, and a cell that raises must be recorded as
an error output as with a plain kernel.

Runs as root and as the test user. The grading client runs in a separate
process started as that user (this file doubles as the client script):
    /usr/bin/python3 test_autograde.py --grade ARGS_JSON RESULT_FILE
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import traceback
from pathlib import Path

STUDENTS = ("alice", "bob", "carol")
KERNEL = "grader-isolated"


# --------------------------------------------------------------- client side


def grade(course: str, kernel: str, plain_kernel: str, students: list[str]) -> dict:
    import nbformat
    from nbconvert.preprocessors import ExecutePreprocessor

    out: dict = {}
    for student in students:
        sub = Path(course) / "submitted" / student / "ps1"
        res: dict = {}
        try:
            nb = nbformat.read(sub / "ps1.ipynb", as_version=4)
            ep = ExecutePreprocessor(kernel_name=kernel, timeout=60, allow_errors=True)
            t0 = time.monotonic()
            ep.preprocess(nb, {"metadata": {"path": str(sub)}})
            res["seconds"] = time.monotonic() - t0
            res["cells"] = [c for c in nb.cells if c.cell_type == "code"]
            dest = Path(course) / "autograded" / student / "ps1"
            dest.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest / "ps1.ipynb")
        except Exception:
            res["exception"] = traceback.format_exc()
        out[student] = res
    # The same notebook with the plain kernel, for comparison.
    sub = Path(course) / "submitted" / students[0] / "ps1"
    try:
        nb = nbformat.read(sub / "ps1.ipynb", as_version=4)
        nb.cells = [c for c in nb.cells if "PROBES" not in c.source]  # an unsandboxed kernel: no probes
        ExecutePreprocessor(kernel_name=plain_kernel, timeout=60, allow_errors=True).preprocess(
            nb, {"metadata": {"path": str(sub)}})
        out["_plain"] = {"cells": [c for c in nb.cells if c.cell_type == "code"]}
    except Exception:
        out["_plain"] = {"exception": traceback.format_exc()}
    return out


def client_main(argv: list[str]) -> None:
    args, result = json.loads(argv[0]), Path(argv[1])
    try:
        data = grade(**args)
    except Exception:
        data = {"_error": traceback.format_exc()}
    result.write_text(json.dumps(data, default=str))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--grade":
    client_main(sys.argv[2:])


# --------------------------------------------------------------- the course

import pytest  # noqa: E402,F401  (the client above needs neither pytest nor the kits)

from kit.common import PYTHON  # noqa: E402


def nb_json(cells: list[tuple[str, str]]) -> str:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3 (isolated)", "language": "python"}
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src))
    return nbformat.writes(nb)


PROBE = r'''
import json, os, sqlite3
me, course, secret = {me!r}, {course!r}, {secret!r}
probes = {{"cwd_path": os.getcwd()}}

def probe(label, path):
    try:
        if os.path.isdir(path):
            probes[label] = ["dir", sorted(os.listdir(path))]
        else:
            with open(path, "rb") as f:
                probes[label] = ["file", f.read(300).decode("latin-1")]
    except OSError as e:
        probes[label] = ["error", type(e).__name__]

probe("cwd", ".")
probe("own_notes", "notes.txt")
probe("parent", "..")
probe("submitted", "../..")
probe("course", "../../..")
for other in {students!r}:
    if other != me:
        probe("rel:" + other, "../../%s/ps1/ps1.ipynb" % other)
        probe("abs:" + other, "%s/submitted/%s/ps1/notes.txt" % (course, other))
        probe("absdir:" + other, "%s/submitted/%s" % (course, other))
        probe("graded:" + other, "%s/autograded/%s/ps1/ps1.ipynb" % (course, other))
probe("rel:gradebook", "../../../gradebook.db")
probe("abs:gradebook", course + "/gradebook.db")
probe("rel:source", "../../../source/ps1/ps1.ipynb")
probe("abs:source", course + "/source/ps1/ps1.ipynb")
probe("home", os.path.expanduser("~"))
probe("host_secret", secret)
try:
    con = sqlite3.connect("file:%s/gradebook.db?mode=ro" % course, uri=True)
    probes["sqlite"] = repr(con.execute("select * from grades").fetchall())
except Exception as e:
    probes["sqlite"] = type(e).__name__
with open("written-by-kernel.txt", "w") as f:
    f.write("graded " + me)
for target in ["../../%s/ps1/evil.txt" % o for o in {students!r} if o != me] + [course + "/evil.txt"]:
    try:
        open(target, "w").write("x")
        probes["wrote:" + target] = True
    except OSError:
        pass
print("PROBES " + json.dumps(probes))
'''

SOURCE = '''
def add(a, b):
    """Return the sum of a and b."""
    ### BEGIN SOLUTION
    return a + b  # SOLUTION-SECRET-{token}
    ### END SOLUTION
'''




def make_course(jup) -> tuple[Path, Path]:
    course = jup.mkdir(jup.base / "course")
    token = jup.token
    jup.write(course / "source" / "ps1" / "ps1.ipynb", nb_json([("code", SOURCE.format(token=token))]))
    jup.write(course / "source" / "ps1" / "solutions.txt", f"SOLUTION-SECRET-{token}\n")
    db = course / "gradebook.db"
    con = sqlite3.connect(db)
    con.execute("create table grades (student text, score real, note text)")
    con.executemany("insert into grades values (?, ?, ?)",
                    [(s, 0.0, f"GRADEBOOK-{token}") for s in STUDENTS])
    con.commit()
    con.close()
    db.chmod(0o644)
    jup.chown(db)
    # A secret in the grader's real HOME.
    secret = jup.home / f".ik-autograde-{token}"
    jup.write(secret, f"HOME-SECRET-{token}\n", 0o600)
    for s in STUDENTS:
        sub = course / "submitted" / s / "ps1"
        jup.write(sub / "notes.txt", f"NOTES-OF-{s}-{token}\n")
        cells = [
            ("markdown", f"# Problem set 1 ({s})"),
            ("code", f'def add(a, b):\n    return a + b\nprint("answer", add(2, 3), "by {s}")'),
            ("code", PROBE.format(me=s, course=str(course), secret=str(secret), students=list(STUDENTS))),
            ("code", f'raise ValueError("wrong answer from {s}")'),
            ("code", f'print("still running", "{s}")'),
        ]
        jup.write(sub / "ps1.ipynb", nb_json(cells))
    jup.chown_tree(course)
    return course, secret


def stream_text(cell: dict) -> str:
    return "".join(o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream")


def errors(cell: dict) -> list[dict]:
    return [o for o in cell["outputs"] if o["output_type"] == "error"]


def test_autograde_each_submission_sees_only_itself(jup, tools):
    r = jup.ik("install", "--user", "--name", KERNEL, "--no-check")
    assert r.returncode == 0, str(r)
    course, secret = make_course(jup)
    result = jup.base / "private" / "grades.json"
    jup.mkdir(result.parent, 0o700)
    args = {"course": str(course), "kernel": KERNEL, "plain_kernel": "python3", "students": list(STUDENTS)}
    try:
        run = jup.run([PYTHON, tools.scripts / "test_autograde.py", "--grade", json.dumps(args), result],
                      cwd=course, timeout=240)
    finally:
        secret.unlink()
    assert result.exists(), f"the grading client wrote nothing\n{run}"
    data = json.loads(result.read_text())
    assert "_error" not in data, data["_error"]
    token = jup.token

    for s in STUDENTS:
        res = data[s]
        assert "exception" not in res, f"{s}: ExecutePreprocessor raised\n{res['exception']}\n{run}"
        answer, probe_cell, raising, after = res["cells"]
        sub = course / "submitted" / s / "ps1"

        # Outputs are captured, the error is recorded and execution goes on.
        assert stream_text(answer).strip() == f"answer 5 by {s}", answer
        assert not errors(probe_cell), f"{s}: probe cell raised: {errors(probe_cell)}"
        errs = errors(raising)
        assert len(errs) == 1 and errs[0]["ename"] == "ValueError", raising
        assert errs[0]["evalue"] == f"wrong answer from {s}" and errs[0]["traceback"], raising
        assert stream_text(after).strip() == f"still running {s}", after
        assert [c["execution_count"] for c in res["cells"]] == [1, 2, 3, 4], res["cells"]

        line = next(l for l in stream_text(probe_cell).splitlines() if l.startswith("PROBES "))
        p = json.loads(line[len("PROBES "):])
        ctx = f"{s} saw: {json.dumps(p, indent=1)}"
        # Its own folder, as the working directory, readable and writable.
        assert p["cwd_path"] == str(sub), ctx
        assert p["cwd"][0] == "dir" and {"ps1.ipynb", "notes.txt"} <= set(p["cwd"][1]), ctx
        assert p["own_notes"] == ["file", f"NOTES-OF-{s}-{token}\n"], ctx
        assert (sub / "written-by-kernel.txt").read_text() == f"graded {s}"
        # Nothing around it.
        assert p["parent"] in (["dir", ["ps1"]], ["error", "PermissionError"]), ctx
        assert p["submitted"][0] == "error" or set(p["submitted"][1]) <= {s}, ctx
        assert p["course"][0] == "error" or set(p["course"][1]) <= {"submitted"}, ctx
        for other in STUDENTS:
            if other == s:
                continue
            for kind in ("rel", "abs", "absdir", "graded"):
                assert p[f"{kind}:{other}"][0] == "error", f"{kind}:{other} visible\n{ctx}"
            assert not (course / "submitted" / other / "ps1" / "evil.txt").exists()
        for what in ("rel:gradebook", "abs:gradebook", "rel:source", "abs:source", "host_secret"):
            assert p[what][0] == "error", f"{what} visible\n{ctx}"
        assert p["sqlite"] in ("OperationalError", "DatabaseError"), ctx
        assert p["home"][0] == "dir" and set(p["home"][1]) <= {".ipython", ".local", ".cache", ".config"}, ctx
        # Writes outside its folder land in the sandbox's own tmpfs at most, never on the host.
        assert not (course / "evil.txt").exists()
        # No secret leaked into anything the notebook recorded.
        dump = json.dumps(res["cells"])
        for leak in (f"SOLUTION-SECRET-{token}", f"GRADEBOOK-{token}", f"HOME-SECRET-{token}",
                     *(f"NOTES-OF-{o}-{token}" for o in STUDENTS if o != s)):
            assert leak not in dump, f"{leak} leaked into {s}'s notebook"
        assert (course / "autograded" / s / "ps1" / "ps1.ipynb").is_file()

    # An error cell is recorded as with the plain kernel.
    plain = data["_plain"]
    assert "exception" not in plain, plain["exception"]
    iso = data[STUDENTS[0]]["cells"]
    iso_err, plain_err = errors(iso[2])[0], errors(plain["cells"][1])[0]
    assert (iso_err["ename"], iso_err["evalue"]) == (plain_err["ename"], plain_err["evalue"])
    assert len(iso_err["traceback"]) == len(plain_err["traceback"])
    assert [o["output_type"] for o in iso[2]["outputs"]] == [o["output_type"] for o in plain["cells"][1]["outputs"]]
    assert stream_text(plain["cells"][0]) == stream_text(iso[0])
    assert stream_text(plain["cells"][2]) == stream_text(iso[3])
