"""The one place where modgs's typed errors become one line on stderr and an exit code.

Used by the modgs-* entry points and by the two objects through which nerfstudio's ns-* commands
enter modgs (ModgsTrainer for ns-train, ModgsPipeline for every command that builds a run)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from modgs_ns.scene.errors import ModgsError


@contextmanager
def one_line_errors(prog: str, also: tuple[type[BaseException], ...] = ()):
    """Run the body; a ModgsError (or one of `also`) prints `prog: error: message` and exits with 1."""
    try:
        yield
    except (ModgsError, *also) as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
