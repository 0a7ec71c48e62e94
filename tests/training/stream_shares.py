# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Run under `torchrun --nproc_per_node 2` by test_hf_datasets.py: each process streams its share of a parquet
dataset, saves its position with accelerate (`register_for_checkpointing`) and resumes from it; writes what it saw.

    python -m torch.distributed.run --standalone --nproc_per_node 2 stream_shares.py PARQUET_GLOB OUTPUT_DIR
"""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from diffusers_dit4sr.training.hf_datasets import DatasetSource, load_training_rows
from diffusers_dit4sr.training.hf_streaming import StreamedRowsDataset, StreamLoader


def main(pattern: str, output: Path) -> None:
    accelerator = Accelerator(cpu=True)
    rows = load_training_rows(
        [DatasetSource(pattern, caption_column="text")],
        streaming=True,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
    )

    def loader() -> StreamLoader:
        return StreamLoader(StreamedRowsDataset(rows, resolution=32, seed=5, shuffle_buffer_size=2), batch_size=1)

    straight = loader()
    iterator = iter(straight)
    seen = [next(iterator)["caption"][0] for _ in range(5)]

    interrupted = loader()
    accelerator.register_for_checkpointing(interrupted)
    iterator = iter(interrupted)
    for _ in range(2):
        next(iterator)
    interrupted.gather_positions()
    if accelerator.is_main_process:  # as train_dit4sr.py saves: accelerate writes registered objects from here only
        accelerator.save_state(str(output / "checkpoint"))
    accelerator.wait_for_everyone()
    for _ in range(2):  # moves on, then back to the saved position
        next(iterator)
    accelerator.load_state(str(output / "checkpoint"))  # every process loads its own position
    iterator = iter(interrupted)
    resumed = [next(iterator)["caption"][0] for _ in range(3)]
    torch.distributed.barrier()
    result = {"epoch": seen, "resumed": resumed}
    (output / f"process{accelerator.process_index}.json").write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
