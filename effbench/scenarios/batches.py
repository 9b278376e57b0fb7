"""The batch shapes of the load scenarios: the sizes a server worker's batcher pads a gathered batch to, and the
shapes an offline pool is worked through in. The load itself comes from MLPerf LoadGen (`scenarios.loadgen`),
which replaced the hand-written generator and peak search that lived here."""
from __future__ import annotations

from collections.abc import Sequence


# ------------------------------------------------------------------------------ batch shapes
def padded_size(k: int, sizes: Sequence[int]) -> int:
    """The smallest bound batch size that holds k queries (a dynamic batcher pads up to it)."""
    return min(s for s in sizes if s >= k)


def batcher_sizes(max_batch: int) -> list[int]:
    """The batch shapes a dynamic batcher of `max_batch` runs: powers of two below it, and it."""
    return sorted({*(2 ** i for i in range(max(1, max_batch).bit_length()) if 2 ** i < max_batch), max_batch})


def pool_sizes(queries: int, batch_size: int) -> list[int]:
    """The batch shapes an offline pass over `queries` needs: the batch size and the remainder."""
    return sorted({min(batch_size, queries), *([queries % batch_size] if queries % batch_size else [])})


