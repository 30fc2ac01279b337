"""``frugalft pool build``: the built-in offline benchmark pool (mined from installed packages + procedural)."""

from __future__ import annotations

from pathlib import Path

import typer

from frugalft.cli.options import fail

app = typer.Typer(help="Benchmark pools for label-efficient SFT.", no_args_is_help=True)


@app.command("build")
def build_cmd(
    out: Path = typer.Option(Path("runs/pool"), "--out", "-o", help="Directory for pool.jsonl, eval.jsonl, manifest.json."),
    size: int = typer.Option(20000, "--size", "-n", help="Prompts in the pool."),
    eval_per_task: int = typer.Option(40, help="Held-out prompts per task type."),
    seed: int = typer.Option(0, help="Seed of everything random (task order, sampling, numbers)."),
    zipf_alpha: float = typer.Option(1.0, help="Long tail: the k-th task's share is ~ 1/k^alpha."),
    source: list[str] = typer.Option(None, "--source", help="Module to mine (repeatable); default: a pinned list."),
) -> None:
    """Build the benchmark pool and its disjoint eval set; deterministic for a given seed and package versions."""
    from frugalft.design.builtin_pool import DEFAULT_SOURCES, PoolBuildConfig, PoolBuildError, build_pool

    cfg = PoolBuildConfig(out=str(out), n_pool=size, eval_per_task=eval_per_task, seed=seed, zipf_alpha=zipf_alpha,
                          sources=list(source) if source else list(DEFAULT_SOURCES))
    try:
        m = build_pool(cfg)
    except PoolBuildError as e:
        fail(str(e))
    typer.echo(f"{m['n_pool']} pool prompts and {m['n_eval']} eval prompts over {len(m['tasks'])} tasks "
               f"(mined {m['mined_functions']} functions from {len(m['packages'])} modules) -> {out}")
    for t, v in sorted(m["tasks"].items(), key=lambda kv: -kv[1]["pool"]):
        typer.echo(f"  {t:<16} {v['kind']:<10} pool {v['pool']:>6}  eval {v['eval']:>4}")
