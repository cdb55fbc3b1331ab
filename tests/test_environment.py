"""environment.yml and pyproject.toml declare the same packages and minimum versions; CI and Makefile
do what the README promises (`make lab`, `make test`; CI runs `make test` with the CPU torch 2.13.0
and again with pip's default torch, then the end-to-end browser test with `make e2e`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip"}
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")


def _split(requirement: str) -> tuple[str, str]:
    """'numpy >= 1.24' -> ('numpy', '>=1.24'); names lower-case, spaces dropped from the specifier."""
    m = _REQUIREMENT.match(requirement)
    if not m:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return m.group(1).lower().replace("_", "-"), re.sub(r"\s+", "", m.group(2))


def pyproject_requirements(text: str) -> dict[str, str]:
    """project.dependencies + every optional-dependencies group ('test', 'e2e') as {name: specifier}."""
    project = tomllib.loads(text)["project"]
    reqs = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return dict(_split(r) for r in reqs)


def environment_requirements(text: str) -> dict[str, str]:
    """The `  - name>=ver` items of environment.yml's top-level dependencies list as {name: specifier},
    conda names mapped to pip's; python, pip and the nested `pip:` list are skipped. No pyyaml."""
    deps, in_deps = {}, False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():  # a top-level key
            in_deps = line.startswith("dependencies:")
            continue
        m = re.match(r"^  - (\S.*)$", line)  # exactly one level deep: the nested pip list is deeper
        if not in_deps or not m:
            continue
        item = m.group(1).strip()
        if item.endswith(":"):  # "pip:" opens the nested list
            continue
        name, spec = _split(item)
        if name in CONDA_ONLY:
            continue
        deps[CONDA_TO_PIP.get(name, name)] = spec
    return deps


def requirement_drift(pyproject_text: str, environment_text: str) -> list[str]:
    """Every difference between the two files, one readable line each (empty: in sync)."""
    pip, conda = pyproject_requirements(pyproject_text), environment_requirements(environment_text)
    drift = []
    for name in sorted(pip.keys() | conda.keys()):
        if name not in conda:
            drift.append(f"{name}{pip[name]}: in pyproject.toml only")
        elif name not in pip:
            drift.append(f"{name}{conda[name]}: in environment.yml only")
        elif pip[name] != conda[name]:
            drift.append(f"{name}: pyproject.toml says {pip[name]!r}, environment.yml says {conda[name]!r}")
    return drift


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_environment_yml_matches_pyproject():
    drift = requirement_drift(_read("pyproject.toml"), _read("environment.yml"))
    assert not drift, "environment.yml and pyproject.toml drifted apart:\n  " + "\n  ".join(drift)
    # and the parse found the packages at all (an empty == empty comparison would prove nothing)
    deps = environment_requirements(_read("environment.yml"))
    assert {"torch", "numpy", "pytest", "hypothesis"} <= deps.keys()


def _set_line(env: str, conda_name: str, replacement: str) -> str:
    """environment.yml text with the `  - conda_name...` line replaced (removed when replacement is '')."""
    pattern = rf"^  - {re.escape(conda_name)}\b.*\n"
    assert re.search(pattern, env, re.MULTILINE), f"no {conda_name} line in environment.yml"
    return re.sub(pattern, replacement, env, count=1, flags=re.MULTILINE)


