"""nn.parallel.shared_arrays: aligned layouts, views without copies, and boxes that carry arrays."""

import multiprocessing
import pickle

import numpy as np
import pytest

from nn.parallel.shared_arrays import ALIGN, Slot, aligned, fetch, layout, post, shared_block, view, views


@pytest.mark.parametrize("nbytes, room", [(0, 0), (1, ALIGN), (ALIGN - 1, ALIGN), (ALIGN, ALIGN),
                                          (ALIGN + 1, 2 * ALIGN), (1000, 1024)])
def test_aligned_rounds_up_to_whole_cache_lines(nbytes, room):
    assert aligned(nbytes) == room


def test_layout_gives_each_array_its_own_cache_lines_in_order():
    arrays = {"conv.weight": np.zeros((8, 1, 5, 5), np.float32), "conv.bias": np.zeros(8, np.float32),
              "fc.weight": np.zeros((3, 7), np.float64), "step": np.zeros((), np.int64)}
    slots, nbytes = layout(arrays.items())
    assert list(slots) == list(arrays)
    assert slots["conv.weight"] == Slot("<f4", (8, 1, 5, 5), 0)
    assert slots["conv.bias"] == Slot("<f4", (8,), 832)  # 800 bytes, rounded up to 13 lines
    assert slots["fc.weight"] == Slot("<f8", (3, 7), 896)
    assert slots["step"] == Slot("<i8", (), 1088)
    assert nbytes == 1088 + ALIGN
    assert all(slot.offset % ALIGN == 0 for slot in slots.values())


def test_an_empty_layout_still_makes_a_block():
    assert layout([]) == ({}, 1)
    assert len(shared_block(1)) == 1


def test_views_are_the_block_itself():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7, 8], dtype=np.int64)}
    slots, nbytes = layout(arrays.items())
    block = shared_block(nbytes)
    assert bytes(block) == bytes(nbytes)  # zeroed
    named = views(block, slots)
    for name, array in arrays.items():
        named[name][...] = array
    again = views(block, slots)  # another process would build these from the same block
    for name, array in arrays.items():
        assert again[name].dtype == array.dtype and np.array_equal(again[name], array)
    named["a"][1, 2] = -1
    assert again["a"][1, 2] == -1 and view(block, slots["a"])[1, 2] == -1
    assert np.frombuffer(block, np.float32, count=1, offset=5 * 4)[0] == -1  # "a" starts the block


def test_post_and_fetch_round_trip_arrays_of_any_dtype_shape_and_layout():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 1, 4, 4)).astype(np.float32),
              rng.integers(0, 10, 3),
              rng.standard_normal((4, 5)).T,  # not contiguous: arrives C-contiguous
              np.zeros((0, 7), np.float32),
              np.full((), 2.5)]
    box = shared_block(4096)
    items = post(arrays, box)
    assert all(isinstance(item, Slot) and item.offset % ALIGN == 0 for item in items)
    assert [item.offset for item in items] == [0, 192, 256, 448, 448]  # the empty array takes no room
    for item, array in zip(items, arrays):
        fetched = fetch(item, box)
        assert fetched.dtype == array.dtype and fetched.shape == array.shape
        assert np.array_equal(fetched, array) and fetched.flags.c_contiguous
    assert pickle.loads(pickle.dumps(items)) == items  # what a pipe carries


def test_fetch_gives_views_of_the_box_valid_until_it_is_posted_to_again():
    box = shared_block(256)
    (item,) = post([np.ones(4, np.float32)], box)
    fetched = fetch(item, box)
    post([np.full(4, 2, np.float32)], box)
    assert np.array_equal(fetched, [2, 2, 2, 2])  # a view, not a copy: copy it to keep it


def test_what_does_not_fit_or_is_not_an_array_passes_through():
    box = shared_block(256)
    too_large, small, rest, one_more = (np.ones(65, np.float32), np.ones(8, np.float32),
                                        np.ones(192, np.uint8), np.ones(1, np.uint8))
    items = post([None, too_large, small, rest, one_more, 3.0], box)
    assert items[0] is None and items[1] is too_large and items[5] == 3.0  # the pipe carries these
    assert items[2] == Slot("<f4", (8,), 0)  # later arrays still go in the box when they fit,
    assert items[3] == Slot("|u1", (192,), 64)  # up to its last byte;
    assert items[4] is one_more  # past it, the pipe carries them
    assert fetch(items[1], box) is too_large and fetch(None, box) is None
    assert np.array_equal(fetch(items[2], box), small) and np.array_equal(fetch(items[3], box), rest)


def _post_squares(box, n):
    """In a spawned process: post the squares of 0..n-1 into the shared ``box``."""
    (item,) = post([np.arange(n, dtype=np.int64) ** 2], box)
    assert item == Slot("<i8", (n,), 0)


def test_another_process_writes_what_this_one_fetches():
    box = shared_block(1024)
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_post_squares, args=(box, 10))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == 0
    assert np.array_equal(fetch(Slot("<i8", (10,), 0), box), np.arange(10) ** 2)
