"""SpecError: a mistake in a spec, reported with file, line, column and a caret."""

from __future__ import annotations

from ..errors import VggspecError
from .ast import Loc


class SpecError(VggspecError):
    """A user's mistake in a spec. `str(err)` is the full message, ready to print."""

    def __init__(
        self,
        message: str,
        loc: Loc | None = None,
        source: str | None = None,
        filename: str | None = None,
        expected: str | None = None,
    ):
        self.message = message
        self.loc = loc
        self.source = source
        self.filename = filename
        self.expected = expected
        super().__init__(self.render())

    def with_source(self, source: str | None, filename: str | None) -> SpecError:
        """The same error, told against this text and file name."""
        return SpecError(
            self.message,
            self.loc,
            source if self.source is None else self.source,
            filename or self.filename,
            self.expected,
        )

    def render(self) -> str:
        where = self.filename or "<spec>"
        if self.loc is not None:
            where += f":{self.loc.line}:{self.loc.column}"
        lines = [f"{where}: error: {self.message}"]
        excerpt = self._excerpt()
        if excerpt:
            lines.extend(excerpt)
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        return "\n".join(lines)

    def _excerpt(self) -> list[str]:
        if self.loc is None or self.source is None:
            return []
        text_lines = self.source.split("\n")
        if not 1 <= self.loc.line <= len(text_lines):
            return []
        line = text_lines[self.loc.line - 1].rstrip("\r")
        if len(line) > 200:  # a garbage file can have one enormous line
            start = max(0, self.loc.column - 60)
            line = line[start : start + 120]
            column = self.loc.column - start
        else:
            column = self.loc.column
        width = 1
        if self.loc.end_line == self.loc.line:
            width = max(1, self.loc.end_column - self.loc.column)
        width = min(width, max(1, len(line) - column + 1))
        printable = "".join(c if c.isprintable() or c == "\t" else "?" for c in line)
        pad = "".join("\t" if c == "\t" else " " for c in printable[: column - 1])
        return [f"  {printable}", f"  {pad}{'^' * width}"]
