"""A training run: cache + head + fold plan → a self-contained, resumable run folder.

Run folder layout (contract, docs/architecture.md §5)::

    config.json            everything needed to rerun (head, config, split, seed, loop, cache fingerprint)
    folds.json             the fold plan (FoldPlan JSON)
    fold_01/               curves.jsonl (one JSON line per epoch), checkpoint.pt (best val loss),
                           predictions.csv (test), val_predictions.csv, metrics.json (UA/WA/F1,
                           best epoch, wall minutes; written last: its presence marks the fold
                           finished, so a rerun skips it)
    predictions.csv        pooled test predictions: id, fold, true, predicted, p_<label>…
    val_predictions.csv    the same for validation (late fusion picks its weights on these)
    summary.json           per-fold, mean, std, pooled UA/WA/F1 (fractions) + pooled confusion
    report.md, confusion.png, curves.png

Folds are independent and seeded from (seed, fold) alone, so they can run in any order, resume
after a kill, or spread over ``torchrun`` ranks (round-robin) with results identical to a serial run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from emofuse import __version__, faults
from emofuse.distenv import dist_env, join_group
from emofuse.errors import EmofuseError
from emofuse.heads.registry import head_streams
from emofuse.locks import output_lock
from emofuse.streams import ACOUSTIC_STREAMS, SPEECH_LAYER_STREAMS
from emofuse.train import parallel
from emofuse.train.cachewatch import check_unchanged, identity
from emofuse.train.checkpoints import (
    check_own_checkpoints,
    make_dims,
    resolve_head,
)
from emofuse.train.configseal import write_run_config
from emofuse.train.data import CacheSource, TrainData
from emofuse.train.folds import Fold, FoldPlan, build_folds_from_columns
from emofuse.train.headcheck import check_buildable, check_forward
from emofuse.train.headcode import (
    check_no_unrecorded_modules,
    head_file_digest,
    head_module_digests,
)
from emofuse.train.headerrors import head_failed
from emofuse.train.loop import LoopConfig, train_fold
from emofuse.train.outdir import record_wall
from emofuse.train.paths import absolute, absolute_head, head_file, model_dirs
from emofuse.train.recipes import resolve_loop
from emofuse.train.resume import check_resume, check_unfinished_folds, early_cache_check
from emofuse.train.rundir import (
    check_finished_folds,
    finished_folds,
    fold_dir,
    save_fold,
    write_summary,
)
from emofuse.train.runout import check_out, prepare_out, writes_into


def _dist_env() -> tuple[int, int]:
    env = dist_env()
    return env.rank, env.world_size


def test_set_name(split: str, fold: Fold, table: dict[str, Any]) -> str:
    """What fold k tests, for the report: the session (loso), the speaker (lopo), or the tenth."""
    column = {"loso": "session", "lopo": "speaker"}.get(split)
    if column is None:
        return "test rows" if split == "predefined" else f"tenth {fold.fold}"
    test = set(fold.test)
    values = {str(v) for i, v in zip(table["id"], table[column], strict=True) if str(i) in test}
    return ",".join(sorted(values))


def run_config(
    head_spec: str,
    head_cls: type,
    cfg: Any,
    preset: str | None,
    sets: dict[str, str],
    cache: CacheSource,
    split: str,
    loop: LoopConfig,
    labels: list[str],
    folds: list[int] | None,
    device: str,
    loop_sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "emofuse_version": __version__,
        "head": absolute_head(head_spec),  # a file.py:Class head found from any folder
        "head_name": getattr(head_cls, "name", head_cls.__name__),
        "preset": preset,
        "set": dict(sets),
        "head_config": dataclasses.asdict(cfg),
        # a file.py:Class head's file: a resume with that file edited would train the remaining
        # folds with other code (None for a registry head)
        "head_sha256": head_file_digest(head_spec),
        # and of the modules it imported from its folder (a helper.py beside it)
        "head_modules": head_module_digests(head_spec),
        "cache": absolute(cache.path),  # report --tsne from any folder
        "cache_fingerprint": cache.fingerprint,
        # the content's digest (the fingerprint is of the settings only): a resume on a cache
        # re-extracted or replaced with the same settings and ids is refused (check_resume)
        "cache_digest": (getattr(cache, "meta", None) or {}).get("digest"),
        # the extraction settings (encoders, layers, text normalisation): what predict re-creates
        "cache_settings": cache.settings,
        # where the model folders the settings name by a relative path are (emofuse.train.paths)
        "model_dirs": model_dirs(cache.settings, cache.path),
        "split": split,
        "seed": loop.seed,
        "loop": dataclasses.asdict(loop),
        # per loop field: "default" (the papers' protocol), "recipe" (the head's preset) or "flag"
        "loop_sources": loop_sources or {k: "given" for k in dataclasses.asdict(loop)},
        "labels": labels,
        "folds": folds,
        "device": device,
    }


def check_layers_read(head_cls: type, cfg: Any, head_spec: str, sets: dict[str, str]) -> None:
    """``--set text_layers`` / ``speech_layers`` for a head that reads no such stream would be
    recorded and ignored: one line instead (as ``mix_index`` without ``layer_mix=single``)."""
    needs = head_streams(head_cls, cfg, head_spec)
    for key, kind, uses in (
        ("text_layers", "text", {"text"}),
        ("speech_layers", "speech", set(SPEECH_LAYER_STREAMS)),
    ):
        if key in sets and not needs & uses:
            raise EmofuseError(
                f"--set {key}={sets[key]} has no effect: head {head_spec} reads no {kind} stream "
                f"(it reads {', '.join(sorted(needs))}); drop it, or choose a head that reads {kind}"
            )


def check_speaker_norm_read(head_cls: type, cfg: Any, head_spec: str, loop: LoopConfig) -> None:
    """``--speaker-norm`` for a head that reads no acoustic stream standardises nothing, yet the
    run would be recorded (and compared) as transductive: one line instead."""
    needs = head_streams(head_cls, cfg, head_spec)
    if loop.speaker_norm and not needs & set(ACOUSTIC_STREAMS):
        raise EmofuseError(
            f"--speaker-norm has no effect: head {head_spec} reads no acoustic stream (it reads "
            f"{', '.join(sorted(needs))}), so there is nothing to standardise; drop it, or choose "
            "a head that reads speech"
        )


def load_data(
    cache: CacheSource, head_spec: str, head_cls: type, cfg: Any, loop: LoopConfig, device: str
) -> TrainData:
    """The streams ``cfg`` reads, loaded once (per-speaker standardised with ``--speaker-norm``)."""
    needs = head_streams(head_cls, cfg, head_spec)
    if "speaker" in needs and "speaker" not in cache.streams and hasattr(cfg, "use_speaker"):
        raise EmofuseError(
            f"head {head_spec} reads a speaker vector but cache {cache.path} has "
            "no 'speaker' stream; train without it (--set use_speaker=false) or re-extract with "
            "a --speaker-model"
        )
    data = TrainData.from_cache(cache, needs, cfg, device, max_lengths=head_cls.max_lengths(cfg))
    if loop.speaker_norm:
        speakers = ["" if x is None else str(x) for x in cache.table["speaker"]]
        if "" in speakers:
            raise EmofuseError(
                f"--speaker-norm needs a speaker for every utterance; {speakers.count('')} in "
                f"{cache.path} have none (fill the manifest's speaker column)"
            )
        data.normalize_per_speaker(speakers)
    return data


def train_run(
    cache: CacheSource,
    head_spec: str,
    out: str | Path,
    split: str,
    preset: str | None = None,
    sets: dict[str, str] | None = None,
    loop: LoopConfig | None = None,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    progress: bool = True,
    loop_flags: dict[str, Any] | None = None,
    jobs: int | None = None,
    lopo_val: str = "partner",
) -> dict[str, Any] | None:
    """Train every selected fold not already finished in ``out``; return the summary (rank 0).

    ``lopo_val``: how ``lopo`` draws validation (emofuse.train.folds: ``partner`` or ``train``).

    The loop: ``loop`` as given, or (``loop`` None) the head's recipe for ``preset`` with
    ``loop_flags`` (the command-line options that were given) on top (emofuse.train.recipes).

    ``cache`` is a path (opened with ``emofuse.cache.open_cache``) or an open cache object.
    Under torchrun (RANK / WORLD_SIZE set) folds are dealt round-robin to ranks; rank 0 writes the
    summary after every rank has finished (other ranks return None). ``jobs``: folds trained at
    once in worker processes on a CPU (None = ``parallel.choose_jobs``'s automatic choice; 1 =
    in this process); the results are the same either way.
    """
    sets = dict(sets or {})
    out = Path(out)
    if isinstance(cache, str | Path):
        from emofuse.cache import open_cache

        cache = open_cache(cache)
    watch = (cache.path, identity(cache.path) if cache.path else None)  # checked per fold
    early_cache_check(out, cache)
    head_cls = resolve_head(head_spec)
    cfg = head_cls.make_config(preset, sets)
    check_layers_read(head_cls, cfg, head_spec, sets)
    adapted = head_cls.fit_to_cache(cfg, cache.table, set(sets))  # {option: why}
    if loop is None:
        loop, loop_sources = resolve_loop(head_cls, preset, loop_flags)
    else:
        loop.validate()
        loop_sources = None
    check_speaker_norm_read(head_cls, cfg, head_spec, loop)
    rank, world = _dist_env()
    if world > 1 and device == "auto" and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    data = load_data(cache, head_spec, head_cls, cfg, loop, device)
    table = cache.table
    plan = build_folds_from_columns(
        ids=[str(i) for i in table["id"]],
        labels=[str(x) for x in table["label"]],
        speakers=[str(x) for x in table["speaker"]],
        sessions=[None if x in (None, "") else str(x) for x in table["session"]],
        splits=[
            None if x in (None, "") else str(x) for x in table.get("split", [None] * len(data.ids))
        ],
        split=split,
        seed=loop.seed,
        lopo_val=lopo_val,
    )
    valid = [f.fold for f in plan.folds]
    selected = list(folds) if folds else valid
    bad = [k for k in selected if k not in valid]
    if bad:
        raise EmofuseError(
            f"--folds {bad[0]} is not a fold of the {split} plan; valid folds: "
            f"{','.join(map(str, valid))}"
        )
    config = run_config(
        head_spec, head_cls, cfg, preset, sets, cache, split, loop, data.label_names,
        list(folds) if folds else None, str(data.device), loop_sources,
    )  # fmt: skip
    if adapted:
        config["adapted"] = adapted
    if split == "lopo" and lopo_val != "partner":  # absent = partner: older runs resume as before
        config["lopo_val"] = lopo_val
    check_buildable(head_spec, head_cls, cfg, make_dims(data), len(data.label_names), sets)
    check_forward(head_spec, head_cls, cfg, data)
    if config["head_modules"] is not None:  # and what that forward loaded by a computed name
        config["head_modules"] = head_module_digests(head_spec)
    check_out(out, cache.path)
    with contextlib.ExitStack() as stack:
        if rank == 0:  # one writer per run folder (torchrun's ranks share rank 0's lock)
            stack.enter_context(output_lock(out, "train"))
        stack.enter_context(writes_into(out))  # a write error from here on is one line
        if rank == 0:
            faults.reach("lock-taken")
        prepare_out(out)
        return _train_folds(
            out, cache, head_cls, cfg, plan, config, data, loop, selected, progress, rank, world,
            jobs, watch,
        )  # fmt: skip


def _train_folds(
    out: Path,
    cache: CacheSource,
    head_cls: type,
    cfg: Any,
    plan: FoldPlan,
    config: dict[str, Any],
    data: TrainData,
    loop: LoopConfig,
    selected: list[int],
    progress: bool,
    rank: int,
    world: int,
    jobs: int | None = None,
    watch: tuple[Any, Any] = (None, None),
) -> dict[str, Any] | None:
    """The run folder's work once it is locked: config, every selected unfinished fold, summary.

    ``watch``: (cache path, its identity when opened): a cache written over in place since is
    named before a fold is saved and when a fold worker dies (emofuse.train.cachewatch)."""
    head_spec, table = config["head"], cache.table
    check_own_checkpoints(out, finished_folds(out))  # what predict checks: a copied-in fold, …
    check_resume(out, config)
    check_unfinished_folds(out, selected)  # retrained from scratch: never a user's file with it
    finished = finished_folds(out)
    if (
        finished
        and (out / "folds.json").is_file()
        and FoldPlan.load(out / "folds.json").to_dict() != plan.to_dict()
    ):
        raise EmofuseError(  # the cache's identity is checked before: folds.json was edited
            f"{out / 'folds.json'} is not the fold plan the cache gives (edited after the run "
            f"wrote it?); restore it, or delete it and rerun the same command (it writes the plan "
            "again and keeps the finished folds)"
        )
    # the report reads them at the end: damage fails now (checkpoints: checked above)
    check_finished_folds(out, finished, trained=False)
    if rank == 0:
        write_run_config(out / "config.json", config)
        plan.save(out / "folds.json")

    dims = make_dims(data)
    head_meta = {
        "head": head_spec,
        "head_name": config["head_name"],
        "head_config": config["head_config"],
        "dims": dims.as_dict(),
        "labels": data.label_names,
        "cache_fingerprint": cache.fingerprint,
        "head_sha256": head_file_digest(head_spec),  # predict names a head file edited since
        "head_modules": config["head_modules"],  # and a module it imports
        "loop": config["loop"],  # a checkpoint of another seed or loop is not this run's
    }
    if world > 1:
        # gloo works on CPU and GPU alike: the only collective is one barrier
        join_group("gloo", datetime.timedelta(hours=24), dist_env())
        dist.barrier()  # rank 0 has written config.json / folds.json
    done = set(finished_folds(out))
    todo = [k for k in selected if k not in done]
    mine = todo[rank::world]
    path = cache.path  # workers reopen the cache: an in-memory one (None) stays here
    n_jobs = (
        1
        if path is None
        else parallel.choose_jobs(jobs, len(mine), len(data.ids), data.device, world, data.nbytes())
    )
    started = time.perf_counter()
    if n_jobs > 1:  # worker processes, each loading the cache once (spawned: no forked OpenMP)
        spec = {
            "cache": str(path), "head_spec": head_spec, "cfg": dataclasses.asdict(cfg),
            "loop": loop, "device": str(data.device), "out": str(out), "head_meta": head_meta,
            "cache_digest": (getattr(cache, "meta", None) or {}).get("digest"),
            "watch": watch,
        }  # fmt: skip
        parallel.run_tasks(
            _worker_init, spec, _worker_fold, mine, n_jobs, progress, "folds",
            explain_death=lambda: check_unchanged(*watch),
        )  # fmt: skip
    else:
        for k in mine:
            check_unchanged(*watch)  # before a fold reads it: not trained from another file
            run_fold(
                out, k, head_cls, cfg, dims, data, plan, loop, head_meta, table, progress, watch
            )
    if mine and world == 1:  # torchrun's ranks would race on one file
        record_wall(out, mine, n_jobs, time.perf_counter() - started)
    if world > 1:
        dist.barrier()  # every rank's folds are on disk before rank 0 summarises
        dist.destroy_process_group()
    if rank != 0:
        return None
    summary = write_summary(out, plan)
    from emofuse.train.report import write_report

    write_report(out)
    return summary


def run_fold(
    out: Path,
    k: int,
    head_cls: type,
    cfg: Any,
    dims: Any,
    data: TrainData,
    plan: FoldPlan,
    loop: LoopConfig,
    head_meta: dict[str, Any],
    table: dict[str, Any],
    progress: bool,
    watch: tuple[Any, Any] = (None, None),
) -> None:
    """Train fold ``k`` from scratch into its folder (a fold killed mid-way left one behind);
    ``watch``: the cache's path and identity, checked before the fold is saved as finished."""
    d = fold_dir(out, k)
    _check_in_place(out, k)
    if d.exists():  # a fold killed mid-way restarts from scratch (its seed makes it identical)
        shutil.rmtree(d)
    d.mkdir()  # never parents: a run folder moved away is not made again here
    started = time.perf_counter()
    with (d / "curves.jsonl").open("w") as curves:

        def log(row: dict[str, Any], fh=curves) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

        try:
            result = train_fold(
                lambda: head_cls(cfg, dims, len(data.label_names)),
                data,
                plan.fold(k),
                loop,
                on_epoch=log,
                progress=progress,
                head=head_meta["head"],
            )
        except (Exception, SystemExit) as err:
            check_unchanged(*watch)  # garbage read from a cache written over in place is named
            if head_file(head_meta["head"]) and not isinstance(err, EmofuseError):  # user code
                raise head_failed(head_meta["head"], k, err) from None
            raise
    check_unchanged(*watch)  # trained from the file the run opened, or not saved at all
    _check_in_place(out, k)
    # a module the head loaded only while training is in no record: predict could never run it
    check_no_unrecorded_modules(head_meta["head"], head_meta, out, f"fold {k} trained with")
    save_fold(
        out,
        result,
        data,
        head_meta,
        test_set_name(plan.split, plan.fold(k), table),
        seconds=time.perf_counter() - started,
    )


