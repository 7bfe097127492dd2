"""What a lake sink worker did, and several workers' figures as one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field


@dataclass
class SinkStats:
    """What one sink run did."""

    messages: int = 0
    rows_written: int = 0
    duplicates: int = 0
    invalid: int = 0
    files: int = 0
    chunks: int = 0
    rolled_back_files: int = 0
    rolled_forward_files: int = 0
    fenced_chunks: int = 0
    partitions_taken: int = 0
    partitions_released: int = 0
    offsets_skipped: int = 0  # deleted by retention before they were read (only with accept_data_loss)
    elapsed_s: float = 0.0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def merge_stats(parts: Iterable[SinkStats]) -> SinkStats:
    """The stats of several workers as one (counts summed, the longest elapsed time)."""
    out = SinkStats()
    for part in parts:
        for name, value in asdict(part).items():
            if name == "invalid_by_reason":
                for code, count in value.items():
                    out.invalid_by_reason[code] = out.invalid_by_reason.get(code, 0) + count
            elif name == "elapsed_s":
                out.elapsed_s = max(out.elapsed_s, value)
            else:
                setattr(out, name, getattr(out, name) + value)
    return out
