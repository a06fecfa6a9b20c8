"""``pnpovss segment`` over many images: sharding under ``torchrun``, decoding and post-processing
overlapped with the network, ``--skip-bad``, and the run summary ``OUT/pnpovss_run.json``.

Sharding: every process expands the same inputs to the same sorted list and takes every N-th image
(:meth:`~pnpovss.distributed.DistContext.shard`, as ``eval`` does). Each image's three files are
written by the process that owns it with the atomic, content-keyed writes of :mod:`pnpovss.outputs`,
so the output directory is the same file for file whatever the number of processes, and a rerun
skips what any earlier run (of any size) finished.

Overlap (``workers > 0``): the batches themselves, with decoding and post-processing in worker
processes, are :mod:`pnpovss.workers`.

Progress: each process adds its finished images to a counter in torchrun's key-value store; the
main process draws one bar from it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from .distributed import DistContext
from .execution import default_store
from .errors import ImageLoadError, PnpOvssError, raised_alike
from .fileio import atomic_write_text, load_image
from .outputs import check_writable_dir, file_digest, is_done
from .workers import FolderJob, segment_in_batches

log = logging.getLogger(__name__)
SUMMARY_NAME = "pnpovss_run.json"
_RUNS = itertools.count()
"""Runs in this process so far: every process of a job counts the same, so the n-th run's store
keys match across processes."""


@dataclass
class RunSummary:
    """Counts over all processes; ``to_json`` is what ``OUT/pnpovss_run.json`` holds."""

    inputs: int
    segmented: int
    already_done: int
    skipped: list[dict[str, str]]
    seconds: float
    processes: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.segmented / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**self.settings, "processes": self.processes,
                "counts": {"inputs": self.inputs, "segmented": self.segmented, "already_done": self.already_done,
                           "skipped": len(self.skipped)},
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 4),
                "skipped": self.skipped}

    def line(self) -> str:
        text = (f"segmented {self.segmented} image(s) in {self.seconds:.1f} s ({self.images_per_second:.2f} img/s, "
                f"{self.processes} process{'es' if self.processes > 1 else ''})")
        if self.already_done:
            text += f"; {self.already_done} already done"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} unreadable image(s), listed in {SUMMARY_NAME}"
        return text


# ------------------------------------------------------------------------------------ before the model
def check_summary_name(paths: Sequence[Path]) -> None:
    """An image named like the summary would overwrite it with its own NAME.json."""
    for p in paths:
        if p.stem + ".json" == SUMMARY_NAME:
            raise PnpOvssError(f"{p}: its result {SUMMARY_NAME} would overwrite the run summary of the same name; "
                               "rename the image")


def check_coco_target(job: FolderJob, dist: DistContext) -> None:
    """``--coco FILE``: the interop extra is installed, and FILE is a writable file that is none of
    the run's own outputs; checked before the model loads."""
    from .interop import require
    from .outputs import output_files

    if job.coco is None:
        return
    require("pycocotools.mask", "--coco")
    target = Path(job.coco).resolve()
    ours = {Path(job.out).resolve() / SUMMARY_NAME}
    ours.update(f.resolve() for p in job.paths for f in output_files(job.out, p.stem).values())
    if target in ours or target in {Path(p).resolve() for p in job.paths}:
        raise PnpOvssError(f"--coco {job.coco} is one of the run's own files; name another file")
    if target.is_dir():
        raise PnpOvssError(f"--coco {job.coco} is a directory; name a file")
    if dist.is_main:
        check_writable_dir(target.parent, f"--coco {job.coco}")


def check_same_inputs(paths: Sequence[Path], dist: DistContext) -> None:
    """Every process must have expanded the inputs to the same list (a folder that differs between
    machines would split the work wrongly)."""
    digest = hashlib.sha1("\0".join(map(str, paths)).encode()).hexdigest()
    if len(set(dist.gather(digest))) > 1:
        raise raised_alike(PnpOvssError("the processes see different input images (a folder that differs between machines?); "
                           "give every node the same inputs at the same paths"))


