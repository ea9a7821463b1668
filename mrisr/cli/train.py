"""(placeholder: this command is being written)"""

NAME = "train"


def command() -> None:
    raise SystemExit("mrisr train: not available yet")
