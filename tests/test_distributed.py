# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`diffusers_dit4sr.distributed`: a process's place in its run, and its share of the jobs."""

import pytest

from diffusers_dit4sr.distributed import ONE_PROCESS, Processes, share


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_the_shares_cover_every_item_once_strided(count):
    items = list(range(10))
    shares = [share(items, index, count) for index in range(count)]
    assert sorted(item for part in shares for item in part) == items
    assert shares[0] == items[::count]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_share_of_fewer_items_than_processes_may_be_empty():
    assert [share(["a", "b"], index, 3) for index in range(3)] == [["a"], ["b"], []]


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_a_process_index_outside_the_run_is_an_error(index, count):
    with pytest.raises(ValueError, match="process index"):
        share([1, 2, 3], index, count)


def test_without_a_launcher_the_process_is_alone():
    processes = Processes.from_environment({})
    assert processes == ONE_PROCESS == Processes(index=0, count=1, local_index=0, local_count=1)
    assert processes.is_main and not processes.several
    assert processes.share([3, 1, 2]) == [3, 1, 2]
    assert processes.gather({"done": 4}) == [{"done": 4}]
    processes.barrier()  # alone: returns at once


def test_the_launchers_variables_place_the_process():
    # What torchrun (and accelerate launch) set for the 4th process of 2 machines x 2 GPUs.
    environ = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    processes = Processes.from_environment(environ)
    assert processes == Processes(index=3, count=4, local_index=1, local_count=2)
    assert processes.several and not processes.is_main
    assert processes.share(list(range(10))) == [3, 7]


def test_without_local_variables_all_processes_are_on_this_machine():
    processes = Processes.from_environment({"RANK": "1", "WORLD_SIZE": "2"})
    assert (processes.local_index, processes.local_count) == (1, 2)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK='one' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK must be below it"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "RANK must be below it"),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "1"}, "LOCAL_RANK must be below"),
        ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "3"}, "cannot exceed WORLD_SIZE"),
    ],
)
def test_contradicting_variables_are_a_clear_error(environ, message):
    with pytest.raises(ValueError, match=message):
        Processes.from_environment(environ)
