# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Streamed training data from 🤗 Datasets, shuffled in blocks and resumable exactly.

`StreamedRowsDataset` turns this process's share of streamed `TrainingRows` (`hf_datasets.load_training_rows(...,
streaming=True)`) into training samples; `StreamLoader` batches it epoch after epoch and saves and restores its
position (`state_dict`), so that a resumed run continues after the last batch trained on, with the samples, crops and
order of an uninterrupted run.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .datasets import collate_samples, derive_seed
from .hf_datasets import PreparedInfo, RowReader, TrainingRows

__all__ = ["StreamLoader", "StreamedRowsDataset"]

_POSITION = "_stream_position"
_PLACEHOLDER = "_placeholder"


class StreamedRowsDataset(PreparedInfo, torch.utils.data.IterableDataset):
    """Training samples streamed from `TrainingRows`: this process's share of the rows, shuffled in blocks.

    The rows are this process's share (`load_training_rows(..., process_index=, num_processes=)`); in DataLoader
    workers, 🤗 Datasets splits them across the workers by shards. Each worker reads `shuffle_buffer_size` rows at a
    time and yields them in an order drawn from `(seed, epoch, process, worker, block)`; a sample's crop comes from a
    generator seeded with its place. Unlike a
    rolling shuffle buffer, whose content is lost on a resume, a block is read again from its start, so resuming
    (`StreamLoader.load_state_dict`) gives exactly the samples an uninterrupted run gives. Shards change order every
    epoch (🤗 Datasets' `set_epoch`).

    Args:
        rows: From `load_training_rows(..., streaming=True)`.
        resolution: Side of the HR crops.
        random_flip: Flip crops horizontally with probability 0.5.
        seed: Seed of the block orders and crops.
        shuffle_buffer_size: Rows per shuffled block (1: the stream's own order); they are held in memory.
        token: Hub token to read images stored as remote paths.
    """

    def __init__(
        self,
        rows: TrainingRows,
        resolution: int = 512,
        random_flip: bool = True,
        seed: int = 0,
        shuffle_buffer_size: int = 256,
        token=None,
    ) -> None:
        if not rows.streaming:
            raise ValueError("`rows` are not streamed: read them with `RowsDataset`.")
        if shuffle_buffer_size < 1:
            raise ValueError(f"`shuffle_buffer_size` must be at least 1, got {shuffle_buffer_size}.")
        self.rows = rows
        self.stream = rows.rows
        self.reader = RowReader(resolution, random_flip, rows.prepared, token)
        self.resolution, self.seed, self.shuffle_buffer_size = resolution, seed, shuffle_buffer_size
        self.process_index, self.num_processes = rows.process_index, rows.num_processes
        self.epoch = 0
        self.start_positions: dict[int, dict[str, Any]] = {}
        """Per worker, where to continue (a sample's `_stream_position`); set by `StreamLoader`."""
        self.placeholder_batches: dict[int, int] = {}
        """Per worker, how many placeholder samples to yield first (`StreamLoader` keeps the workers' order)."""

    def first_sample(self) -> dict[str, Any]:
        """A sample of this process's first row: reading it before training checks that the rows hold what they
        should (without reading a whole block)."""
        row = next(iter(copy.deepcopy(self.stream)), None)
        if row is None:
            raise ValueError(f"process {self.process_index} has no rows in its share of the stream.")
        return self.reader(row, torch.Generator().manual_seed(0), f"the first row of process {self.process_index}")

    def count_rows(self, limit: int) -> int:
        """How many rows (up to `limit`) this process's share has in an epoch, read without decoding images."""
        return sum(1 for _ in itertools.islice(copy.deepcopy(self.stream), limit))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for _ in range(self.placeholder_batches.get(worker, 0)):
            yield {_PLACEHOLDER: True}
        stream = copy.deepcopy(self.stream)  # its state stays this iterator's
        stream.set_epoch(self.epoch)
        position = self.start_positions.get(worker)
        block, offset, block_start = 0, 0, None
        if position is not None:
            block, offset, block_start = position["block"], position["offset"], position["block_start"]
            if block_start is not None:
                stream.load_state_dict(block_start)
        rows = iter(stream)
        while True:
            rows_of_block = list(itertools.islice(rows, self.shuffle_buffer_size))
            if not rows_of_block:
                return
            next_start = stream.state_dict()
            keys = (self.seed, self.epoch, self.process_index, worker, block)
            order = torch.randperm(len(rows_of_block), generator=torch.Generator().manual_seed(derive_seed(*keys)))
            for place in range(offset, len(rows_of_block)):
                generator = torch.Generator().manual_seed(derive_seed(*keys, place))
                name = f"block {block} row {place} of worker {worker} of process {self.process_index} (stream)"
                sample = self.reader(rows_of_block[int(order[place])], generator, name)
                sample[_POSITION] = {"worker": worker, "block": block, "offset": place + 1, "block_start": block_start}
                yield sample
            block, offset, block_start = block + 1, 0, next_start


class StreamLoader:
    """Endless batches of a `StreamedRowsDataset`, epoch after epoch, that can continue exactly where they stopped.

    It keeps, per DataLoader worker, the position after the last batch it yielded, and the order of the workers;
    `state_dict` / `load_state_dict` save and restore them (register it with `accelerate`'s
    `register_for_checkpointing`). accelerate writes registered objects from the main process only, so with several
    processes every process calls `gather_positions()` (a collective) before the main one saves the state; each
    process then loads its own position.

    Args:
        dataset: The process's `StreamedRowsDataset`.
        batch_size: Samples per batch (every batch is full: a worker's last partial batch of an epoch is dropped).
        num_workers: DataLoader worker processes (0: read in this process). The shards are split across workers, so
            resuming needs the same number.
        collate_fn: Batches a list of samples (default: `collate_samples`).
    """

    def __init__(
        self,
        dataset: StreamedRowsDataset,
        batch_size: int,
        num_workers: int = 0,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] = collate_samples,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be at least 0, got {num_workers}.")
        self.dataset, self.batch_size, self.num_workers, self.collate_fn = dataset, batch_size, num_workers, collate_fn
        self.epoch = 0
        self.batches = 0
        """Batches yielded in this epoch."""
        self.positions: dict[int, dict[str, Any]] = {}
        self.last_worker: int | None = None
        self._gathered: tuple[tuple[int, int], list[dict[str, Any]]] | None = None

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if _PLACEHOLDER in samples[0]:
            return {_PLACEHOLDER: True}
        return self.collate_fn(samples)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            workers = max(1, self.num_workers)
            first = 0 if self.last_worker is None else (self.last_worker + 1) % workers
            self.dataset.epoch = self.epoch
            self.dataset.start_positions = dict(self.positions)
            # DataLoader asks workers for batches in turn from worker 0: those before the next worker of the
            # interrupted run first yield one placeholder batch, dropped here, so the batches come in the same order.
            self.dataset.placeholder_batches = dict.fromkeys(range(first), self.batch_size)
            loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                collate_fn=self._collate,
                drop_last=True,
            )
            for batch in loader:
                if _PLACEHOLDER in batch:
                    continue
                positions = batch.pop(_POSITION)
                self.positions[positions[-1]["worker"]] = positions[-1]
                self.last_worker = positions[-1]["worker"]
                self.batches += 1
                yield batch
            if self.batches == 0:
                raise ValueError(
                    f"process {self.dataset.process_index} got no full batch of {self.batch_size} samples in an "
                    "epoch of its share of the stream: lower `batch_size` or use fewer processes."
                )
            self.epoch, self.batches, self.positions, self.last_worker = self.epoch + 1, 0, {}, None

    def position(self) -> dict[str, Any]:
        """This process's position: after the last batch yielded."""
        return {
            "epoch": self.epoch,
            "batches": self.batches,
            "positions": copy.deepcopy(self.positions),
            "last_worker": self.last_worker,
            "num_workers": self.num_workers,
        }

    def gather_positions(self) -> None:
        """Collects every process's position into the main process's `state_dict` (call it on every process)."""
        position = self.position()
        num_processes = self.dataset.num_processes
        if num_processes > 1:
            gathered: list[Any] = [None] * num_processes
            torch.distributed.all_gather_object(gathered, position)
        else:
            gathered = [position]
        self._gathered = ((self.epoch, self.batches), gathered)

    def state_dict(self) -> dict[str, Any]:
        """Every process's position; with several processes, as collected by the last `gather_positions()`."""
        if self.dataset.num_processes == 1:
            positions = [self.position()]
        elif self._gathered is None or self._gathered[0] != (self.epoch, self.batches):
            raise RuntimeError("call `gather_positions()` on every process before saving the stream's state.")
        else:
            positions = self._gathered[1]
        return {"num_processes": self.dataset.num_processes, "positions": positions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues after the batch at which `state` was saved (this process's entry of it)."""
        if state["num_processes"] != self.dataset.num_processes:
            raise ValueError(
                f"the stream's position was saved by {state['num_processes']} process(es); resume it with as many, "
                f"not {self.dataset.num_processes} (each process streams its own shards)."
            )
        position = state["positions"][self.dataset.process_index]
        if position["num_workers"] != self.num_workers:
            raise ValueError(
                f"the stream's position was saved with `num_workers` {position['num_workers']}; resume with as many, "
                f"not {self.num_workers} (each worker streams its own shards)."
            )
        self.epoch, self.batches, self.last_worker = position["epoch"], position["batches"], position["last_worker"]
        self.positions = copy.deepcopy(position["positions"])
