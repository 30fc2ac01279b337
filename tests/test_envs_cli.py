"""`frugalft env list|play|stats`, driven through Typer's runner (play reads numbers from stdin)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from frugalft.cli.env import app
from frugalft.envs.taxi import ACTIONS, DangerousTaxi

runner = CliRunner()


def test_list():
    out = runner.invoke(app, ["list"])
    assert out.exit_code == 0
    for name in ("DangerousTaxi", "AutoExplore", "TextWorld", "ALFWorld"):
        assert name in out.output


def test_play_taxi_by_typing_the_oracle_numbers():
    env = DangerousTaxi(split="test", mode="full")
    tid = env.task_ids("test", 2)[0]
    env.reset(options={"task_id": tid})
    numbers = []
    while not env.done:
        a = env.oracle_action()
        numbers.append(str(ACTIONS.index(a)))
        env.step(a)
    typed = "\n".join(["x", "99", *numbers]) + "\n"  # two bad inputs first: asked again, nothing lost
    out = runner.invoke(app, ["play", "DangerousTaxi", "--mode", "full", "--task-id", tid], input=typed)
    assert out.exit_code == 0, out.output
    assert out.output.count("type a number from 0 to 5") == 2
    assert f"SUCCESS: return {1 - (len(numbers) - 1) / 20:+g} in {len(numbers)} steps" in out.output


def test_play_quits_and_crashes():
    out = runner.invoke(app, ["play", "DangerousTaxi", "--seed", "1"], input="q\n")
    assert out.exit_code == 0 and "bye" in out.output
    env = DangerousTaxi(split="test")
    env.reset(seed=2)
    fatal = "dropoff" if not env.privileged()["passenger_aboard"] else "pickup"
    out = runner.invoke(app, ["play", "DangerousTaxi", "--seed", "2"], input=f"{ACTIONS.index(fatal)}\n")
    assert "FAILED: return -0.5 in 1 steps" in out.output


def test_stats_taxi(tmp_path):
    out = runner.invoke(app, ["stats", "DangerousTaxi", "--level", "2", "--random-episodes", "2",
                              "--json", str(tmp_path / "s.json")])
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "s.json").read_text())["levels"]
    assert [r["level"] for r in rows] == [2] and rows[0]["tasks"] == 100 and rows[0]["oracle_success"] == 1.0
    assert rows[0]["random_success"] < 0.05


def test_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    out = runner.invoke(app, ["stats", "ALFWorld"])
    assert out.exit_code == 2 and "ALFWORLD_DATA" in out.output
    out = runner.invoke(app, ["play", "AutoExplore", "--mode", "full"])
    assert out.exit_code == 2 and "--mode is for DangerousTaxi" in out.output
    out = runner.invoke(app, ["play", "Nope"])
    assert out.exit_code == 2 and "known: DangerousTaxi" in out.output
    out = runner.invoke(app, ["play", "DangerousTaxi", "--task-id", "full-999"])
    assert out.exit_code == 2 and "unknown task_id" in out.output
    out = runner.invoke(app, ["play", "AutoExplore", "--repo", str(tmp_path / "missing")])
    assert out.exit_code == 2 and "not a directory" in out.output
