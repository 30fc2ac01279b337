"""``frugalft rl times``: per-seed stage minutes and the seed processes beside each, from evaluation files."""

from __future__ import annotations

import json

import pytest

from frugalft.reflect.timing import busy_minutes, read_times, seed_times, times_report


def _cell(run, seed, method, started, finished, stages, folder="test", task_set=""):
    path = run / f"seed-{seed}" / "eval" / folder / f"{method}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"method": method, "seed": seed, "task_set": task_set, "started": started,
                                "finished": finished, "stage_seconds": stages}))


def test_stage_minutes_and_processes_beside_each_seed(tmp_path):
    # seeds 0 and 1 run 0-600 s together; seed 2 runs 300-900 s (it overlaps each of them for 300 s)
    _cell(tmp_path, 0, "sft", 0, 420, {"warmup": 300, "rl": 0, "eval": 120})
    _cell(tmp_path, 0, "reflect_rl", 420, 600, {"warmup": 0, "rl": 120, "eval": 60})
    _cell(tmp_path, 0, "sft", 600, 600, {"eval": 0}, folder="test-paper", task_set="paper")
    _cell(tmp_path, 1, "sft", 0, 600, {"warmup": 540, "rl": 0, "eval": 60})
    _cell(tmp_path, 2, "sft", 300, 900, {"warmup": 480, "rl": 0, "eval": 60})
    (tmp_path / "seed-2" / "eval" / "test" / "old.json").write_text(json.dumps({"method": "old"}))  # no times
    pieces, untimed = read_times(tmp_path)
    assert len(pieces) == 5 and untimed == 1
    seeds = {s.seed: s for s in seed_times(pieces)}
    assert seeds[0].minutes == {"warmup": 5.0, "rl": 2.0, "eval": 3.0, "quality": 0.0}
    assert seeds[0].span_minutes == 10.0
    assert seeds[0].processes == pytest.approx((600 + 600 + 300) / 600)  # itself, seed 1, half of seed 2
    assert seeds[2].processes == pytest.approx((300 + 300 + 600) / 600)
    report = times_report(tmp_path)
    assert "3 seed(s), 15.0 min from the first start to the last finish (1 file(s) without" in report
    assert "splits" not in report  # one split (test and its paper task set)
    assert "; 15.0 min with a cell in progress" in report  # no gap: the span
    assert "| 0 | 5.0 | 2.0 | 3.0 | 0.0 | 0.0 | 10.0 | 2.50 |" in report
    assert "| 2 | 8.0 | 0.0 | 1.0 | 0.0 | 1.0 | 10.0 | 2.00 |" in report  # 1 minute not in any stage
    assert "| all (process-minutes) | 22.0 | 2.0 | 5.0 | 0.0 | 1.0 | 30.0 | |" in report
    assert read_times(tmp_path, split="valid") == ([], 0)  # the split filter: nothing was read on valid
    _cell(tmp_path, 0, "sft", 1000, 1060, {"eval": 60}, folder="valid")  # a probe's file in the same directory
    (tmp_path / "seed-0.bak" / "eval" / "test").mkdir(parents=True)  # not a seed folder: ignored
    (tmp_path / "seed-0.bak" / "eval" / "test" / "sft.json").write_text("{}")
    assert "splits test, valid together (one run's: --split)" in times_report(tmp_path)
    assert times_report(tmp_path, split="test") == report


def test_a_run_made_in_two_sittings_counts_their_sum_not_the_gap(tmp_path):
    # sitting 1: seeds 0-1 over 0-600 s; sitting 2, after a 1400 s gap: seed 0 again (2000-2300 s), seed 1 beside it
    _cell(tmp_path, 0, "sft_noreflect", 0, 600, {"warmup": 600})
    _cell(tmp_path, 1, "sft_noreflect", 60, 540, {"warmup": 480})
    _cell(tmp_path, 0, "sft", 2000, 2300, {"warmup": 300})
    _cell(tmp_path, 1, "sft", 2100, 2400, {"warmup": 300})
    (pieces, _), seconds = read_times(tmp_path), 600 + 400
    assert busy_minutes(pieces) == pytest.approx(seconds / 60)
    assert busy_minutes(pieces[::-1]) == pytest.approx(seconds / 60)  # the order files are read in does not matter
    assert "40.0 min from the first start to the last finish; 16.7 min with a cell in progress" in times_report(tmp_path)


def test_a_run_without_times_is_an_error_naming_it(tmp_path):
    (tmp_path / "seed-0" / "eval" / "test").mkdir(parents=True)
    (tmp_path / "seed-0" / "eval" / "test" / "sft.json").write_text(json.dumps({"method": "sft"}))
    with pytest.raises(ValueError, match=f"{tmp_path}: no evaluation file with times .*1 without"):
        times_report(tmp_path)
