"""Entry point: ``frugalft <command>``. Heavy imports (torch, transformers) happen inside commands."""

from __future__ import annotations

import typer

from frugalft.cli.options import check_device, fail

app = typer.Typer(
    name="frugalft",
    help="Fine-tune language models frugally: experimental design for SFT labels, and Reflect-RL for text agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from frugalft import __version__

        typer.echo(f"frugalft {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="Show transformers' and huggingface_hub's progress bars and warnings."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print frugalft's version and exit."),
) -> None:
    if verbose:
        import os

        # An environment variable, read at the first model load (frugalft.models.registry), so that worker
        # processes inherit it and this module need not import transformers.
        os.environ["FRUGALFT_VERBOSE"] = "1"


@app.command("models")
def models_cmd() -> None:
    """List the embedded models (all offline) and what they are."""
    from rich.console import Console
    from rich.table import Table

    from frugalft.models import EMBEDDED

    table = Table(title="embedded models (any hub id or local directory works too)")
    table.add_column("name", style="bold")
    table.add_column("what it is")
    for m in EMBEDDED.values():
        table.add_row(m.name, m.about)
    Console().print(table)


@app.command("generate")
def generate_cmd(
    prompt: str = typer.Argument(..., help="Text to continue."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Embedded name, local directory or hub id."),
    max_new_tokens: int = typer.Option(32, help="Cap on generated tokens."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples."),
    chat: bool = typer.Option(False, help="Wrap the prompt in the tokenizer's chat template."),
    seed: int = typer.Option(0, help="Seed for sampling (and for a tiny model's init)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16."),
) -> None:
    """Continue a prompt with a model: a quick check that a model loads and speaks."""
    import torch

    from frugalft.models import ModelError, load_model
    from frugalft.seeding import seed_everything

    if max_new_tokens < 1:
        fail("--max-new-tokens must be at least 1")
    check_device(device)
    seed_everything(seed)
    try:
        lm, tok = load_model(model, device=device, dtype=dtype, seed=seed)
    except ModelError as e:
        fail(str(e))
    if chat:
        if tok.chat_template is None:
            fail(f"{model} has no chat template; drop --chat")
        enc = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
    else:
        enc = tok(prompt, return_tensors="pt")
    enc = {k: v.to(lm.device) for k, v in enc.items()}
    with torch.no_grad():
        out = lm.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
        )
    new = out[0, enc["input_ids"].shape[1]:]
    text = tok.decode(new, skip_special_tokens=True)
    typer.echo(prompt + text if not chat else text)


def _add_subapps() -> None:
    """Sub-apps live beside this file, one module per concern; each exposes ``app`` (a Typer)."""
    import importlib

    for module, name in SUBAPPS:
        sub = importlib.import_module(f"frugalft.cli.{module}")
        if name is None:  # the module registers plain commands on the root app
            sub.register(app)
        else:
            app.add_typer(sub.app, name=name)


# (module, sub-command name or None for top-level commands). Order is the order of `frugalft --help`.
SUBAPPS: list[tuple[str, str | None]] = [
    ("design", None),
    ("env", "env"),
    ("rl", "rl"),
    ("quickstart", None),
    ("scale", "scale"),
    ("sft", None),
    ("pool", "pool"),
    ("bench", None),
]


def main() -> None:
    _add_subapps()
    app()


if __name__ == "__main__":
    main()
