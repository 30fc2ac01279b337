"""``frugalft scale rl-train | score | greedi``: the same recipes on a Ray cluster or several processes.
(``scale sft`` is a hidden alias of ``frugalft sft``, which runs data-parallel under ``accelerate launch``.)

``rl-train`` is ``frugalft rl train`` for a bare RLConfig YAML (no experiment, no warm-up stage): the same
loop, ``--workers`` and ``--ray-address`` set the config's ``workers`` / ``ray_address``.

With no ``--ray-address`` a local Ray cluster is started (``--workers`` CPUs); ``--ray-address auto`` joins
the cluster this machine belongs to (``ray start --head`` / ``ray start --address``). See docs/scaling.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from frugalft.cli.options import (
    ConfigOption,
    SetOption,
    fail,
    out_option,
    require,
    require_env,
    resolve_config,
    run_dir_option,
)

app = typer.Typer(help="Scale out: Ray rollout workers and pool scoring, GreeDi selection, multi-process SFT.",
                  no_args_is_help=True)

WorkersOption = typer.Option(2, "--workers", "-w", help="Ray workers (rollout actors / scoring tasks / parts).")
AddressOption = typer.Option(None, "--ray-address", help="Existing Ray cluster (e.g. auto, ray://head:10001); "
                             "default: start a local one.")


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _load_pool(pool: Path, id_field: str, prompt_field: str):
    from frugalft.design import DesignError, load_pool

    try:
        return load_pool(pool, id_field=id_field or None, prompt_field=prompt_field, task_field=None,
                         response_field=None)
    except DesignError as e:
        fail(str(e))


@app.command("rl-train")
def rl_train_cmd(
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
    run_dir: Path = run_dir_option(Path("runs/rl-scale"), "Run directory (resumes)."),
    workers: int = WorkersOption,
    ray_address: str = AddressOption,
    cpus_per_worker: float = typer.Option(1.0, help="CPUs reserved per rollout actor."),
    gpus_per_worker: float = typer.Option(0.0, help="GPUs per rollout actor (fractions share a GPU)."),
) -> None:
    """Reflect-RL (an RLConfig YAML) with rollouts on Ray actors; --workers 0 plays them in this process."""
    from dataclasses import replace

    from frugalft.distributed import ray_rollout
    from frugalft.reflect.train import RLConfig, train

    cfg = resolve_config(RLConfig, config, overrides)
    if workers < 0:
        fail("--workers must be 0 (in-process) or more")
    require_env(cfg.env)
    if workers:
        require("ray", "ray", "--workers N (Ray rollout workers)")
    cfg = replace(cfg, workers=workers, ray_address=ray_address, cpus_per_worker=cpus_per_worker,
                  gpus_per_worker=gpus_per_worker)
    try:
        backend = ray_rollout.make_backend(cfg)  # Ray actors, or this process for --workers 0
        try:
            out = train(cfg, run_dir, resume=True, backend=backend)
        finally:
            backend.close()
    except (FileNotFoundError, ValueError, KeyError, ImportError) as e:
        fail(str(e))
    finally:
        if workers:
            _shutdown_ray()
    if out.get("processes", 1) == 1 or int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"RL done: success {out.get('success', float('nan')):.3f}, {out.get('episodes', 0)} episodes, "
                   f"{out.get('processes', 1)} learner process(es), checkpoint {out['checkpoint']}")


@app.command("score")
def score_cmd(
    pool: Path = typer.Argument(..., help="Pool: .jsonl, .csv, .parquet, or a datasets directory."),
    model: str = typer.Option(None, "--model", "-m", help="Base model (uncertainty, features=lm)."),
    features: str = typer.Option("sentence", help="Embeddings to compute: sentence, lm, or none."),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="Also the uncertainty scores (needs --model)."),
    max_new_tokens: int = typer.Option(32, help="Uncertainty: answer tokens per prompt (as `select`'s default)."),
    batch_size: int = typer.Option(16, help="Prompts per forward pass in each worker."),
    workers: int = WorkersOption,
    ray_address: str = AddressOption,
    gpus_per_worker: float = typer.Option(0.0, help="GPUs per scoring task."),
    id_field: str = typer.Option("id", "--id-field", help="Unique id field ('' numbers the rows)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Prompt text field."),
) -> None:
    """Compute a pool's features over Ray shards into the cache `frugalft select` reads."""
    require("ray", "ray", "frugalft scale score")
    from frugalft.design import DesignError
    from frugalft.distributed.ray_scoring import distributed_embeddings, distributed_uncertainty

    p = _load_pool(pool, id_field, prompt_field)
    if uncertainty and model is None:
        fail("--uncertainty needs --model")
    try:
        if features != "none":
            x = distributed_embeddings(p, features, model=model, workers=workers, address=ray_address,
                                       batch_size=batch_size, num_gpus=gpus_per_worker)
            typer.echo(f"{features} embeddings: {x.shape[0]} x {x.shape[1]} (cached)")
        if uncertainty:
            s = distributed_uncertainty(p, model, workers=workers, address=ray_address,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size, num_gpus=gpus_per_worker)
            typer.echo(f"uncertainty: {len(s['min_margin'])} prompts, mean min_margin {s['min_margin'].mean():.4f}"
                       " (cached)")
    except DesignError as e:
        fail(str(e))
    finally:
        _shutdown_ray()


