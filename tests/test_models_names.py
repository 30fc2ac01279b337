"""How ``load_model`` resolves names (embedded, local directory, hub cache, hub), how fast a wrong name fails,
and the library chatter (transformers' progress bars) being off unless asked for."""

from __future__ import annotations

import os
import time

import huggingface_hub
import pytest
from huggingface_hub import constants

from frugalft.models import ModelError, load_model, registry


@pytest.fixture
def online(monkeypatch):
    """The hub "on" (the suite runs with HF_HUB_OFFLINE=1), with its one probe replaced: it fails at once,
    like a machine without network, and records the calls. Nothing here may reach the real hub."""
    calls: list[tuple[str, float | None]] = []

    def no_network(repo_id: str, timeout: float | None = None, **_):
        calls.append((repo_id, timeout))
        raise ConnectionError("no network (test)")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    return calls


@pytest.fixture
def quiet_after():
    yield
    registry.set_library_verbosity(False)  # frugalft's default, whatever a test switched on


def test_a_typo_fails_fast_with_a_suggestion(online):
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did you mean 'smollm2-135m'") as e:
        load_model("smollm2-135")
    assert time.monotonic() - t0 < 5
    assert online == [("smollm2-135", registry.HUB_PROBE_TIMEOUT_S)]  # one short request, no retry loop
    message = str(e.value)
    assert "unreachable" in message and "local directory" in message and "--model /path/to/model" in message


def test_offline_never_asks_the_hub(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the hub was asked while HF_HUB_OFFLINE is set")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "model_info", forbidden)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE") as e:
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert "did you mean 'smollm2-135m'" in str(e.value)  # the embedded copy of that model


def test_suggestions_only_for_close_names():
    assert registry.suggest("tiny_env") == "tiny-env"
    assert registry.suggest("gpt2") is None  # a valid hub id, nothing embedded like it
    with pytest.raises(ModelError) as e:
        load_model("not a model!")
    assert "did you mean" not in str(e.value) and "not a hub id" in str(e.value)


def test_a_hub_id_in_the_local_cache_loads_without_the_network(online, monkeypatch, tmp_path):
    lm, tok = load_model("tiny-test", device="cpu")
    snapshot = tmp_path / "models--someone--tiny" / "snapshots" / ("a" * 40)
    lm.save_pretrained(snapshot)
    tok.save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    t0 = time.monotonic()
    cached, _ = load_model("someone/tiny", device="cpu")
    assert online == []  # found in the cache: the hub was not asked
    assert time.monotonic() - t0 < 15  # nor did transformers ask it (its retries take 25 s here)
    assert cached.config.n_layer == lm.config.n_layer and cached.config.vocab_size == lm.config.vocab_size


def test_progress_bars_are_off_unless_verbose(monkeypatch, tmp_path, capfd, quiet_after):
    monkeypatch.delenv(registry.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    monkeypatch.setattr(registry, "_verbosity_set", False)  # as in a fresh process
    lm, tok = load_model("tiny-test", device="cpu")
    lm.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    load_model(str(tmp_path / "m"), device="cpu")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err

    monkeypatch.setenv(registry.VERBOSE_ENV, "1")  # what `frugalft -v` sets
    monkeypatch.setattr(registry, "_verbosity_set", False)
    load_model(str(tmp_path / "m"), device="cpu")
    assert "Loading weights" in capfd.readouterr().err


def test_cli_verbose_flag_sets_the_switch(monkeypatch):
    from typer.testing import CliRunner

    from frugalft.cli.main import app

    monkeypatch.setenv(registry.VERBOSE_ENV, "0")
    assert CliRunner().invoke(app, ["models"]).exit_code == 0
    assert os.environ[registry.VERBOSE_ENV] == "0"
    assert CliRunner().invoke(app, ["-v", "models"]).exit_code == 0
    assert os.environ[registry.VERBOSE_ENV] == "1"


def test_the_sentence_embedder_loads_quietly(monkeypatch, capfd, quiet_after):
    """`select`'s sentence features once printed transformers' "Loading weights" bar (issue 26 item 6)."""
    from frugalft.design.features import default_embedder, sentence_embeddings

    monkeypatch.delenv(registry.VERBOSE_ENV, raising=False)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    monkeypatch.setattr(registry, "_verbosity_set", False)  # as in a fresh process
    x = sentence_embeddings(["a prompt", "another one"], default_embedder(), device="cpu")
    assert x.shape == (2, 384)
    assert "Loading weights" not in capfd.readouterr().err
