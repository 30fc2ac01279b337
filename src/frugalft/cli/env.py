"""``frugalft env``: list the text environments, play one in the terminal, measure random and oracle play."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from frugalft.cli.options import fail

app = typer.Typer(help="Text environments for Reflect-RL: list, play, stats.", no_args_is_help=True)

ABOUT = {
    "DangerousTaxi": ("Taxi-v3 in ASCII; a wasted move crashes (-10, episode over). Levels: 0 pickup, "
                      "1 dropoff, 2 full (= --mode)."),
    "AutoExplore": ("Name the file of a repository that answers a question (cd/cat/id). Levels: answer depth "
                    "<=1, 2, >=3. Built-in repos or --repo PATH."),
    "TextWorld": "TextWorld's generated games (--challenge); levels = generator difficulty settings.",
    "ALFWorld": "ALFWorld household games (pick_and_place_simple); needs its data: --data PATH or $ALFWORLD_DATA.",
}

SplitOpt = typer.Option("test", "--split", help="train, valid or test.")
LevelOpt = typer.Option(None, "--level", "-l", help="One curriculum level (default: all).")
HorizonOpt = typer.Option(15, "--horizon", help="Steps per episode.")
ModeOpt = typer.Option(None, "--mode", help="DangerousTaxi: pickup, dropoff or full.")
RepoOpt = typer.Option(None, "--repo", help="AutoExplore: build tasks from this folder (repeatable).")
HideOpt = typer.Option(0.0, "--hide-prob", help="AutoExplore: hide unrelated entries (train split only).")
TestTasksOpt = typer.Option(None, "--test-tasks", help="AutoExplore: all, unseen_repos or held_out (test split).")
ChallengeOpt = typer.Option(None, "--challenge", help="TextWorld: tw-coin_collector, tw-treasure_hunter, tw-simple.")
GamesOpt = typer.Option(None, "--games",
                        help="TextWorld: games per level in each split (train,test or train,valid,test), e.g. 20,5,10.")
DataOpt = typer.Option(None, "--data", help="ALFWorld: its data folder (default $ALFWORLD_DATA).")


def build_env(name: str, split: str, level: int | None, horizon: int, mode: str | None, repo: list[Path] | None,
              hide_prob: float, challenge: str | None, games: str | None, data: Path | None,
              test_tasks: str | None = None):
    """Make the environment, turning every configuration mistake into a one-line error."""
    import frugalft.envs as E

    if name not in E.ENV_IDS:
        fail(f"unknown environment {name!r}; known: {', '.join(E.ENV_IDS)}")
    specific = {"mode": (mode, "DangerousTaxi"), "repo": (repo, "AutoExplore"),
                "hide-prob": (hide_prob or None, "AutoExplore"), "test-tasks": (test_tasks, "AutoExplore"),
                "challenge": (challenge, "TextWorld"),
                "games": (games, "TextWorld"), "data": (data, "ALFWorld")}
    for opt, (value, owner) in specific.items():
        if value and owner != name:
            fail(f"--{opt} is for {owner}, not {name}")
    kwargs: dict = {"split": split, "level": level, "horizon": horizon}
    if name == "DangerousTaxi" and mode:
        kwargs["mode"] = mode
    if name == "AutoExplore":
        if repo:
            kwargs["repos"] = [str(p) for p in repo]
        kwargs["hide_prob"] = hide_prob
        if test_tasks:
            kwargs["test_tasks"] = test_tasks
    if name == "TextWorld":
        if challenge:
            kwargs["challenge"] = challenge
        if games:
            try:
                counts = [int(x) for x in games.split(",")]
                if len(counts) not in (2, 3):
                    raise ValueError
            except ValueError:
                fail(f"--games must be 'TRAIN,TEST' or 'TRAIN,VALID,TEST' integers, got {games!r}")
            kwargs.update(n_train=counts[0], n_test=counts[-1], **({"n_valid": counts[1]} if len(counts) == 3 else {}))
    if name == "ALFWorld" and data:
        kwargs["data_path"] = str(data)
    try:
        return E.make(name, **kwargs)
    except (ValueError, FileNotFoundError, ImportError) as e:
        fail(str(e))


@app.command("list")
def list_cmd() -> None:
    """The registered environments and what they are."""
    from rich.console import Console
    from rich.table import Table

    import frugalft.envs as E

    table = Table(title="text environments (gymnasium ids; `import frugalft.envs` registers them)")
    table.add_column("name", style="bold")
    table.add_column("gymnasium id")
    table.add_column("what it is")
    for name, env_id in E.ENV_IDS.items():
        table.add_row(name, env_id, ABOUT[name])
    Console().print(table)


@app.command("play")
def play_cmd(
    name: str = typer.Argument(..., help="DangerousTaxi, AutoExplore, TextWorld or ALFWorld."),
    split: str = SplitOpt, level: int | None = LevelOpt, horizon: int = HorizonOpt,
    seed: int = typer.Option(0, help="Picks the task (and any randomness) deterministically."),
    task_id: str | None = typer.Option(None, "--task-id", help="Play this task."),
    hint: bool = typer.Option(False, help="Show the oracle's action at each step."),
    mode: str | None = ModeOpt, repo: list[Path] | None = RepoOpt, hide_prob: float = HideOpt,
    challenge: str | None = ChallengeOpt, games: str | None = GamesOpt, data: Path | None = DataOpt,
) -> None:
    """Play in the terminal: read the state, type the number of an action (q quits)."""
    env = build_env(name, split, level, horizon, mode, repo, hide_prob, challenge, games, data)
    try:
        obs, info = env.reset(seed=seed, options={"task_id": task_id} if task_id else None)
    except ValueError as e:
        fail(str(e))
    total = 0.0
    while True:
        typer.echo(f"\n{'=' * 30} step {info['step']} of {horizon} {'=' * 30}\n{obs}\n\nActions:")
        for i, a in enumerate(info["actions"]):
            typer.echo(f"  {i}. {a}")
        if hint:
            typer.echo(f"(oracle: {env.oracle_action()})")
        while True:
            typer.echo("Your choice (number, q to quit): ", nl=False)
            line = sys.stdin.readline()
            if not line or line.strip().lower() in ("q", "quit"):
                typer.echo("\nbye")
                raise typer.Exit(0)
            choice = line.strip()
            if choice.isdigit() and int(choice) < len(info["actions"]):
                break
            typer.echo(f"type a number from 0 to {len(info['actions']) - 1}")
        obs, reward, term, trunc, info = env.step(int(choice))
        total += reward
        typer.echo(f"reward {reward:+g}")
        if term or trunc:
            typer.echo(f"\n{info['parts']['last_result']}\n\n"
                       f"{'SUCCESS' if info['success'] else 'FAILED'}: return {total:+g} in {info['step']} steps")
            return


@app.command("stats")
def stats_cmd(
    name: str = typer.Argument(..., help="DangerousTaxi, AutoExplore, TextWorld or ALFWorld."),
    split: str = SplitOpt, level: int | None = LevelOpt, horizon: int = HorizonOpt,
    random_episodes: int = typer.Option(5, help="Random-policy episodes per task."),
    seed: int = typer.Option(0, help="Seed of the random policy."),
    json_out: Path | None = typer.Option(None, "--out", "-o", "--json",
                                         help="Also write the figures to this JSON file (--json: the old spelling)."),
    mode: str | None = ModeOpt, repo: list[Path] | None = RepoOpt, hide_prob: float = HideOpt,
    test_tasks: str | None = TestTasksOpt,
    challenge: str | None = ChallengeOpt, games: str | None = GamesOpt, data: Path | None = DataOpt,
) -> None:
    """Tasks per split and level, and the success rates of the random and the oracle policy on a split."""
    from rich.console import Console
    from rich.table import Table

    from frugalft.atomic import write_json
    from frugalft.envs.stats import success_table
    from frugalft.runs import progress

    env = build_env(name, split, level, horizon, mode, repo, hide_prob, challenge, games, data, test_tasks)
    counts = Table(title=f"{name}: tasks per split and level")
    counts.add_column("level")
    for sp in ("train", "valid", "test"):
        counts.add_column(sp, justify="right")
    levels = [level] if level is not None else env.levels
    for lv in levels:
        counts.add_row(str(lv), *(str(len(env.task_ids(sp, lv))) for sp in ("train", "valid", "test")))
    console = Console()
    console.print(counts)
    rows = success_table(env, split=split, random_episodes=random_episodes, seed=seed, levels=levels,
                         progress=lambda it, desc: progress(it, desc))
    table = Table(title=f"{name} {split} split: success rate (oracle: 1 episode per task; random: "
                        f"{random_episodes} per task, seed {seed})")
    for col in ("level", "tasks", "oracle success", "oracle return", "oracle steps", "random success",
                "random return"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["level"]), str(r["tasks"]), f"{r['oracle_success']:.1%}", f"{r['oracle_return']:+.2f}",
                      f"{r['oracle_steps']:.1f}", f"{r['random_success']:.1%}", f"{r['random_return']:+.2f}")
    console.print(table)
    if json_out:
        write_json(json_out, {"env": name, "split": split, "horizon": horizon, "seed": seed,
                              "random_episodes": random_episodes, "levels": rows})


@app.command("make-alfworld")
def make_alfworld_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write train/, valid_seen/, valid_unseen/ into."),
    train: int = typer.Option(100, "--train", help="Train games."),
    valid: int = typer.Option(20, "--valid", help="valid_seen games (seen scenes and goal pairs)."),
    test: int = typer.Option(20, "--test", help="valid_unseen games (unseen scenes and goal pairs)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same games."),
) -> None:
    """Generate ALFWorld pick_and_place_simple games from the alfworld wheel's engine files (play them with
    --data OUT). Generated scenes: scores on them are not comparable to published ALFWorld numbers."""
    from frugalft.envs.alfworld_games import generate_alfworld_games

    try:
        manifest = generate_alfworld_games(out, train, valid, test, seed)
    except (ImportError, ValueError) as e:
        fail(str(e))
    counts = ", ".join(f"{len(g)} {sp}" for sp, g in manifest["splits"].items())
    typer.echo(f"ALFWorld games in {out}: {counts} (manifest: {out / 'generation.json'})")
