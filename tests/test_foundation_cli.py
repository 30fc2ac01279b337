"""The CLI as a user runs it: a real subprocess of the installed ``frugalft`` entry point."""

import subprocess
import sys

import pytest


def frugalft(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frugalft.cli.main", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_models_lists_the_embedded_defaults():
    out = frugalft("models")
    assert out.returncode == 0, out.stderr
    for name in ("tiny", "tiny-test", "smollm2-135m"):
        assert name in out.stdout


@pytest.mark.slow
def test_generate_with_pretrained_smollm2_answers_sensibly_offline():
    out = frugalft("generate", "--model", "smollm2-135m", "The capital of France is", "--max-new-tokens", "8")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("The capital of France is")
    assert "Paris" in out.stdout


def test_generate_is_deterministic_for_a_seed_with_sampling():
    args = ("generate", "--model", "tiny-test", "hello", "--max-new-tokens", "6", "--temperature", "1.0", "--seed", "3")
    a, b = frugalft(*args), frugalft(*args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and len(a.stdout) > len("hello")


def test_unknown_model_is_a_clear_error_not_a_traceback():
    out = frugalft("generate", "--model", "gpt-17-ultra!", "hi")
    assert out.returncode == 2
    assert "unknown model" in out.stderr and "smollm2-135m" in out.stderr
    assert "Traceback" not in out.stderr