@app.command("greedi")
def greedi_cmd(
    pool: Path = typer.Argument(..., help="Pool: .jsonl, .csv, .parquet, or a datasets directory."),
    budget: int = typer.Option(..., "--budget", "-b", help="How many prompts to choose."),
    out: Path = out_option(..., "Selection file to write (.jsonl, as `frugalft select`)."),
    parts: int = typer.Option(4, help="Random parts the pool is cut into (GreeDi's m)."),
    features: str = typer.Option("sentence", help="sentence, lm, or a .npy file of embeddings."),
    model: str = typer.Option(None, "--model", "-m", help="Base model for features=lm."),
    sigma: str = typer.Option("auto", help="RBF width, auto (gains-curve rule), or cosine for the cosine kernel."),
    compare: bool = typer.Option(False, "--compare", help="Also run exact greedy and print both objectives."),
    seed: int = typer.Option(0, help="Seed of the partition (and of sigma's subsample)."),
    workers: int = typer.Option(0, "--workers", "-w", help="Ray tasks for the parts (0: in this process)."),
    ray_address: str = AddressOption,
    id_field: str = typer.Option("id", "--id-field", help="Unique id field ('' numbers the rows)."),
    prompt_field: str = typer.Option("prompt", "--prompt-field", help="Prompt text field."),
) -> None:
    """Facility location by GreeDi: greedy on each part, then greedy on the union for the whole pool."""
    import numpy as np

    from frugalft.design import DesignError, Selection
    from frugalft.design.features import embeddings
    from frugalft.distributed.greedi import compare_with_exact, greedi

    if workers:
        require("ray", "ray", "--workers N (Ray tasks)")
    p = _load_pool(pool, id_field, prompt_field)
    if not 0 < budget <= len(p):
        fail(f"--budget must be in 1..{len(p)} (the pool's size)")
    try:
        x = embeddings(p, features, model=model)
        sig: float | str | None = None if sigma == "cosine" else sigma if sigma == "auto" else float(sigma)
        res = greedi(x, budget, parts=parts, sigma=sig, seed=seed, workers=workers, address=ray_address)
    except (DesignError, ValueError) as e:
        fail(str(e))
    finally:
        if workers:
            _shutdown_ray()
    ids = [str(i) for i in p.table.column("id").take(res.picks).to_pylist()]
    params = {"parts": res.parts, "candidates": res.candidates, "sigma": res.sigma, "features": features,
              "seed": seed, "objective": res.objective}
    Selection(res.picks, ids, np.asarray(res.gains), "greedi-facility-location", params).save(out)
    typer.echo(f"GreeDi: {budget} of {len(p)} prompts from {res.candidates} candidates on {res.parts} parts, "
               f"F = {res.objective:.4f} -> {out}")
    if compare:
        cmp = compare_with_exact(x, budget, parts=parts, sigma=res.sigma, seed=seed)
        typer.echo(f"exact greedy F = {cmp['exact']:.4f}; GreeDi / exact = {cmp['ratio']:.4f}")


def _sft_alias() -> None:
    """`scale sft` is `frugalft sft` (one SFT command; it runs data-parallel when accelerate launched it)."""
    from frugalft.cli.sft import sft_cmd

    app.command("sft", hidden=True, help="The same as `frugalft sft` (kept for old scripts).")(sft_cmd)


_sft_alias()
