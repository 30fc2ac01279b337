"""``frugalft rl data | warmup | train | eval | table | compare``: Reflect-RL's stages, each from one experiment
config, and the comparison of two run directories (a probe's two settings) on valid.

Every command reads the same YAML (an ``ExperimentConfig``: env, model, seeds, methods and the data, warmup,
rl and eval sections; see ``src/frugalft/configs/rl/``) and works in one run directory laid out as

    <run-dir>/seed-<S>/data/*.jsonl            frugalft rl data
    <run-dir>/seed-<S>/warmup/<variant>/       frugalft rl warmup --variant reflect|reflect_noneg|noreflect
    <run-dir>/seed-<S>/rl/<method>/            frugalft rl train --method reflect_rl|...
    <run-dir>/seed-<S>/eval/<split>/<method>.json   frugalft rl eval --method ... (valid unless --split test)
    <run-dir>/results.csv, table.md, curves.png    frugalft rl table (all of the above, every seed and method)

Each stage reuses what an earlier one left (and resumes a killed RL run), so ``table`` after the single
stages only does what is missing. ``train --workers N [--ray-address ADDR]`` plays the rollouts on N Ray
actors (``--set rl.workers=N`` for ``eval`` and ``table``: this module builds the pool and hands it to the
loop), and ``accelerate launch ... frugalft rl train`` splits the learner over processes (docs/scaling.md).
``--report-to tensorboard|wandb`` (or ``report_to:`` in the config) also logs every run directory's metrics
there: one run per folder above, tagged env, seed and method or warm-up variant (docs/tracking.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from frugalft.cli.options import (
    ConfigOption,
    ReportToOption,
    RestartOption,
    SetOption,
    fail,
    report_to,
    require,
    require_env,
    resolve_config,
    run_dir_option,
)

app = typer.Typer(help="Reflect-RL: warm-up data, SFT warm-up, online RL, evaluation and the comparison table.",
                  no_args_is_help=True)

RunDirOption = run_dir_option(None, "Run directory (default: runs/rl/<env>).")
SeedOption = typer.Option(None, "--seed", help="The run's seed: its random seed and its folder seed-S (default: "
                                               "the config's first seed).")


def _setup(config: Path | None, overrides: list[str] | None, run_dir: Path | None, seed: int | None,
           workers: int | None = None, ray_address: str | None = None, rollouts: bool = True):
    """The experiment config (``--workers``/``--ray-address`` applied), its run directory and seed; a missing
    extra (TextWorld; Ray for a command that plays RL ``rollouts`` on workers) is an error here, before any work."""
    from frugalft.reflect.table import ExperimentConfig

    try:
        cfg = resolve_config(ExperimentConfig, config, overrides)
    except ValueError as e:  # e.g. an unknown method, raised by the config itself
        raise typer.BadParameter(str(e)) from None
    if workers is not None:
        cfg.rl.workers = workers
    if ray_address is not None:
        cfg.rl.ray_address = ray_address
    require_env(cfg.env)
    if rollouts and cfg.rl.workers > 0:
        require("ray", "ray", f"rl.workers={cfg.rl.workers} (Ray rollout workers)")
    # The env's last name: "frugalft/TextWorld-v0" -> TextWorld-v0, "mypkg.envs:MyEnv" -> MyEnv (no ":" in paths)
    run = run_dir or Path("runs") / "rl" / cfg.env.replace(":", "/").split("/")[-1]
    return cfg, run, seed if seed is not None else cfg.seeds[0]


def _tracking(cfg, run: Path, option: str | None):
    """The experiment-tracking context of a command: runs named by their path under ``run``, tagged with the
    environment and (from the layout above) seed, method or warm-up variant."""
    from frugalft.runs import tracking

    return tracking(report_to(option, cfg.report_to), root=run, group=str(run), tags={"env": cfg.env},
                    describe=_cell_tags(run))


def _cell_tags(run: Path) -> Callable[[Path], dict[str, Any]]:
    def describe(path: Path) -> dict[str, Any]:
        try:
            parts = path.resolve().relative_to(run.resolve()).parts
        except ValueError:
            return {}
        tags: dict[str, Any] = {}
        if parts and parts[0].startswith("seed-") and parts[0][5:].lstrip("-").isdigit():
            tags["seed"] = int(parts[0][5:])
        if len(parts) >= 3 and parts[1] == "rl":
            tags["method"] = parts[2]
        elif len(parts) >= 3 and parts[1] == "warmup":
            tags["variant"] = parts[2]
            if len(parts) >= 4:
                tags["player"] = parts[3]  # reflection or policy
        return tags
    return describe


def _errors():
    """User-facing errors of the stages, shown as one line instead of a traceback."""
    from frugalft.checkpoint import CheckpointError
    from frugalft.models import LabelError, ModelError
    from frugalft.reflect.reflection import ReflectionError
    from frugalft.reflect.teachers import TeacherError

    # ImportError: an extra that an environment needs only for some of its games (ALFWorld's .tw-pddl ones)
    return (FileNotFoundError, ValueError, ImportError, CheckpointError, LabelError, ModelError, ReflectionError,
            TeacherError)


@app.command("data")
def data_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = RunDirOption,
             seed: int = SeedOption) -> None:
    """Generate the warm-up datasets (oracle trajectories, teacher reflections, negative examples)."""
    from frugalft.reflect.table import run_data

    cfg, run, seed = _setup(config, overrides, run_dir, seed, rollouts=False)
    try:
        out = run_data(cfg, run, seed, log=typer.echo)
    except _errors() as e:
        fail(str(e))
    typer.echo(f"datasets: {out}")


@app.command("warmup")
def warmup_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = RunDirOption,
               seed: int = SeedOption,
               variant: str = typer.Option("reflect", help="reflect, reflect_noneg or noreflect."),
               report: str = ReportToOption, restart: bool = RestartOption) -> None:
    """SFT warm-up of the reflection model and the policy (runs `data` first if needed)."""
    from frugalft.reflect.table import run_warmup, seed_dir
    from frugalft.reflect.warmup import VARIANTS
    from frugalft.runs import claim_run

    if variant not in VARIANTS:
        fail(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    cfg, run, seed = _setup(config, overrides, run_dir, seed, rollouts=False)
    try:
        claim_run(seed_dir(run, seed) / "warmup" / variant, restart)
        with _tracking(cfg, run, report):
            paths = run_warmup(cfg, run, seed, variant, log=typer.echo)
    except _errors() as e:
        fail(str(e))
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


def _method(method: str, rl_only: bool = False) -> str:
    from frugalft.reflect.table import ALL_METHODS, PLAN

    valid = [m for m in ALL_METHODS if PLAN[m][1]] if rl_only else list(ALL_METHODS)
    if method not in valid:
        fail(f"unknown method {method!r}; valid: {', '.join(valid)}")
    return method


@app.command("train")
def train_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = RunDirOption,
              seed: int = SeedOption,
              method: str = typer.Option("reflect_rl", help="rl, sft_rl_noreflect, reflect_rl_noneg, reflect_rl, reflect_rl_grpo."),
              workers: int = typer.Option(None, "--workers", "-w", min=0,
                                          help="Rollout workers as Ray actors (0: in this process; default: the "
                                               "config's rl.workers)."),
              ray_address: str = typer.Option(None, "--ray-address",
                                              help="A running Ray cluster (auto, ray://head:10001); default: "
                                                   "start a local one."),
              report: str = ReportToOption, restart: bool = RestartOption,
              ) -> None:
    """Online RL of the policy (reflection model frozen) from the method's warm-up; resumes a killed run."""
    from frugalft.distributed import ray_rollout
    from frugalft.parallel import setup as data_parallel
    from frugalft.reflect.table import PLAN, rl_config_for, run_warmup, seed_dir
    from frugalft.reflect.train import train
    from frugalft.runs import claim_run

    method = _method(method, rl_only=True)
    cfg, run, seed = _setup(config, overrides, run_dir, seed, workers, ray_address)
    try:
        dp = data_parallel(cfg.device)  # under accelerate launch: rank 0 prepares, the others wait
        if dp.is_main:
            claim_run(seed_dir(run, seed) / "rl" / method, restart)  # --restart: this method's RL only
        # (only rank 0 has a RunDir that logs: the other learner processes report nothing)
        with _tracking(cfg, run, report):
            variant = PLAN[method][0]
            if variant is not None and dp.is_main:
                run_warmup(cfg, run, seed, variant, log=typer.echo)
            dp.barrier()
            rl = rl_config_for(cfg, run, seed, method)
            out = seed_dir(run, seed) / "rl" / method
            # Where the episodes are played: this process (each learner process its share under accelerate
            # launch) or rl.workers Ray actors; the loop is the same either way.
            backend = ray_rollout.make_backend(rl, dp)
            try:
                result = train(rl, out, resume=True, backend=backend)
            finally:
                backend.close()
    except _errors() as e:
        fail(str(e))
    finally:
        _shutdown_ray()
    if dp.is_main:
        typer.echo(f"RL done: success {result.get('success', float('nan')):.3f}, {result.get('processes', 1)} "
                   f"learner process(es), {result.get('rollout_workers', 0)} rollout workers, "
                   f"checkpoint {result['checkpoint']}")


