"""Fixed-width text tables as vggspec prints them: the compile report, the evaluation table."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> list[str]:
    """The header, a rule of dashes and the rows, columns two spaces apart and as wide as
    their widest cell; the columns numbered in `right` are right-aligned (numbers)."""
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]

    def line(row) -> str:
        cells = [
            cell.rjust(width) if c in right else cell.ljust(width)
            for c, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)]
