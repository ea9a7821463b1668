"""(placeholder: this command is being written)"""

NAME = "evaluate"


def command() -> None:
    raise SystemExit("mrisr evaluate: not available yet")
