"""``frugalft select``, ``frugalft export`` and ``frugalft merge``: choose prompts to label, hand them to
annotators, and take the answers back."""

from __future__ import annotations

from pathlib import Path

import typer

from frugalft.cli.options import fail, out_option

PoolArg = typer.Argument(..., help="Pool: .jsonl, .csv, .parquet, or a datasets directory (save_to_disk).")
IdField = typer.Option("id", "--id-field", help="Field holding a unique id per prompt ('' numbers the rows).")
PromptField = typer.Option("prompt", "--prompt-field", help="Field holding the prompt text.")
TaskField = typer.Option("task", "--task-field", help="Field holding the task label (optional).")
ResponseField = typer.Option("response", "--response-field", help="Field holding a reference response (optional).")
SplitOption = typer.Option(None, "--split", help="Split of a saved DatasetDict.")


def _load(pool: Path, id_field: str, prompt_field: str, task_field: str, response_field: str, split: str | None):
    from frugalft.design import DesignError, load_pool

    try:
        return load_pool(pool, id_field=id_field or None, prompt_field=prompt_field, task_field=task_field or None,
                         response_field=response_field or None, split=split)
    except DesignError as e:
        fail(str(e))


def _parse_params(items: list[str] | None) -> dict:
    """``--set key=value`` strategy parameters, read as the config overrides are (YAML 1.2: ``1e-4`` is a float)."""
    from frugalft.config import ConfigError, parse_override

    params = {}
    for item in items or []:
        try:
            key, value = parse_override(item)
        except ConfigError as e:
            fail(f"--set: {e}")
        params[key.replace("-", "_")] = value
    return params


def select_cmd(
    pool: Path = typer.Argument(None, help="Pool: .jsonl, .csv, .parquet, or a datasets directory (save_to_disk)."),
    budget: int = typer.Option(None, "--budget", "-b", help="How many prompts to choose."),
    strategy: str = typer.Option("facility-location", "--strategy", help="A strategy name (see --list)."),
    out: Path = out_option(None, "Selection file to write (.jsonl)."),
    seed: int = typer.Option(0, help="Seed (random picks, first k-center, sigma subsample)."),
    model: str = typer.Option(None, "--model", "-m",
                              help="Base model for uncertainty, task weighting and features=lm (e.g. tiny)."),
    param: list[str] = typer.Option(None, "--set", "-s", "--param", "-p",
                                    help="Strategy parameter key=value (see --list), e.g. --set sigma=0.5 --set "
                                         "optimizer=knn; values are YAML (1e-4 is a float). --param/-p: the old "
                                         "spelling, deprecated."),
    plot: Path = typer.Option(None, help="Gains plot PNG (default: beside --out for greedy strategies)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features instead of using the cache."),
    list_: bool = typer.Option(False, "--list", help="List the strategies and their parameters, then exit."),
    id_field: str = IdField,
    prompt_field: str = PromptField,
    task_field: str = TaskField,
    response_field: str = ResponseField,
    split: str = SplitOption,
) -> None:
    """Choose BUDGET prompts of POOL to annotate, once, with the base model only."""
    from frugalft.design import STRATEGIES, DesignError, select_prompts

    if list_:
        import frugalft.design.strategies  # noqa: F401

        for s in STRATEGIES.values():
            defaults = " ".join(f"{k}={v}" for k, v in s.defaults.items())
            typer.echo(f"{s.name:24s} {s.about}" + (f"\n{'':24s} params: {defaults}" if defaults else ""))
        return
    if pool is None or budget is None or out is None:
        fail("POOL, --budget and --out are required (or --list)")
    params = _parse_params(param)  # before the pool loads: a typo fails at once
    p = _load(pool, id_field, prompt_field, task_field, response_field, split)
    for line in p.report().lines():
        typer.echo(f"pool: {line}")
    try:
        sel = select_prompts(p, strategy, budget, seed=seed, params=params, model=model,
                             cache=not no_cache)
    except DesignError as e:
        fail(str(e))
    sel.save(out)
    typer.echo(f"wrote {out}: {len(sel)} prompts by {strategy}")
    if "sigma" in sel.extras:
        typer.echo(f"sigma = {sel.extras['sigma']:.4g}")
    if "quota" in sel.extras:
        typer.echo("per task: " + ", ".join(f"{k} {v}" for k, v in sel.extras["quota"].items() if v))
    if plot is not None or "gains" in sel.extras:
        from frugalft.design.plots import gains_plot

        plot = plot or out.with_suffix(".gains.png")
        gains_plot(sel, plot)
        typer.echo(f"wrote {plot}")


