"""The `file` source type: a JSON export read from disk (docs/reference.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from orgsync.config import SourceConfig
from orgsync.connectors import Hooks, SourceConnector

if TYPE_CHECKING:
    # Types only: a connector's module is read to check a configuration (`validate
    # --offline`), which must not pay for the ports' models (bench/startup.py).
    from orgsync.core.ports import Source


class FileSourceConfig(SourceConfig):
    type: Literal["file"]
    path: Path

    def anchored(self, base_dir: Path) -> FileSourceConfig:
        if self.path.is_absolute():
            return self
        return self.model_copy(update={"path": base_dir / self.path})


def build(config: FileSourceConfig, environ: Mapping[str, str], hooks: Hooks) -> Source:
    from orgsync.sources.file import FileSource

    return FileSource(config.path)


CONNECTOR = SourceConnector(
    type="file",
    settings=FileSourceConfig,
    build=build,
    reads_offline=True,
    summary="a JSON export on disk",
)
