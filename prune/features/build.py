"""Warm up a model and write its per-sample features into an HDF5 store.

The pipeline of `prune features` (and of `prune select` without ``--features``):
warm-up with a checkpoint pass at every epoch end (EMA of g and H; per example the loss, p_y,
the logit margin and whether the label is predicted),
then M feature passes at the final weights, each under one posterior perturbation drawn
once and used for every example (methods.md, "ensemble" and "Implementation notes"), and with
M > 1 one more at the unperturbed weights (what ``--posterior point`` selects from).

Under torchrun (``prune.distributed``) rank 0 warms up and shares the warm weights, every rank
computes a fixed shard of each feature pass's rows, and rank 0 writes them: the same store as one
process writes.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from prune import distributed, random_streams
from prune.data import LoadedData, label_fingerprint
from prune.errors import PruneError
from prune.features.averaging import CheckpointAverage
from prune.features.config import FeatureConfig
from prune.features.extract import Hutchinson, extract_batches
from prune.features.partial import PartialStore
from prune.features.posterior import curvature_batches, hessian_noise_scale, perturbed, posterior_parameters
from prune.features.store import PER_EPOCH
from prune.models import build_model, load_checkpoint
from prune.training import Trainer, console, progress, seed_everything


class TrainingLabels(NamedTuple):
    """The labels a store's model is trained on and selected with: ``labels`` (n,), and with label
    noise its record (``noise``: fraction and seed) and the flipped rows (``flipped``, ascending)."""

    labels: torch.Tensor
    noise: dict | None = None
    flipped: torch.Tensor | None = None


def warm_start(data: LoadedData, labels: torch.Tensor, config: FeatureConfig, *, seed: int, device, on_epoch_end=None,
               tag="", world: distributed.World = distributed.World()):
    """A fresh model (or ``config.checkpoint``'s) trained for ``config.warmup.epochs`` on the full training split;
    data-parallel over the ranks of ``world`` (``prune.training.Trainer.fit``), which all call this."""
    seed_everything(seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    if config.checkpoint is not None:
        load_checkpoint(model, config.checkpoint["path"], note=lambda text: console.print(f"[yellow]note:[/] {text}"))
    Trainer(model, config.warmup, device=device, seed=seed, world=world).fit(
        data.train.x, labels, on_epoch_end=on_epoch_end, description=f"warm-up{tag}")
    return model.to(device).eval()


def store_bytes(data: LoadedData, config: FeatureConfig) -> int:
    """Bytes the features of ``build_store(data, ..., config)`` take in memory as float32 (no model is run)."""
    n, classes, samples, checkpoints = len(data.train), data.num_classes, config.samples, config.checkpoints
    embedding_dim = build_model(config.model, data.input_shape, classes).fc.in_features
    passes = samples + (samples > 1)  # the M samples and, with M > 1, the unperturbed weights
    floats = n * passes * (2 * classes + embedding_dim) + n * 2 * classes + n * 3 * checkpoints
    return 4 * floats + 8 * n + n * checkpoints  # + the int64 labels and the uint8 correct_per_epoch


@dataclass
class _Passes:
    """Feature passes over the training rows ``x``, ``labels`` with ``config``'s batch size and Hessian
    diagonal, on ``device``, their rows shared among the ranks of ``world`` (``prune.distributed.shard``)."""

    world: distributed.World
    x: torch.Tensor
    labels: torch.Tensor
    config: FeatureConfig
    device: torch.device

    def _extract(self, model, start: int, stop: int | None = None, generator=None):
        """``extract_batches`` over rows ``start``..``stop`` (Hutchinson probes from ``generator``)."""
        config = self.config
        hutchinson = None
        if config.posterior.hessian == "hutchinson":
            hutchinson = Hutchinson(config.posterior.hutchinson_samples, generator)
        return extract_batches(model, self.x[start:stop], self.labels[start:stop], batch_size=config.batch_size,
                               device=self.device, hutchinson=hutchinson, amp=config.warmup.amp)

    def run(self, model, description: str, generator=None, start: int = 0, skip: int = 0, on_step=None,
            lines: str | None = None):
        """One pass of ``model``: yields (start, batch-features). ``lines`` "done": in a log or a pipe, the pass
        prints the line that ends it only (``prune.training.progress``).

        In one process, every batch from row ``start``. Among several ranks, rank 0 yields every
        rank's batches, a batch of each rank at a time, and after each such step calls
        ``on_step(steps done, [(start, stop) of the rows just yielded])``; the other ranks yield
        nothing. Every rank skips the first ``skip`` batches of its shard (a resume).
        """
        world, batch_size = self.world, self.config.batch_size
        wording = {} if lines is None else {"lines": lines}
        with progress() as bars:
            if world.size == 1:
                task = bars.add_task(description, total=len(self.labels), completed=start, status="",
                                     unit="examples", **wording)
                for batch in self._extract(model, start, generator=generator):
                    yield start, batch
                    start += len(batch["loss"])
                    bars.update(task, advance=len(batch["loss"]))
                return
            rows, steps = distributed.shard(len(self.labels), batch_size, world)
            start = min(rows.start + skip * batch_size, rows.stop)
            mine = self._extract(model, start, rows.stop)
            task = bars.add_task(description, total=len(self.labels), status="", unit="examples", **wording)
            for step in range(skip, steps):
                batch = next(mine, None)
                blocks = []
                for sent in world.gather(None if batch is None else (start, batch)) or []:
                    if sent is not None:
                        yield sent
                        blocks.append((sent[0], sent[0] + len(sent[1]["loss"])))
                        bars.update(task, advance=len(sent[1]["loss"]))
                if world.main and on_step is not None:
                    on_step(step + 1, blocks)
                if batch is not None:
                    start += len(batch["loss"])


def _on_device(state: dict, config: FeatureConfig, data: LoadedData, device) -> torch.nn.Module:
    """A model of ``config.model`` with the weights ``state``, on ``device``, in eval mode."""
    model = build_model(config.model, data.input_shape, data.num_classes)
    model.load_state_dict(state)
    return model.to(device).eval()


def _cpu_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def label_columns(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One checkpoint batch's (b, C) logits z and labels y -> p_y = softmax(z)_y, the logit margin
    z_y - max_{c != y} z_c and correctness argmax_c z_c = y (ties: the lowest class), each (b,).

    What the training-dynamics scores read per epoch: DUAL the path of p_y, AUM (Pleiss et al. 2020,
    eq. 1-2) the margin's, forgetting (Toneva et al. 2019, §3) the correctness's. Computed in float64
    from the float32 logits, so p_y keeps its small values (1 + g_y would round them to 0).
    """
    z = logits.to(torch.float64)
    y = labels.long()[:, None]
    prob_label = torch.softmax(z, 1).gather(1, y).squeeze(1)
    margin = z.gather(1, y).squeeze(1) - z.scatter(1, y, -math.inf).max(1).values
    return prob_label.float(), margin.float(), z.argmax(1) == y.squeeze(1)


@dataclass
class WarmUp:
    """A finished warm-up: the warm weights and what its checkpoints left per example.

    ``grad_ema`` and ``hess_ema`` (n, C) are the averages over the checkpoints (AdaCore eq. 7, 9),
    ``per_epoch`` the store's ``*_per_epoch`` records, (n, T) each: the loss, p_y, the logit margin
    and the correctness (bool) at each checkpoint. Stores built from one ``WarmUp`` (``prune bench``:
    one per label noise and seed, for every method) differ only in their posterior samples.
    """

    state: dict
    grad_ema: torch.Tensor
    hess_ema: torch.Tensor
    per_epoch: dict[str, torch.Tensor]

    def model(self, config: FeatureConfig, data: LoadedData, device) -> torch.nn.Module:
        return _on_device(self.state, config, data, device)

    def write(self, part: PartialStore, model: torch.nn.Module) -> None:
        """Into a store's work folder: the per-epoch records, the averages and ``model``'s (the warm)
        weights, then the warm-up committed as done."""
        for name, values in self.per_epoch.items():
            for epoch in range(values.shape[1]):
                part.write_column(name, epoch, values[:, epoch])
        part.write_rows("grad_logit_ema", 0, self.grad_ema)
        part.write_rows("hess_logit_ema", 0, self.hess_ema)
        part.save_model(model)
        part.commit_warmup()


def warm_up(data: LoadedData, labels: torch.Tensor, config: FeatureConfig, *, seed: int, device,
            world: distributed.World = distributed.World()) -> WarmUp | None:
    """Warm up a fresh model with a checkpoint pass at every epoch end (the first part of ``build_store``).

    Among several ranks (``world``: torchrun) every rank calls this: the warm-up runs under
    ``DistributedDataParallel`` (``prune.training.fit``), each checkpoint pass is shared out like
    the feature passes, and rank 0 gets the ``WarmUp``; the other ranks get None.
    """
    average = CheckpointAverage(config.beta1, config.beta2)
    shape = (len(labels), config.checkpoints)
    per_epoch = {name: torch.zeros(shape, dtype=torch.bool if kind == "uint8" else torch.float32)
                 for name, kind in PER_EPOCH.items()} if world.main else None

    def kept(start: int, batch: dict) -> list[torch.Tensor]:
        """What the averages and the records need of a batch (its rows from ``start``), not the embedding:
        g, a, then the columns of ``PER_EPOCH`` (the loss and ``label_columns``)."""
        columns = label_columns(batch["logits"], labels[start:start + len(batch["loss"])])
        return [batch["grad_logit"], batch["hess_logit"], batch["loss"], *columns]

    passes = _Passes(world, data.train.x, labels, config, device)

    def checkpoint(epoch: int, model) -> None:
        generator = random_streams.generator(seed, "checkpoint_pass", epoch)
        passed = sorted(((start, kept(start, batch)) for start, batch in passes.run(
            model, f"checkpoint {epoch}", generator, lines="done")),  # one line: the warm-up's lines frame it
            key=lambda sent: sent[0])  # every rank's batches (gathered whole, logits included), in row order
        if world.main:
            grads, hessians, *records = (torch.cat(column) for column in zip(*(arrays for _, arrays in passed)))
            average.update(grads, hessians)
            for name, values in zip(PER_EPOCH, records):
                per_epoch[name][:, epoch - 1] = values

    model = warm_start(data, labels, config, seed=seed, device=device, on_epoch_end=checkpoint, world=world)
    if config.warmup.epochs == 0:
        checkpoint(1, model)  # the initial weights are the only checkpoint
    return WarmUp(_cpu_state(model), average.grad, average.hess, per_epoch) if world.main else None


def build_store(data: LoadedData, labels: torch.Tensor | TrainingLabels, out: str | Path, config: FeatureConfig, *,
                seed: int, device: torch.device, resume: bool = False, warm: WarmUp | None = None) -> Path:
    """Warm up, extract features, and write them to ``out`` (atomically). Returns the path.

    ``labels``: the labels trained on, a tensor (the data's own) or ``TrainingLabels`` (with label
    noise: its record and the flipped rows, which the store records).

    The work goes on in ``.NAME.partial/`` beside ``out`` (``prune.features.partial``), committed after
    every block of rows; ``resume=True`` continues an interrupted run from its last committed block
    (same settings required) and gives the same store, byte for byte, as an uninterrupted run.
    ``warm`` (``warm_up``'s, same data, labels, model and warm-up settings) skips the warm-up.

    In a process group (``prune.distributed``: torchrun) every rank calls this: the ranks warm up
    together under ``DistributedDataParallel`` (``warm_up``; unless rank 0 resumes past it), rank 0
    sends the warm weights, each rank computes its shard of the rows of every feature and checkpoint
    pass, and rank 0 writes them and the store. Rank 0 commits each step (a batch of every rank's
    shard), so ``resume`` under torchrun with the same number of ranks and batch size continues
    every shard where it stopped; otherwise from the start of the unfinished pass.
    """
    labels, noise, flipped = labels if isinstance(labels, TrainingLabels) else TrainingLabels(labels)
    world = distributed.current()
    if world.size > 1 and config.posterior.hessian == "hutchinson":
        raise PruneError("--hessian hutchinson draws its probes in row order, which is not shared among processes; "
                         "run it in one process (without torchrun), or use --hessian exact")
    if not world.main:
        _compute_shards(world, data, labels, config, seed=seed, device=device)
        return Path(out)
    if world.size > 1 and warm is not None:
        raise PruneError("a shared warm-up (prune bench) runs in one process; run it without torchrun")
    samples, passes = config.samples, _Passes(world, data.train.x, labels, config, device)
    attrs, settings, shape = _store_settings(data, labels, config, seed=seed, label_noise=noise)
    with PartialStore.open(out, settings=settings, resume=resume, n=len(labels), **shape) as part:
        for note in part.notes:
            console.print(f"[yellow]note:[/] {note}")
        world.from_main(lambda: part.warmup_done)  # the other ranks warm up with rank 0, or not at all
        if part.warmup_done:
            model = part.load_model(build_model(config.model, data.input_shape, data.num_classes)).to(device).eval()
        else:
            warm = warm or warm_up(data, labels, config, seed=seed, device=device, world=world)
            model = warm.model(config, data, device)
            warm.write(part, model)

        first = part.samples_done
        skip = part.steps_done(world.size, config.batch_size) if world.size > 1 else 0
        world.from_main(lambda: (_cpu_state(model), first, skip))
        for m, (member, perturbation) in enumerate(
                posterior_members(model, data, labels, config, seed=seed, device=device, first=first), start=first):
            point = m == samples  # the pass at the unperturbed weights, after the M samples (M > 1)
            # the point pass draws what an M = 1 store's one pass draws (Hutchinson probes), so it equals it
            generator = random_streams.generator(seed, "feature_pass", 0 if point else m)
            rows = part.rows_done if m == first and world.size == 1 else 0
            if rows and part.generator_state() is not None:
                generator.set_state(part.generator_state())
            description = "features (unperturbed)" if point else f"features {m + 1}/{samples}"
            with perturbation:
                on_step = partial(part.commit_steps, world.size, config.batch_size)  # (steps, blocks) of a step
                for start, batch in passes.run(member, description, generator, start=rows,
                                               skip=skip if m == first else 0, on_step=on_step):
                    part.write_features(start, batch, None if point else m)
                    if world.size == 1:
                        part.commit_rows(start + len(batch["loss"]), generator=generator)
            part.commit(samples_done=m + 1, rows_done=0, steps=None)
        part.finish(labels=labels.numpy(), flipped=np.asarray([] if flipped is None else flipped), attrs=attrs)
    return Path(out)


def _store_settings(data: LoadedData, labels: torch.Tensor, config: FeatureConfig, *, seed: int,
                    label_noise: dict | None) -> tuple[dict, dict, dict]:
    """A store's attributes, the settings a resume must agree with (the attributes, the size and the
    labels used) and its shape (``PartialStore.open``'s ``StoreShape`` fields but n)."""
    attrs = {
        "fingerprint": data.fingerprint,
        "num_classes": data.num_classes,
        "dataset": data.record(),  # the manifest's dataset record (split, class counts, hf columns)
        "features": config.to_dict(),
        "seed": seed,
        "label_noise": label_noise,
    }
    settings = {**attrs, "num_examples": len(labels), "labels_used": label_fingerprint(labels)}
    embedding_dim = build_model(config.model, data.input_shape, data.num_classes).fc.in_features
    shape = dict(samples=config.samples, num_classes=data.num_classes, embedding_dim=embedding_dim,
                 checkpoints=config.checkpoints, dtype=config.dtype)
    return attrs, settings, shape


def _compute_shards(world: distributed.World, data: LoadedData, labels: torch.Tensor, config: FeatureConfig, *,
                    seed: int, device) -> None:
    """``build_store`` on a rank other than 0: its part of the warm-up, when rank 0 is not resuming past it,
    and its shard of every feature pass, sent to rank 0."""
    if not world.from_main(None):
        warm_up(data, labels, config, seed=seed, device=device, world=world)
    state, first, skip = world.from_main(None)
    model, passes = _on_device(state, config, data, device), _Passes(world, data.train.x, labels, config, device)
    for m, (member, perturbation) in enumerate(
            posterior_members(model, data, labels, config, seed=seed, device=device, first=first), start=first):
        with perturbation:
            for _ in passes.run(member, "features", skip=skip if m == first else 0):
                pass


def posterior_members(model, data, labels, config: FeatureConfig, *, seed: int, device, first: int = 0):
    """Yield (model, context manager) for feature passes ``first``..: the M posterior samples, then
    with M > 1 the warm model itself (the unperturbed weights); M = 1 means the model itself.

    gaussian/hessian: the warm model under a perturbation delta_m drawn once from a seeded
    generator and removed exactly afterwards; seeds: M independently warm-started models.
    Each member depends only on ``seed`` and m, so skipping the first ones changes no other.
    """
    yield from _posterior_samples(model, data, labels, config, seed=seed, device=device, first=first)
    if config.samples > 1:
        yield model, nullcontext()


def _posterior_samples(model, data, labels, config: FeatureConfig, *, seed: int, device, first: int):
    posterior = config.posterior
    if first >= posterior.samples:
        return
    if posterior.samples == 1:
        yield model, nullcontext()
        return
    if posterior.kind == "seeds":
        if first == 0:
            yield model, nullcontext()
        world = distributed.current()
        for m in range(max(first, 1), posterior.samples):
            state = world.from_main(lambda: _cpu_state(warm_start(
                data, labels, config, seed=random_streams.stream_seed(seed, "seed_member", m), device=device, tag=f" (seed member {m + 1})")))
            yield _on_device(state, config, data, device), nullcontext()
        return
    params, used = posterior_parameters(model, posterior.layers)
    if used != posterior.layers:
        console.print(f"[yellow]note:[/] model {config.model!r} has no BatchNorm; perturbing the last linear layer (fc) instead")
    sigma = posterior.sigma
    if posterior.kind == "hessian":
        batches = curvature_batches(data.train.x, labels, random_streams.generator(seed, "curvature", 1), device)
        sigma = distributed.current().from_main(lambda: [std.cpu() for std in hessian_noise_scale(
            model, params, batches, posterior.sigma, 20, random_streams.generator(seed, "curvature"))])
    for m in range(first, posterior.samples):
        yield model, perturbed(model, params, sigma, random_streams.generator(seed, "perturbation", m))
