"The glue that builds the documentation site without Quarto: what nbdev and smalldocs lack, one concern per module."

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def say(msg: str) -> None:
    print(f"build_docs: {msg}", file=sys.stderr, flush=True)