def _shutdown_ray() -> None:
    """Stop the local Ray cluster a run started (and leave a joined one), if Ray was used at all."""
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


@app.command("eval")
def eval_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = RunDirOption,
             seed: int = SeedOption,
             method: str = typer.Option("reflect_rl", help="Any table method (random, oracle, sft, rl, ...)."),
             split: str = typer.Option("valid", "--split",
                                       help="valid (the default: where settings are chosen) or test (read it "
                                            "once, for the final table)."),
             ) -> None:
    """Evaluate one method on a split (training it first if it is not yet), with 95% CIs."""
    from frugalft.distributed import ray_rollout
    from frugalft.reflect.table import eval_path, run_method

    method = _method(method)
    if split not in ("train", "valid", "test"):
        raise typer.BadParameter(f"--split must be train, valid or test, got {split!r}")
    cfg, run, seed = _setup(config, overrides, run_dir, seed)
    try:
        row = run_method(cfg, run, seed, method, log=typer.echo, split=split, make_backend=ray_rollout.make_backend)
    except _errors() as e:
        fail(str(e))
    finally:
        _shutdown_ray()
    typer.echo(f"{method}: success {100 * row['success']:.1f}% [{100 * row['success_ci_lo']:.1f}, "
               f"{100 * row['success_ci_hi']:.1f}] on the {split} split, return {row['return']:.3f} over "
               f"{row['episodes']} episodes ({eval_path(run, seed, method, split)})")