KEEP_DECODED_BYTES = 256 * 2**20
"""Pixels :func:`check_images` keeps for the run, so those images are decoded once: ~340 images of
500x375, or a few 12-megapixel photos (the first image is kept whatever its size). The rest of a
larger folder is decoded again when its batch comes: holding a whole folder's pixels is the
memory the check must not cost."""


def check_images(job: FolderJob, dist: DistContext) -> dict[Path, Any]:
    """Decode this process's share of the images before the model loads, so that a bad one stops
    the whole run before anything is written (without ``--skip-bad``). Returns the images decoded
    that the run uses as they are, up to :data:`KEEP_DECODED_BYTES` of pixels."""
    kept: dict[Path, Any] = {}
    error, room = None, KEEP_DECODED_BYTES
    for p in dist.shard(job.paths):
        try:
            rgb = load_image(p, max_pixels=job.max_pixels)
        except ImageLoadError as exc:
            error = (job.paths.index(p), str(exc))
            break
        if not kept or rgb.nbytes <= room:
            kept[p], room = rgb, room - rgb.nbytes
    errors = sorted(e for e in dist.gather(error) if e is not None)
    if errors:
        raise raised_alike(ImageLoadError(errors[0][1]))
    return kept


def check_out_dir(out: Path, dist: DistContext) -> None:
    """``--out`` must be writable before the model loads. One process: the check creates nothing
    that stays. Under torchrun the processes must not check at once (one would remove the
    directory it created while another writes its test file there): the main process checks
    first, then every process creates the directory (kept) and checks it on its own machine."""
    what = f"--out {out}"
    if not dist.enabled:
        check_writable_dir(out, what)
        return

    def error_of(check: Callable[[], None]) -> str | None:
        try:
            check()
        except PnpOvssError as exc:
            return str(exc)
        return None

    def create_and_check() -> None:
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PnpOvssError(f"{what}: cannot create {out} ({exc.strerror or type(exc).__name__}); "
                               "choose another location") from None
        check_writable_dir(out, what)

    for check in (lambda: check_writable_dir(out, what) if dist.is_main else None, create_and_check):
        errors = [e for e in dist.gather(error_of(check)) if e]
        if errors:
            raise raised_alike(PnpOvssError(errors[0]))


