"""Shared by the benchmark scripts: write a result block into ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, command: str, body: str, intro: str = "") -> None:
    """Replace the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` with the
    command and ``body``; append it (after ``intro``) when the file has no such block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\nCommand: `{command}`\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + (intro + "\n" if intro else "") + block + "\n"
    path.write_text(text)