@app.command("compare")
def compare_cmd(run_a: Path = typer.Argument(..., help="Run directory of setting A (e.g. a probe's candidate)."),
                run_b: Path = typer.Argument(..., help="Run directory of setting B (e.g. the shipped setting)."),
                methods: list[str] = typer.Option(["reflect_rl"], "--method",
                                                  help="Method(s) to compare (repeat the option)."),
                split: str = typer.Option("valid", "--split", help="The evaluation split both runs were read on."),
                task_set: str | None = typer.Option(None, "--task-set",
                                                    help="An extra task set both runs played (`eval.extra`, "
                                                         "e.g. paper), instead of the split's own tasks."),
                against: str | None = typer.Option(None, "--against",
                                                   help="Another method of B to subtract (default: the same "
                                                        "method): rows of two tables split for time."),
                ) -> None:
    """A minus B, method by method, paired episode by episode over the seeds both ran, with a 95% hierarchical
    bootstrap interval: how a setting is chosen on valid between two run directories (or, with --against, how
    a row of one table compares with a row of another on the same seeds and tasks)."""
    from frugalft.reflect.table import TITLES, compare_runs

    where = f"{split} split" + (f", task set {task_set}" if task_set else "")
    lines = [f"A = {run_a}, B = {run_b}, {where}", "",
             "| method | seeds | A % | B % | A minus B, points [95% CI] | by seed |", "|---|---|---|---|---|---|"]
    other = _method(against) if against else None
    for method in methods:
        method = _method(method)
        try:
            c = compare_runs(run_a, run_b, method, split, task_set, method_b=other)
        except ValueError as e:
            fail(str(e))
        by_seed = " / ".join(f"{100 * d:+.1f}" for d in c.by_seed.values())
        title = TITLES[method] if other in (None, method) else f"{TITLES[method]} (A) minus {TITLES[other]} (B)"
        lines.append(f"| {title} | {len(c.seeds)} | {100 * c.success_a:.1f} | {100 * c.success_b:.1f} | "
                     f"{100 * c.difference:+.1f} [{100 * c.ci_lo:+.1f}, {100 * c.ci_hi:+.1f}] | {by_seed} |")
    typer.echo("\n".join(lines))


@app.command("times")
def times_cmd(run_dir: Path = typer.Argument(..., help="A run directory `rl table` (or `rl eval`) wrote."),
              split: str | None = typer.Option(None, "--split", help="Only this split's evaluations (default: all)."),
              ) -> None:
    """Where a table's time went: per seed, minutes of warm-ups, RL, evaluations and reflection quality, the
    seed's span, how many seed processes shared the machine meanwhile, and the run's minutes with a cell in
    progress (a table made in several sittings: their sum, not the gaps) (from the evaluation files)."""
    from frugalft.reflect.timing import times_report

    try:
        typer.echo(times_report(run_dir, split))
    except ValueError as e:
        fail(str(e))