# ------------------------------------------------------------------------------------ the run
class _Progress:
    """Images finished over all processes: each adds its own to a counter in the job's store; the
    main process polls it for its bar. Without a store (a plain process), the local count."""

    def __init__(self, dist: DistContext, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.dist, self.total, self.mine = dist, total, 0
        self.key = f"pnpovss/segment/{next(_RUNS)}"
        self.store = None
        if dist.enabled:  # without a store (a private torch helper): local counts
            self.store = default_store()
        self.bar = tqdm(total=total, unit="img", disable=not (enabled and dist.is_main and total >= 2),
                        file=sys.stderr)

    def add(self, n: int) -> None:
        self.mine += n
        count = self.store.add(self.key, n) if self.store is not None else self.mine
        if self.dist.is_main:
            self.bar.update(count - self.bar.n)

    def finish(self) -> None:
        """Say this process is done; the main process waits (drawing the bar) for the others."""
        if self.store is not None:
            self.store.add(self.key + "/finished", 1)
            if self.dist.is_main:
                while self.store.add(self.key + "/finished", 0) < self.dist.world_size:
                    self.bar.update(self.store.add(self.key, 0) - self.bar.n)
                    time.sleep(0.2)
                self.bar.update(self.store.add(self.key, 0) - self.bar.n)
            self.store = None  # hold no handle on torchrun's store past the run
        self.bar.close()


def run(seg: Any, job: FolderJob, dist: DistContext | None = None, *, model: str, ran: dict[str, Any] | None = None,
        kept: dict[Path, Any] | None = None, progress: bool = True,
        echo: Callable[[str], None] = log.warning) -> RunSummary:
    """Segment this process's share of ``job.paths`` with ``seg`` and write the results into
    ``job.out``; under torchrun every process calls this and all return the job's summary (the
    main process also writes it to ``OUT/pnpovss_run.json``). ``model``: the model's name as
    recorded in each NAME.json; ``ran``: the device and dtype that ran (recorded there and in the
    summary, with the model's execution options); ``echo``: where the main process's notices go
    (the CLI passes its stderr; default: this module's logger)."""
    dist, kept = dist or DistContext(), kept or {}
    ran = {**(ran or {}), "execution": seg.backbone.execution.to_json()}
    start = time.perf_counter()
    settings = {"model": model, "candidates": job.classes, "keep_all": job.keep_all, "config": seg.config.to_dict()}
    mine = dist.shard(job.paths)
    skipped: list[dict[str, str]] = []
    keys: dict[Path, dict[str, Any]] = {}
    for p in mine:
        try:
            keys[p] = {"image": str(p), "image_sha256": file_digest(p), **settings}
        except OSError as exc:
            reason = ImageLoadError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})")
            if not job.skip_bad:
                raise reason from None
            skipped.append({"path": str(p), "reason": str(reason)})
    readable = [p for p in mine if p in keys]
    todo = readable if job.overwrite else [p for p in readable if not is_done(job.out, p.stem, keys[p])]
    counts = dist.gather((len(todo), len(readable) - len(todo)))
    total, done_before = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if done_before and dist.is_main:
        echo(f"skipping {done_before} image(s) already segmented in {job.out} with these settings "
             "(--overwrite redoes them)")
    if total == 1 and dist.is_main and todo and kept.get(todo[0]) is not None and \
            kept[todo[0]].shape[0] * kept[todo[0]].shape[1] > 4_000_000:  # no bar; ~10 s of work
        echo(f"segmenting {todo[0]} ...")
    bar = _Progress(dist, total, progress)
    segmented = 0
    try:
        for position, error in segment_in_batches(seg, job, todo, keys, kept, model, ran, bar):
            if error is not None:
                skipped.append({"path": str(todo[position]), "reason": error})
            else:
                segmented += 1
    except BaseException:
        bar.bar.close()
        raise
    bar.finish()
    parts = dist.gather((segmented, skipped, time.perf_counter() - start))
    order = {str(p): i for i, p in enumerate(job.paths)}
    summary = RunSummary(
        inputs=len(job.paths), segmented=sum(s for s, _, _ in parts), already_done=done_before,
        skipped=sorted((s for _, sk, _ in parts for s in sk), key=lambda s: order[s["path"]]),
        seconds=max(t for _, _, t in parts), processes=dist.world_size,
        settings={**settings, **ran, "batch_size": job.batch_size or "auto", "workers": job.workers,
                  "skip_bad": job.skip_bad, "overwrite": job.overwrite})
    digests = dist.gather({str(p): k["image_sha256"] for p, k in keys.items()}) if job.coco is not None else []
    if dist.is_main:
        atomic_write_text(Path(job.out) / SUMMARY_NAME, json.dumps(summary.to_json(), indent=2) + "\n")
        if job.coco is not None:
            write_coco(job, {p: d for part in digests for p, d in part.items()}, settings)
    return summary


def write_coco(job: FolderJob, digests: dict[str, str], settings: dict[str, Any]) -> None:
    """``job.coco`` from the output directory, after every process has written its images: each
    input whose files are a finished unit with this run's settings, whichever run wrote them,
    with its position in the inputs as image id (the same ids on a resumed run)."""
    from .interop import coco_from_outputs

    finished = [(i + 1, p) for i, p in enumerate(job.paths) if str(p) in digests
                and is_done(job.out, p.stem, {"image": str(p), "image_sha256": digests[str(p)], **settings})]
    coco_from_outputs(job.out, finished, job.classes).write(job.coco)


__all__ = ["FolderJob", "RunSummary", "SUMMARY_NAME", "check_images", "check_out_dir", "check_same_inputs",
           "check_summary_name", "check_coco_target", "run", "write_coco"]
