"""The examples in examples/ compute on Shoal exactly what their plain sequential reference does."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shoal

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = [
    "wordcount",
    "tree_reduction",
    "matmul",
    "fanout_fanin",
    "text_pipeline",
    "image_pipeline",
    "chapters",
]


def load(name):
    """Import examples/NAME.py as module `shoal_example_NAME` (registered, so pickle finds it)."""
    mod_name = f"shoal_example_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    return sys.modules[mod_name]


def run(module):
    """Compute the example's sink(s) in one run; same shape as reference()."""
    sinks = module.build()
    if isinstance(sinks, tuple):
        return shoal.compute(*sinks)
    return sinks.compute()


def assert_same(actual, expected):
    """Deep equality that also compares NumPy arrays exactly."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray)
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, dict):
        assert type(actual) is type(expected) and actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert type(actual) is type(expected) and len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    else:
        assert actual == expected


@pytest.mark.parametrize("name", NAMES)
def test_example_interface(name):
    module = load(name)
    assert module.__doc__, f"{name}.py needs a module docstring"
    for attr in ("build", "reference", "main"):
        assert callable(getattr(module, attr)), f"{name}.py lacks {attr}()"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "matmul"])
def test_example_matches_reference(name):
    module = load(name)
    assert_same(run(module), module.reference())


def test_matmul_matches_reference_and_numpy():
    module = load("matmul")
    c = run(module)
    np.testing.assert_allclose(c, module.reference(), rtol=1e-12, atol=1e-12)
    a, b = module.make_inputs(256, 0)
    np.testing.assert_allclose(c, a @ b, rtol=1e-9, atol=1e-9)


def test_wordcount_top_words():
    module = load("wordcount")
    top = run(module)
    assert len(top) == 10
    assert top[0] == ("and", 3678)
    assert [c for _, c in top] == sorted((c for _, c in top), reverse=True)


def test_tree_reduction_closed_form_and_task_count():
    module = load("tree_reduction")
    n = 1024
    assert module.build(n).compute() == (n - 1) * n * (2 * n - 1) // 6
    assert shoal.last_run().tasks == 2 * n - 1


@pytest.mark.parametrize("name", NAMES)
def test_example_main_prints_run_summary(name, capsys):
    load(name).main()
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(shoal.last_run())


def test_wordcount_script_runs_standalone():
    top_word = load("wordcount").reference()[0][0]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "examples/wordcount.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f" {top_word} " in proc.stdout
