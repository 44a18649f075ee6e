"""src/larkway/_gen must be exactly what generate.sh makes from proto/."""

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SDK = HERE.parent
GEN = SDK / "src" / "larkway" / "_gen"


def files(d: Path) -> dict[str, Path]:
    return {p.name: p for p in d.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}


def test_generated_code_is_fresh(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run generate.sh")
    out = tmp_path / "gen"
    r = subprocess.run(["bash", str(SDK / "generate.sh"), str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    want, got = files(out), files(GEN)
    assert sorted(got) == sorted(want), "run sdk/python/generate.sh (make generate)"
    stale = [n for n in want if not filecmp.cmp(want[n], got[n], shallow=False)]
    assert not stale, f"stale generated files {stale}: run sdk/python/generate.sh (make generate)"
