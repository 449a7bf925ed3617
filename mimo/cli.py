"""The `mimo` command: one entry point, each subcommand a typed function living in its own module.

Subcommands are registered here and nowhere else, so `mimo --help` is the full map of what mimo does.
"""

import typer

app = typer.Typer(
    name="mimo",
    help="MiMo reasoning LLMs: model, training, RL, inference, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """MiMo reasoning LLMs: model, training, RL, inference, evaluation."""


def _register() -> None:
    # In data-flow order: model -> train -> rl -> inference -> eval. Imports live here so that importing
    # mimo.cli stays cheap for tools that only need `app`.
    from mimo.checkpoint import info
    from mimo.eval.harness import eval_command
    from mimo.quickstart import quickstart
    from mimo.rl.train import rl
    from mimo.serve.chat import chat, generate
    from mimo.serve.server import serve
    from mimo.train.plot import plot
    from mimo.train.pretrain import pretrain
    from mimo.train.sft import sft

    app.command("quickstart")(quickstart)
    app.command("info")(info)
    app.command("pretrain")(pretrain)
    app.command("sft")(sft)
    app.command("rl")(rl)
    app.command("plot")(plot)
    app.command("serve")(serve)
    app.command("generate")(generate)
    app.command("chat")(chat)
    app.command("eval")(eval_command)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
