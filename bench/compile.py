"""How long compiling a spec takes (parse + every pass), against parsing alone.

Run: python bench/compile.py [specs/E.vgg]. Prints the median over many runs; the
target is < 10 ms for E after import. Parsing alone, measured in the same run, is
the reference: the ratio says what the IR and its passes cost on top of lark.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vggspec.compiler import compile_spec, dense_graph, parse, read_spec_text

BUDGET_MS = 10.0


def median_ms(fn, repeat: int = 200) -> float:
    fn()  # warm: lark builds its parser tables on first use
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "specs/E.vgg"
    text = read_spec_text(path)
    parse_ms = median_ms(lambda: parse(text))
    compile_ms = median_ms(lambda: compile_spec(parse(text)))
    dense_ms = median_ms(lambda: dense_graph(compile_spec(parse(text)), (512, 512)))
    print(f"{path}: parse {parse_ms:.2f} ms (reference)")
    print(
        f"  parse + all passes   {compile_ms:.2f} ms  = {compile_ms / parse_ms:.1f}x parse, "
        f"{compile_ms / BUDGET_MS:.2f} of the {BUDGET_MS:.0f} ms budget"
    )
    print(f"  ... + densify @512   {dense_ms:.2f} ms  = {dense_ms / parse_ms:.1f}x parse")


if __name__ == "__main__":
    main()
