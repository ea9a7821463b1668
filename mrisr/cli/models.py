"""(placeholder: this command is being written)"""

NAME = "models"


def command() -> None:
    raise SystemExit("mrisr models: not available yet")
