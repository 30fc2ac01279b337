"""``frugalft quickstart``: Reflect-RL on DangerousTaxi end to end at demo scale, on a laptop's CPU.

Data (oracle trajectories + negative examples) -> SFT warm-up of both players -> RL -> evaluation -> a small
table, with the packaged config ``configs/rl/quickstart.yaml``. It prints where everything went.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer

from frugalft.cli.options import SetOption, fail, require, resolve_config, run_dir_option


def quickstart_config_path() -> Path:
    return Path(str(resources.files("frugalft") / "configs" / "rl" / "quickstart.yaml"))


def _sparkline(values: list[float]) -> str:
    """A text curve (one block per point, scaled to [0, 1])."""
    blocks = " ▁▂▃▄▅▆▇█"
    return "".join(blocks[min(len(blocks) - 1, max(0, round(v * (len(blocks) - 1))))] for v in values)


def summary(cfg, run_dir: Path) -> str:
    """What the table means, in words, with the learning curves as text."""
    import json

    from frugalft.reflect.table import TITLES, eval_path, rl_curves, warmup_curves

    seed = cfg.seeds[0]
    rows = {}
    for method in cfg.methods:
        path = eval_path(run_dir, seed, method, "test")
        if path.exists():
            rows[method] = json.loads(path.read_text(encoding="utf-8"))
    lines = []
    warm = warmup_curves(cfg, run_dir).get("reflect")
    if warm:
        acc = [a for _, a in warm[0]]
        lines.append(f"warm-up: the policy's accuracy on held-out training tasks {acc[0]:.0%} -> {max(acc):.0%} "
                     f"over {warm[0][-1][0]} steps   {_sparkline(acc)}")
    rl = rl_curves(cfg, run_dir).get("reflect_rl")
    if rl:
        ys = rl[0]
        k = max(1, len(ys) // 4)
        lines.append(f"RL: training success {sum(ys[:k]) / k:.0%} (first quarter) -> {sum(ys[-k:]) / k:.0%} (last "
                     f"quarter) over {len(ys)} iterations   {_sparkline(ys)}")
    if rows:
        n = next(iter(rows.values()))["episodes"]
        parts = [f"{TITLES[m]} {100 * r['success']:.0f}% [{100 * r['success_ci_lo']:.0f}, {100 * r['success_ci_hi']:.0f}]"
                 for m, r in rows.items()]
        lines.append(f"What this means: from {n} held-out start states the taxi must reach the passenger without a single "
                     f"wasted move; {'; '.join(parts)} (success, 95% interval). The warm-up taught both players "
                     "from the oracle's games; RL then trained the policy on its own episodes.")
    return "\n".join(lines) + "\n"


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart_cmd(
        run_dir: Path = run_dir_option(Path("runs/quickstart"), "Run directory: where the outputs go (resumes)."),
        overrides: list[str] = SetOption,
    ) -> None:
        """Reflect-RL on DangerousTaxi end to end at demo scale (a few minutes on 2 CPU cores)."""
        from frugalft.distributed import ray_rollout
        from frugalft.reflect.table import ExperimentConfig, run_table

        cfg = resolve_config(ExperimentConfig, quickstart_config_path(), overrides)
        if cfg.rl.workers > 0:
            require("ray", "ray", f"rl.workers={cfg.rl.workers} (Ray rollout workers)")
        t0 = time.time()
        typer.echo(f"frugalft quickstart: DangerousTaxi, model {cfg.model}, methods {', '.join(cfg.methods)}, "
                   f"seeds {cfg.seeds}; outputs in {run_dir}")
        try:
            paths = run_table(cfg, run_dir, log=typer.echo, make_backend=ray_rollout.make_backend)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            fail(str(e))
        typer.echo("")
        typer.echo(Path(paths["markdown"]).read_text(encoding="utf-8"))
        typer.echo(summary(cfg, run_dir))
        seed = run_dir / f"seed-{cfg.seeds[0]}"
        typer.echo(f"done in {(time.time() - t0) / 60:.1f} min. Outputs:")
        typer.echo(f"  table            {paths['markdown']} (and {paths['csv']})")
        if "curves" in paths:
            typer.echo(f"  learning curves  {paths['curves']}")
        typer.echo(f"  warm-up data     {seed / 'data'} (counts.json)")
        typer.echo(f"  warm-up models   {seed / 'warmup'}/<variant>/{{reflection,policy}}/model")
        typer.echo(f"  RL runs          {seed / 'rl'}/<method>/ (metrics.jsonl, checkpoints/)")
        typer.echo(f"  evaluations      {seed / 'eval'}/test/<method>.json")
        typer.echo(f"config: {quickstart_config_path()}; the same stages one by one: frugalft rl data|warmup|train|"
                   f"eval|table --config <that file> --run-dir {run_dir}")
