"""The command line's progress bar over denoising steps (`cli.progress`)."""

from pathlib import Path
from types import SimpleNamespace

from diffusers_dit4sr.cli import progress as cli_progress
from diffusers_dit4sr.upscaling import Job


def test_the_step_bar_follows_the_scheduler_and_failures():
    progress = cli_progress.StepProgress(num_images=2, steps_per_image=4, disable=False)
    job = Job(Path("a.png"), Path("out/a.png"))
    progress.start_batch(0, [job])
    progress.on_step(SimpleNamespace(num_timesteps=7))  # e.g. a second-order scheduler: 7 steps for 4
    assert (progress.bar.n, progress.bar.total) == (1, 14)
    progress.finish_batch()  # failed after one step: the bar moves on to the next image
    progress.start_batch(1, [job])
    for _ in range(7):
        progress.on_step(SimpleNamespace(num_timesteps=7))
    progress.finish_batch()
    assert (progress.bar.n, progress.bar.total) == (14, 14)
    progress.close()


def test_the_step_bar_counts_every_image_of_a_batch():
    progress = cli_progress.StepProgress(num_images=3, steps_per_image=4, disable=False)
    jobs = [Job(Path(f"{name}.png"), Path(f"out/{name}.png")) for name in "abc"]
    progress.start_batch(0, jobs[:2])
    assert progress.bar.desc.startswith("Upscaling 1-2/3 a.png (+1)")
    progress.on_step(SimpleNamespace(num_timesteps=4))
    assert progress.bar.n == 2  # one step of two images
    progress.finish_batch()
    assert progress.bar.n == 8
    progress.start_batch(2, jobs[2:])
    assert progress.bar.desc.startswith("Upscaling 3/3 c.png:")
    progress.finish_batch()
    assert (progress.bar.n, progress.bar.total) == (12, 12)
    progress.close()