def export_cmd(
    pool: Path = PoolArg,
    selection: Path = typer.Argument(..., help="Selection file written by `frugalft select`."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="File for annotators: .jsonl, .csv/.tsv (cells a spreadsheet would evaluate get "
                                  "a leading ') or .xlsx (text cells; needs openpyxl)."),
    id_field: str = IdField,
    prompt_field: str = PromptField,
    task_field: str = TaskField,
    split: str = SplitOption,
) -> None:
    """Write the selected prompts for annotators, with an empty `response` column to fill in.

    CSV/TSV cells that start with = + - @ tab, carriage return or ' get a leading ' so that a spreadsheet shows
    them as text; `merge` takes exactly that ' off again (docs/selection.md)."""
    from frugalft.design import DesignError, Selection
    from frugalft.design.annotate import export_for_annotation

    p = _load(pool, id_field, prompt_field, task_field, "", split)
    try:
        n = export_for_annotation(p, Selection.load(selection), out)
    except (DesignError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"wrote {out}: {n} prompts to annotate")


def merge_cmd(
    pool: Path = PoolArg,
    selection: Path = typer.Argument(..., help="Selection file written by `frugalft select`."),
    answers: Path = typer.Argument(..., help="The annotators' file (.jsonl, .csv, .tsv or .xlsx, as exported, "
                                             "answers filled); the export's ' guard is taken off."),
    out: Path = typer.Option(..., "--out", "-o", help="Training file to write (.jsonl, one row per answer)."),
    format_: str = typer.Option("prompt-completion", "--format",
                                help="prompt-completion: {id, prompt, completion, task}; messages: {id, messages: "
                                     "[user, assistant], task}. TRL's SFTTrainer, datasets and `frugalft sft` "
                                     "read either as it is."),
    answer_field: str = typer.Option("response", help="Field of ANSWERS holding the answer."),
    allow_missing: bool = typer.Option(False, help="Leave out unanswered prompts instead of failing."),
    id_field: str = IdField,
    prompt_field: str = PromptField,
    task_field: str = TaskField,
    split: str = SplitOption,
) -> None:
    """Merge annotators' answers back into training rows for TRL's SFTTrainer or `frugalft sft`, with checks.

    e.g. frugalft merge pool.jsonl sel.jsonl to_annotate.csv --out train.jsonl [--format messages]"""
    from frugalft.design import DesignError, Selection
    from frugalft.design.annotate import MERGE_FORMATS, merge_answers

    if format_ not in MERGE_FORMATS:  # before loading a pool that may be large
        fail(f"--format must be {' or '.join(MERGE_FORMATS)}, not {format_!r}")
    p = _load(pool, id_field, prompt_field, task_field, "", split)
    try:
        counts = merge_answers(p, Selection.load(selection), answers, out, answer_field, allow_missing, format_)
    except (DesignError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"wrote {out}: {counts['merged']} answered prompts" +
               (f" ({counts['missing']} left out, unanswered)" if counts["missing"] else ""))


def register(app: typer.Typer) -> None:
    app.command("select")(select_cmd)
    app.command("export")(export_cmd)
    app.command("merge")(merge_cmd)
