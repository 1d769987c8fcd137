"""orgsync keeps SaaS organizations in step with a company's identity provider."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType

__version__ = "0.1.0"


class _StructlogWithoutRich:
    """Keeps `import structlog` from importing rich, which only the progress bars use.

    structlog imports its development console module on import, and that module imports
    rich whenever rich is installed: a third of a command's start-up, paid by commands
    that draw no bar (`validate`, `status`, the daemon). orgsync's renderers name their
    exception formatter, so structlog renders the same with or without rich. Only the
    import that structlog's console module makes is refused; `orgsync.progress` and
    anyone else get rich when they import it.
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        del path, target
        if name != "rich":
            return None
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__") == "structlog.dev":
                raise ImportError("orgsync: structlog's console renderer runs without rich")
            frame = frame.f_back
        return None


if not any(isinstance(f, _StructlogWithoutRich) for f in sys.meta_path):
    sys.meta_path.insert(0, _StructlogWithoutRich())