def test_drift_is_detected():
    """The comparison notices a changed minimum, a missing package, an extra package, the conda name
    pytorch standing for torch, and a change on pyproject's side; it ignores the nested pip list."""
    pyproject, env = _read("pyproject.toml"), _read("environment.yml")
    pip = pyproject_requirements(pyproject)
    base = requirement_drift(pyproject, env)  # [] when in sync (the test above); the changes add to it

    def added(drift):
        assert set(base) <= set(drift)
        return sorted(set(drift) - set(base))

    changed = _set_line(env, "numpy", "  - numpy>=999\n")
    assert added(requirement_drift(pyproject, changed)) == [
        f"numpy: pyproject.toml says {pip['numpy']!r}, environment.yml says '>=999'"]

    missing = _set_line(env, "tqdm", "")
    assert added(requirement_drift(pyproject, missing)) == [f"tqdm{pip['tqdm']}: in pyproject.toml only"]

    extra = _set_line(env, "pip", "  - scipy>=1.10\n  - pip\n")
    assert added(requirement_drift(pyproject, extra)) == ["scipy>=1.10: in environment.yml only"]

    torch_bumped = _set_line(env, "pytorch", "  - pytorch>=999\n")
    assert added(requirement_drift(pyproject, torch_bumped)) == [
        f"torch: pyproject.toml says {pip['torch']!r}, environment.yml says '>=999'"]

    # a package only in the nested pip list is not a conda dependency
    nested = re.sub(r"^(\s+- --editable \.\n)", r"\1      - requests>=2\n", env, flags=re.MULTILINE)
    assert nested != env
    assert requirement_drift(pyproject, nested) == base

    # and pyproject's side is read too: dropping the nbval test dependency there shows up
    no_nbval, n = re.subn(r'^\s*"nbval[^"]*",\n', "", pyproject, flags=re.MULTILINE)
    assert n == 1
    assert added(requirement_drift(no_nbval, env)) == [f"nbval{pip['nbval']}: in environment.yml only"]


def test_environment_parser_handles_spaces_and_comments():
    text = ("name: x\n# comment\ndependencies:\n  - python>=3.10\n  - numpy >=1.24  # why\n"
            "  - pytorch>=2.2\n  - pip\n  - pip:\n      - -e .\nchannels:\n  - conda-forge\n")
    assert environment_requirements(text) == {"numpy": ">=1.24", "torch": ">=2.2"}


def _ci_commands() -> list[str]:
    return [ln.strip() for ln in _read(".ci/run").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_ci_tests_the_pinned_torch_and_what_a_newcomer_gets():
    """`make test` twice: with the machine's torch==2.13.0, and with no TORCH (pip's default) in an
    environment of its own, so that the second does not reuse the first's torch."""
    commands = _ci_commands()
    make_test = [c for c in commands if re.match(r"^make\s+test\b", c)]
    assert len(make_test) == 2, f".ci/run should call `make test` twice: {commands}"
    pinned, default = make_test
    assert re.search(r"\bTORCH=torch==2\.13\.0\b", pinned) and "VENV=" not in pinned, pinned
    assert "TORCH" not in default, default
    assert re.search(r"\bVENV=(\S+)", default) and not re.search(r"\bVENV=\.venv\b(?!-)", default), default


def test_ci_runs_the_browser_test_after_make_test():
    commands = _ci_commands()
    runs = [c for c in commands if re.match(r"^make\s+(test|e2e)\b", c)]
    assert [c.split()[1] for c in runs] == ["test", "test", "e2e"], \
        f".ci/run should run `make test` twice, then `make e2e`: {runs}"
    assert re.search(r"\bTORCH=torch==2\.13\.0\b", runs[-1]), runs[-1]
    assert re.search(r"^e2e:", _read("Makefile"), re.MULTILINE), "no `e2e:` rule in the Makefile"


def test_makefile_torch_range_is_pyprojects():
    """TORCH=cpu and the default install the torch range that pyproject.toml declares."""
    declared = pyproject_requirements(_read("pyproject.toml"))["torch"]
    in_makefile = re.search(r"^TORCH_RANGE := torch(\S+)$", _read("Makefile"), re.MULTILINE)
    assert in_makefile, "no `TORCH_RANGE := torch...` line in the Makefile"
    assert in_makefile.group(1) == declared


def test_makefile_has_lab_and_test_targets():
    makefile = _read("Makefile")
    for target in ("lab", "test"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no `{target}:` rule in the Makefile"
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony and {"lab", "test"} <= set(phony.group(1).split())


def test_ci_lints_first_with_the_configured_ruff():
    commands = _ci_commands()
    makes = [c.split()[1] for c in commands if re.match(r"^make\s+\w+", c)]
    assert makes[0] == "lint", f".ci/run should run `make lint` before the tests: {makes}"
    assert re.search(r"^lint:", _read("Makefile"), re.MULTILINE), "no `lint:` rule in the Makefile"
    assert re.search(r"^line-length\s*=\s*120$", _read("pyproject.toml"), re.MULTILINE), "ruff's line length"
    assert "ruff" in _read("pyproject.toml").split("[project.optional-dependencies]")[1].split("[tool")[0]
