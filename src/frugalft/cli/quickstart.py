"""``frugalft quickstart``: Reflect-RL on DangerousTaxi end to end at demo scale, on a laptop's CPU.

Data (oracle trajectories + negative examples) -> SFT warm-up of both players -> RL -> evaluation -> a small
table, with the packaged config ``configs/rl/quickstart.yaml``. It prints where everything went.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import typer

from frugalft.cli.options import SetOption, fail, resolve_config


def quickstart_config_path() -> Path:
    return Path(str(resources.files("frugalft") / "configs" / "rl" / "quickstart.yaml"))


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart_cmd(
        run_dir: Path = typer.Option(Path("runs/quickstart"), "--run-dir", "-o", help="Where the outputs go."),
        overrides: list[str] = SetOption,
    ) -> None:
        """Reflect-RL on DangerousTaxi end to end at demo scale (a few minutes on 2 CPU cores)."""
        from frugalft.reflect.table import ExperimentConfig, run_table

        cfg = resolve_config(ExperimentConfig, quickstart_config_path(), overrides)
        t0 = time.time()
        typer.echo(f"frugalft quickstart: DangerousTaxi, model {cfg.model}, methods {', '.join(cfg.methods)}, "
                   f"seeds {cfg.seeds}; outputs in {run_dir}")
        try:
            paths = run_table(cfg, run_dir, log=typer.echo)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            fail(str(e))
        typer.echo("")
        typer.echo(Path(paths["markdown"]).read_text(encoding="utf-8"))
        seed = run_dir / f"seed-{cfg.seeds[0]}"
        typer.echo(f"done in {(time.time() - t0) / 60:.1f} min. Outputs:")
        typer.echo(f"  table            {paths['markdown']} (and {paths['csv']})")
        if "curves" in paths:
            typer.echo(f"  learning curves  {paths['curves']}")
        typer.echo(f"  warm-up data     {seed / 'data'} (counts.json)")
        typer.echo(f"  warm-up models   {seed / 'warmup'}/<variant>/{{reflection,policy}}/model")
        typer.echo(f"  RL runs          {seed / 'rl'}/<method>/ (metrics.jsonl, checkpoints/)")
        typer.echo(f"  evaluations      {seed / 'eval'}/<method>.json")
        typer.echo(f"config: {quickstart_config_path()}; the full table: frugalft rl table --config <that file>")
