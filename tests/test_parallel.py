"""The worker pool: order kept, and a worker that dies costs only its own item."""

from __future__ import annotations

import os

from imago_pipeline.core.parallel import map_in_processes


def square_or_die(n: int) -> int:
    if n == 13:
        os._exit(1)  # what a segfaulting C decoder looks like from the pool
    return n * n


def test_results_keep_their_order():
    assert map_in_processes(square_or_die, list(range(10)), workers=2) == [n * n for n in range(10)]


def test_a_crashing_item_gets_its_own_error_and_the_rest_finish():
    items = list(range(20))
    results = map_in_processes(square_or_die, items, workers=2, on_crash=lambda n: f"crashed on {n}")
    assert results[13] == "crashed on 13"
    assert [r for i, r in enumerate(results) if i != 13] == [n * n for n in items if n != 13]
    assert map_in_processes(square_or_die, [2, 3], workers=2) == [4, 9]  # the pool recovered
