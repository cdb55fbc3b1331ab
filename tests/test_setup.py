"""The Makefile's set-up: the pip command lines it builds for each TORCH choice, the warning before
pip's default CUDA build on a machine without an NVIDIA GPU, re-installation when TORCH changes, and
one line saying how to fix each way set-up can fail.

No test reaches a package index. The command-line tests give make a stand-in for the venv's python
that records pip's arguments instead of running pip; the network test points pip at a closed port
on 127.0.0.1.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
REAL_PYTHON = shutil.which("python3") or sys.executable

if shutil.which("make") is None:
    pytest.skip("no make on this machine", allow_module_level=True)


def clean_env(**extra) -> dict[str, str]:
    """The environment of a newcomer's shell: no TORCH, VENV or PYTHON, and none of the variables a
    surrounding `make test TORCH=...` passes down (MAKEFLAGS carries command-line variables)."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"TORCH", "VENV", "PYTHON", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SETUP_SCRIPT"}}
    env.update(extra)
    return env


def make(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def fake_venv(tmp_path):
    """A venv whose python records `-m pip ...` calls (one line each, arguments tab-separated) and
    runs anything else with the real python, which then sees an installed torch of version
    $FAKE_TORCH (a bare dist-info on its path)."""
    venv, site, log = tmp_path / "venv", tmp_path / "site", tmp_path / "pip-calls"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
            shift 2; (IFS='\t'; echo "$*") >> {log}; exit 0
        fi
        mkdir -p {site}/torch-$FAKE_TORCH.dist-info
        printf 'Metadata-Version: 2.1\\nName: torch\\nVersion: %s\\n' "$FAKE_TORCH" \\
            > {site}/torch-$FAKE_TORCH.dist-info/METADATA
        PYTHONPATH={site} exec {REAL_PYTHON} "$@"
        """))
    python.chmod(0o755)

    def setup(*make_args, torch_version="2.14.1", path_prefix=None):
        """Run `make setup VENV=... [make_args]`; return (pip calls as argument lists, make's result)."""
        before = log.read_text().splitlines() if log.exists() else []
        env = clean_env(FAKE_TORCH=torch_version)
        if path_prefix:
            env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
        result = make("setup", f"VENV={venv}", *make_args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        calls = log.read_text().splitlines()[len(before):] if log.exists() else []
        return [c.split("\t") for c in calls], result

    return setup


def installs(calls):
    """The requirements and options of each `pip install`, without the -q and --log that every call has."""
    out = []
    for call in calls:
        if call[0] == "install":
            args = call[1:]
            i = args.index("--log")
            out.append([a for a in args[:i] + args[i + 2:] if a != "-q"])
    return out


def gpu_free_linux() -> bool:
    """What the Makefile checks before it warns about the CUDA build."""
    return (platform.system() == "Linux" and platform.machine() == "x86_64"
            and shutil.which("nvidia-smi") is None and not os.path.exists("/proc/driver/nvidia/version"))


def test_default_installs_pypis_torch_and_warns_without_a_gpu(fake_venv):
    calls, result = fake_venv()
    assert installs(calls) == [["torch>=2.2"], ["-e", ".[test]"]]
    warning = [line for line in result.stdout.splitlines() if "CUDA build" in line]
    if gpu_free_linux():
        assert len(warning) == 1, result.stdout
        assert "GB" in warning[0] and "TORCH=cpu" in warning[0], warning
    else:
        assert warning == [], result.stdout


def test_no_warning_with_an_nvidia_gpu(fake_venv, tmp_path):
    bin_dir = tmp_path / "gpu-bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    calls, result = fake_venv(path_prefix=bin_dir)
    assert installs(calls)[0] == ["torch>=2.2"]
    assert "CUDA build" not in result.stdout


def test_torch_cpu_takes_the_cpu_build_from_pytorchs_cpu_index(fake_venv):
    calls, result = fake_venv("TORCH=cpu")
    assert installs(calls) == [["torch>=2.2", "--index-url", CPU_INDEX], ["-e", ".[test]"]]
    assert "CUDA build" not in result.stdout  # the user chose


def test_torch_pin_is_installed_as_given(fake_venv):
    calls, _ = fake_venv("TORCH=torch==2.13.0", torch_version="2.13.0")
    assert installs(calls) == [["torch==2.13.0"], ["-e", ".[test]"]]


def test_torch_before_2_4_gets_numpy_1(fake_venv):
    """torch < 2.4 was built against NumPy 1; under NumPy 2 its torch.from_numpy raises."""
    calls, _ = fake_venv("TORCH=torch==2.2.2", torch_version="2.2.2")
    assert installs(calls) == [["torch==2.2.2"], ["-e", ".[test]", "numpy<2"]]


def test_set_up_once_then_again_only_when_torch_changes(fake_venv):
    first, _ = fake_venv("TORCH=torch==2.13.0", torch_version="2.13.0")
    assert len(installs(first)) == 2
    again, _ = fake_venv("TORCH=torch==2.13.0", torch_version="2.13.0")
    assert again == []
    unset, _ = fake_venv()  # TORCH left out: keep what is there, do not switch to the CUDA build
    assert unset == []
    switched, result = fake_venv("TORCH=cpu")
    assert switched[0][:2] == ["uninstall", "-y"] and "torch" in switched[0]
    assert installs(switched)[0] == ["torch>=2.2", "--index-url", CPU_INDEX]
    assert "replacing its torch" in result.stdout


def _python_wrapper(tmp_path, name, files: dict[str, str]) -> Path:
    """The real python, with `files` (path -> source) first on its module path."""
    site = tmp_path / f"{name}-site"
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    wrapper = tmp_path / name
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {REAL_PYTHON} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _one_error_line(result) -> str:
    assert result.returncode != 0, result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("make: ") and "***" not in ln]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_python_is_named_with_the_fix(tmp_path):
    line = _one_error_line(make("setup", f"VENV={tmp_path / 'venv'}", "PYTHON=python2.9-does-not-exist"))
    assert "python2.9-does-not-exist" in line and "Python >= 3.10" in line and "PYTHON=" in line
    assert not (tmp_path / "venv").exists()


def test_old_python_is_named_with_the_fix(tmp_path):
    old = _python_wrapper(tmp_path, "python3.8",
                          {"sitecustomize.py": "import sys\nsys.version_info = (3, 8, 18, 'final', 0)\n"})
    line = _one_error_line(make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={old}"))
    assert "needs Python >= 3.10" in line and "is 3.8" in line and "PYTHON=" in line
    assert not (tmp_path / "venv").exists()


def test_python_without_venv_is_named_with_the_fix(tmp_path):
    """Debian's python3 without the python3.X-venv package: `python3 -m venv` has no ensurepip."""
    bare = _python_wrapper(tmp_path, "python3", {"ensurepip/__init__.py": "raise ImportError('no ensurepip')\n"})
    line = _one_error_line(make("setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={bare}"))
    minor = subprocess.run([REAL_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert "no venv module" in line and f"apt install python{minor}-venv" in line
    assert not (tmp_path / "venv").exists()


def test_unreachable_package_index_is_named_with_the_fix(tmp_path):
    """pip pointed at a closed port on this machine: make says the index could not be reached."""
    env = clean_env(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
                    PIP_FIND_LINKS="", PIP_EXTRA_INDEX_URL="", PIP_NO_CACHE_DIR="1")
    line = _one_error_line(make("setup", f"VENV={tmp_path / 'venv'}", "TORCH=torch==2.13.0", env=env))
    assert "could not reach the package index" in line and "127.0.0.1:9" in line and "PIP_INDEX_URL" in line
