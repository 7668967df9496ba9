"""Every script in benchmarks/ imports against the current library: a renamed or moved module fails here, not
in the middle of a long benchmark run (nothing else runs most of them in the suite)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_benchmark_script_imports():
    scripts = sorted(path.stem for path in BENCHMARKS.glob("*.py"))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *scripts], cwd=BENCHMARKS, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(scripts) >= 10
