"""A real headless Chromium (Debian: `chromium`, installed by scripts/setup-system) for
tests that check what a person sees, and the page's DOM as the browser built it.

`--dump-dom` prints the DOM after the page has loaded and any script it ran has run, so a
script that executed would show in it; the browser's console (CSP violations included)
goes to stderr with `--enable-logging=stderr`. Each call is one fresh browser process with
a profile of its own under the test's folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest


def chromium() -> str:
    """The browser's path; fails (CI, scripts/test) or skips (a bare pytest) without it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (Debian: chromium; scripts/setup-system installs it)"
        if os.environ.get("CI") == "true" or os.environ.get("ORGSYNC_REQUIRE_SERVERS"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Browser:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.binary = chromium()
        self.console = ""
        """The browser's log of its last call (console messages, CSP violations)."""

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        profile = self.folder / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                self.binary,
                "--headless",
                # Root in a container has no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--enable-logging=stderr",
                "--v=0",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "HOME": str(self.folder)},
        )
        self.console = result.stderr
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def dom(self, url: str) -> str:
        """The page's DOM, serialised after load."""
        return self._run("--dump-dom", url).stdout

    def screenshot(self, url: str, path: Path, *, width: int = 1280, height: int = 960) -> Path:
        self._run(f"--window-size={width},{height}", f"--screenshot={path}", url)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        return path

    def csp_violations(self) -> list[str]:
        return [line for line in self.console.splitlines() if "Content Security Policy" in line]


class Dom(HTMLParser):
    """The elements and the text of a page, as an HTML parser sees them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.texts: list[str] = []
        self._in_title = False
        self.title = ""
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)
