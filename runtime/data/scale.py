"""Training scale S (Sect. 3.1): a fixed smallest side, or a jittered range [S_min, S_max]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TrainScale:
    """S_min ≤ S_max; a fixed S has S_min = S_max."""

    lo: int
    hi: int
    # Given as [S_min, S_max] (a config may write [256, 256]): how the config records it.
    listed: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def parse(cls, value: TrainScale | int | Sequence[int]) -> TrainScale:
        """S given as an int, as [S_min, S_max] (a config, the saved metadata), or already
        a TrainScale. Raises ValueError when it is none of these or S_min > S_max or < 1."""
        if isinstance(value, TrainScale):
            return value
        listed = not isinstance(value, int)
        if isinstance(value, int) and not isinstance(value, bool):
            lo = hi = value
        else:
            try:
                lo, hi = (int(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"training scale must be S or [S_min, S_max], got {value!r}"
                ) from None
        if not 1 <= lo <= hi:
            raise ValueError(
                f"training scale must be S >= 1 or [S_min, S_max] with S_min <= S_max, "
                f"got {value!r}"
            )
        return cls(lo, hi, listed)

    @classmethod
    def read(cls, value) -> TrainScale | None:
        """S from saved metadata, or None when it is absent or not a scale."""
        try:
            return None if value is None else cls.parse(value)
        except ValueError:
            return None

    @property
    def jittered(self) -> bool:
        return self.lo != self.hi

    @property
    def single(self) -> int:
        """Table 3's single test scale: Q = S for a fixed S, (S_min + S_max)/2 for a
        jittered one (also the scale of the centre crops validated during training)."""
        return (self.lo + self.hi) // 2

    def to_json(self) -> int | list[int]:
        """As the saved metadata writes it: S, or [S_min, S_max]."""
        return [self.lo, self.hi] if self.jittered else self.lo

    @property
    def as_given(self) -> int | list[int]:
        """As the config gave it (and its record keeps it): S, or [S_min, S_max]."""
        return [self.lo, self.hi] if self.jittered or self.listed else self.lo

    def __str__(self) -> str:
        return f"[{self.lo};{self.hi}]" if self.jittered else str(self.lo)