@app.command("table")
def table_cmd(config: Path = ConfigOption, overrides: list[str] = SetOption, run_dir: Path = RunDirOption,
              report: str = ReportToOption,
              jobs: int = typer.Option(1, "--jobs", "-j", min=1,
                                       help="Play the seeds in this many processes at once, one thread each (a "
                                            "tiny model on a 2-core CPU: ~1.45x the throughput of one 2-thread "
                                            "process); the table is written when all are done."),
              bound_memory: bool = typer.Option(False, "--bound-memory",
                                                help="With --jobs: seed processes that keep their resident memory "
                                                     "from climbing under bf16 autocast (ALFWorld's reached 11-13 "
                                                     "GB each), at a cost in speed: 0.89x at 300-1,000-token "
                                                     "batches, 0.52x at 60-200 (frugalft.native_memory)."),
              ) -> None:
    """Every method x seed end to end: results.csv, table.md (95% CIs) and curves.png in the run directory."""
    import time

    from frugalft.distributed import ray_rollout
    from frugalft.reflect.table import run_table

    cfg, run, _ = _setup(config, overrides, run_dir, None)
    started = time.time()
    # With one seed too: a seed process runs at one thread, and a cell rerun alone should be the table's cell.
    in_processes = jobs > 1
    if bound_memory and not in_processes:
        fail("--bound-memory bounds the seed processes of --jobs N (N > 1): its settings are "
             "read when a process starts; for this one, set frugalft.native_memory.BOUNDS in its environment")
    if in_processes:
        _seeds_in_processes(config, overrides or [], run, report, cfg.all_seeds(), jobs,
                            {s: cfg.methods_of(s) for s in cfg.all_seeds()}, bound_memory)
    try:
        with _tracking(cfg, run, report):
            paths = run_table(cfg, run, log=typer.echo, started=started, make_backend=ray_rollout.make_backend)
    except _errors() as e:
        fail(str(e))
    finally:
        _shutdown_ray()
    typer.echo(Path(paths["markdown"]).read_text(encoding="utf-8"))


def _seeds_in_processes(config: Path | None, overrides: list[str], run: Path, report: str | None,
                        seeds: list[int], jobs: int, methods: dict[int, list[str]],
                        bound_memory: bool = False) -> None:
    """``rl table`` for one seed per child process (``OMP_NUM_THREADS=1``), ``jobs`` at a time; each child logs
    to ``<run>/seed-<S>/table.log``. Every cell a child finishes is on disk, so the parent's table only reads."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from frugalft.native_memory import bounded_environment

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env = bounded_environment(env) if bound_memory else env
    failed: list[str] = []

    def play(queue: list[int], width: int, last_try: bool) -> list[int]:
        """Run ``queue``'s seeds ``width`` at a time; return those SIGKILL ended (unless ``last_try``)."""
        running: list[tuple[int, Path, subprocess.Popen]] = []
        killed: list[int] = []
        while queue or running:
            while queue and len(running) < width:
                seed = queue.pop(0)
                log = run / f"seed-{seed}" / "table.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "frugalft.cli.main", "rl", "table", "--run-dir", str(run)]
                cmd += ["--config", str(config)] if config is not None else []
                cmd += [a for o in overrides for a in ("--set", o)] + ["--set", f"seeds=[{seed}]"]
                # the seed's own rows only (an extra seed runs the headline methods, not every row)
                cmd += ["--set", "extra_seeds={}", "--set", f"methods=[{','.join(methods[seed])}]"]
                cmd += ["--report-to", report] if report else []
                typer.echo(f"seed {seed}: {'resumed alone' if last_try else 'started'} (log: {log})")
                with open(log, "a", encoding="utf-8") as out:
                    running.append((seed, log, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)))
            for item in list(running):
                seed, log, proc = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                code = proc.returncode
                if code == 0:
                    typer.echo(f"seed {seed}: done")
                elif code == -signal.SIGKILL and not last_try:  # a SIGTERM or Ctrl-C is someone's wish to stop
                    killed.append(seed)
                    typer.echo(f"seed {seed}: killed by signal 9 (SIGKILL, most often the out-of-memory killer); "
                               "it resumes alone after the others")
                else:
                    typer.echo(f"seed {seed}: FAILED ({f'killed by signal {-code}' if code < 0 else f'exit {code}'})")
                    failed.append(f"seed {seed} (see {log})")
            if running:
                time.sleep(2)  # children run for minutes: polling is cheap
        return killed

    # A seed process that SIGKILL ended (the out-of-memory killer, most often: on ALFWorld a seed's process
    # grows to 11-13 GB, two of them near 24 GB) resumes once, alone: its finished cells are on disk.
    killed = play(list(seeds), jobs, last_try=False)
    play(killed, 1, last_try=True)
    if failed:
        fail("rl table: " + ", ".join(failed) + " failed; rerun the same command to resume")