def _check_in_place(out: Path, k: int) -> None:
    """The run folder is where train started it (config.json is written before any fold): one
    moved or deleted while training is never made again with a fold and a 1-fold summary."""
    if not (out / "config.json").is_file():
        raise EmofuseError(
            f"the run folder {out} was moved or deleted while train ran (its config.json is "
            f"gone), so fold {k} was not saved there; rerun the same command with --out at the "
            "folder's new place to resume it"
        )


_WORKER: dict[str, Any] = {}  # a fold worker's loaded state (one per worker process)


def _worker_init(spec: dict[str, Any]) -> None:
    """In a worker process: open the cache and load the streams once, for every fold it trains."""
    from emofuse.cache import open_cache

    head_cls = resolve_head(spec["head_spec"])
    cfg = head_cls.Config(**spec["cfg"])
    if not Path(spec["cache"]).exists():
        raise EmofuseError(
            f"cache {spec['cache']} disappeared while emofuse train was starting its fold "
            "workers; restore it (or extract it again), then rerun the same command"
        )
    cache = open_cache(spec["cache"])
    digest = spec.get("cache_digest")  # the content's: the fingerprint is of the settings only
    if cache.fingerprint != spec["head_meta"]["cache_fingerprint"] or (
        digest is not None and cache.meta.get("digest") != digest
    ):  # replaced since the start
        raise EmofuseError(
            f"cache {spec['cache']} changed while emofuse train was starting its fold workers "
            "(another cache was put at its path); leave it alone while training, then rerun the "
            "same command"
        )
    data = load_data(cache, spec["head_spec"], head_cls, cfg, spec["loop"], spec["device"])
    out = Path(spec["out"])
    _WORKER.update(
        spec, head_cls=head_cls, cfg=cfg, data=data, dims=make_dims(data), table=cache.table,
        out=out, plan=FoldPlan.load(out / "folds.json"),
    )  # fmt: skip


def _worker_fold(k: int) -> int:
    w = _WORKER
    with writes_into(w["out"]):
        run_fold(
            w["out"], k, w["head_cls"], w["cfg"], w["dims"], w["data"], w["plan"], w["loop"],
            w["head_meta"], w["table"], progress=False, watch=w["watch"],
        )  # fmt: skip
    return k
