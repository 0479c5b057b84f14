"""The latency predictor as the search sees it: which deploy network it predicts for.

A predictor is fitted on profiles of one deploy space (its header's space config) and
reads encodings of one layout. A search may run a narrower supernet (fewer channels, as
`--search-channels` asks): the encoding does not depend on width, so the predictor still
applies, and what it predicts is the latency of the *deploy* network the found
architecture becomes. Anything else that differs (the choices, the input, the head, the
network's version) would make its answer about another network, and is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from hwnas.space import HEAD_TOLERANCE, SpaceConfig, head_share, head_variant_note
from hwnas.space.encoding import ArchParameters, encoding_layout
from predictor.io import check_layout, deploy_space_config
from predictor.relax import expectation_gap, fit_relaxed_correction
from predictor.threads import single_threaded
from targets.basics import UserError

# Fields a search space may change against the deploy space: its width, and its labels.
SEARCH_MAY_DIFFER = ("channels", "name", "description")
#: Fields a network may change against the predictor's space and keep its predictions: the
#: classifier's class count (one GAP -> linear layer, README 'Your own data'). A data variant's
#: channel count changes the stem: refused, like the input size.
HEAD_FIELDS = ("num_classes",)


def predictor_deploy_space(predictor: Any) -> SpaceConfig:
    """The deploy SpaceConfig a loaded predictor predicts for; UserError if this hwnas
    would build another network from it (its key changed, e.g. a new network version)."""
    header = predictor.header
    deploy = SpaceConfig.from_dict(deploy_space_config(predictor), where="the predictor's space config")
    if header.get("space_key") and deploy.key != header["space_key"]:
        raise UserError(
            f"the predictor was fitted on space '{deploy.name}' with key {str(header['space_key'])[:12]}, "
            f"but this hwnas gives that config key {deploy.key[:12]}: the space's network changed since "
            "(for example a new network version); profile the space again and fit a new predictor"
        )
    return deploy


def check_predictor_for_search(predictor: Any, search_space: SpaceConfig) -> SpaceConfig:
    """The deploy space whose latency `predictor` gives for architectures of `search_space`.

    Accepts a search space that differs from the deploy space only in width (`channels`),
    name or class count (the head: the deploy space is then the predictor's with the search
    space's classifier, `head_note` says so); refuses, with what differs and what to do,
    another encoding layout or any other field (input size, input channels, stem, ...).
    """
    check_layout(
        predictor, encoding_layout(search_space), what=f"search space '{search_space.name}'"
    )
    deploy = predictor_deploy_space(predictor)
    mine, theirs = search_space.to_dict(), deploy.to_dict()
    may = SEARCH_MAY_DIFFER + HEAD_FIELDS
    diff = [
        f"{k}={mine.get(k)!r} (deploy {theirs.get(k)!r})"
        for k in sorted(set(mine) | set(theirs))
        if k not in may and mine.get(k) != theirs.get(k)
    ]
    share = head_share(deploy, search_space)
    if share > HEAD_TOLERANCE:
        diff.append(
            f"num_classes={search_space.num_classes} (deploy {deploy.num_classes}: a classifier "
            f"change of {share:.1%} of the network's multiply-adds, over {HEAD_TOLERANCE:.0%})"
        )
    if diff:
        raise UserError(
            f"search space '{search_space.name}' differs from the predictor's deploy space "
            f"'{deploy.name}' in {', '.join(diff)}; only the width (channels) and the class count "
            f"(within {HEAD_TOLERANCE:.0%} of the network's multiply-adds) may differ. Profile "
            f"'{search_space.name}' and fit a predictor on it (`hwnas profile --space {search_space.name} "
            "...`, `hwnas predictor fit`; `hwnas run` does both), or search with the deploy space's settings"
        )
    if search_space.num_classes != deploy.num_classes:
        # the network that ships: the predictor's, with this space's classifier
        deploy = replace(
            deploy, name=search_space.name, description=search_space.description,
            num_classes=search_space.num_classes,
        )  # fmt: skip
    return deploy


def head_note(predictor: Any, space: SpaceConfig) -> str | None:
    """What a predictor fitted with another classifier means for the deploy network of
    `space` (at the predictor's width; None: the same head)."""
    fitted = predictor_deploy_space(predictor)
    return head_variant_note(fitted.to_dict(), replace(fitted, name=space.name, num_classes=space.num_classes))


# -- the relaxed prediction's meaning: the expected latency of the architectures it describes ----
DEFAULT_SCALES = (0.0, 0.3, 1.0, 3.0, 10.0)
CENTRE_SCALE = 1e-3  # "scale 0": ArchParameters' own initialisation, the search's start


def relaxed_points(
    space: SpaceConfig, scale: float, seeds: Sequence[int], samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each seed, random `ArchParameters` at logit scale `scale` (normal logits times
    the scale; 0 means the centre, CENTRE_SCALE): their relaxed encodings [N, D] and the
    one-hot encodings of `samples` architectures drawn from each [N, samples, D]."""
    relaxed, drawn = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        params = ArchParameters(space, init_scale=max(float(scale), CENTRE_SCALE), generator=gen)
        with torch.no_grad():
            relaxed.append(params.encode())
        drawn.append(params.sample_encodings(samples, gen))
    return torch.stack(relaxed), torch.stack(drawn)


def relaxed_calibration(
    predictor: Any,
    space: SpaceConfig,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    n: int = 50,
    samples: int = 64,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per logit scale: predictor(relaxed) against the mean prediction over `samples`
    architectures drawn from the same logits (`ArchParameters.sample`), on `n` random
    ArchParameters seeded `seed * 1_000_003 + i` (the same for every scale)."""
    rows = []
    seeds = [seed * 1_000_003 + i for i in range(n)]
    for scale in scales:
        relaxed, drawn = relaxed_points(space, scale, seeds, samples)
        rows.append({"scale": float(scale), **expectation_gap(predictor, relaxed, drawn)})
    return rows


# Logit scales the correction is fitted on: from the centre (where the search starts) to
# nearly discrete, denser where the relaxation is far from a vertex.
FIT_SCALES = (0.0, 0.1, 0.3, 0.6, 1.0, 2.0, 3.0, 5.0, 10.0)


def _stream(tag: str, seed: int, scale_index: int, n: int) -> list[int]:
    """Generator seeds of a named stream: far from the small seeds a benchmark uses
    (`relaxed_calibration` draws seed * 1_000_003 + i), so the fit never sees its logits."""
    out = []
    for i in range(n):
        digest = hashlib.sha256(f"hwnas-relax:{tag}:{seed}:{scale_index}:{i}".encode()).digest()
        out.append(int.from_bytes(digest[:7], "big") | (1 << 56))
    return out


@single_threaded
def calibrate_predictor(
    predictor: Any,
    space: SpaceConfig,
    *,
    points: int = 540,
    samples: int = 64,
    seed: int = 0,
    scales: Sequence[float] = FIT_SCALES,
) -> dict[str, Any]:
    """Make predictor(relaxed encoding) the expected latency of the architectures drawn
    from it (in place; one-hot predictions unchanged) and return the fit's report.

    `points` random ArchParameters spread over `scales` (plus a sixth as many, from another
    stream, to choose the ridge penalty), each labelled by the mean prediction over
    `samples` draws (`ArchParameters.sample`).
    """
    layout = encoding_layout(space)
    if predictor.header:  # a loaded predictor; a fresh fit is checked by its caller
        check_layout(predictor, layout, what=f"space '{space.name}'")
    elif predictor.dim != len(layout):
        raise UserError(
            f"space '{space.name}' has {len(layout)} encoding entries; the predictor reads {predictor.dim}"
        )
    per = max(1, points // len(scales))
    per_val = max(2, per // 6)
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"fit": [], "val": []}
    for k, scale in enumerate(scales):
        parts["fit"].append(relaxed_points(space, scale, _stream("fit", seed, k, per), samples))
        parts["val"].append(relaxed_points(space, scale, _stream("val", seed, k, per_val), samples))
    fit_r, fit_s = (torch.cat(t) for t in zip(*parts["fit"], strict=True))
    val_r, val_s = (torch.cat(t) for t in zip(*parts["val"], strict=True))
    report = fit_relaxed_correction(predictor, fit_r, fit_s, val_r, val_s)
    report.update({"scales": [float(s) for s in scales], "seed": seed})
    return report
