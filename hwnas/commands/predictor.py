"""`hwnas predictor fit|eval|predict`: learn latency from a profile store, score it, use it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from targets.basics import UserError, check_range, strict_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predictor", help="fit, evaluate and apply latency predictors")
    s = p.add_subparsers(dest="predictor_command", metavar="ACTION", required=True)

    fit = s.add_parser(
        "fit",
        help="fit the MLP and the sklearn baselines on a profile store; print held-out metrics",
    )
    fit.add_argument("--db", required=True, type=Path, help="profile store (SQLite)")
    fit.add_argument(
        "--target", required=True, help="target name (or .toml file) whose profiles to use"
    )
    fit.add_argument("--space", help="space name or key (default: the store's only space)")
    fit.add_argument("--out", required=True, type=Path, help="predictor file to write")
    fit.add_argument(
        "--fingerprint", help="fingerprint key (prefix) to use when the store has several"
    )
    fit.add_argument(
        "--allow-mixed", action="store_true", help="pool profiles of several fingerprints"
    )
    fit.add_argument(
        "--max-train",
        type=int,
        help="use at most this many architectures for training + validation (default: all)",
    )
    fit.add_argument(
        "--features", choices=("counts", "raw"), default="counts", help="MLP input features"
    )
    fit.add_argument("--members", type=int, default=4, help="MLP ensemble members")
    fit.add_argument("--max-epochs", type=int, default=300, help="most MLP epochs (early stopping usually ends sooner; default 300)")
    fit.add_argument(
        "--time-budget",
        type=float,
        help="stop MLP training after this many seconds (default: early stopping only; "
        "a budget that cuts in makes the result depend on the machine's speed)",
    )
    fit.add_argument("--no-baselines", action="store_true", help="fit the MLP only")
    fit.add_argument(
        "--no-progress", action="store_true", help="no progress bar or lines (stderr)"
    )
    fit.add_argument(
        "--init",
        type=Path,
        metavar="KNOWN.pt",
        help="adapt this predictor, fitted on another target of the same space, to the "
        "profiles of --target (needs far fewer profiles; docs/howto-new-target.md)",
    )
    fit.add_argument(
        "--transfer-method",
        choices=("blend", "ridge", "scale", "finetune"),
        default="blend",
        help="with --init: how to adapt (default blend: refit the output layer towards the "
        "scaled known predictor (ridge), then average it with a predictor fitted from scratch "
        "on the same rows when there are 50 or more; docs/benchmarks.md)",
    )
    fit.add_argument("--val-frac", type=float, default=0.15, help="share of architectures held out for early stopping (default 0.15)")
    fit.add_argument("--test-frac", type=float, default=0.15, help="share held out for the reported test metrics (default 0.15)")
    fit.add_argument("--seed", type=int, default=0, help="split and training seed")
    fit.add_argument(
        "--label",
        choices=("auto", "raw", "reference"),
        default="auto",
        help="learn the stored latency (raw) or the latency corrected by the reference "
        "network timed in the same rounds (reference); auto: reference when every row has it",
    )
    fit.add_argument(
        "--include-unstable",
        action="store_true",
        help="also fit on rows the timing protocol flagged unstable (host busy while timing); "
        "default: leave them out",
    )
    fit.add_argument(
        "--relaxed-points",
        type=int,
        default=540,
        metavar="N",
        help="calibrate the prediction on relaxed encodings (the search's input) to the expected "
        "latency of the architectures they describe, on N random relaxations; 0: do not "
        "(one-hot predictions are the same either way)",
    )
    fit.add_argument(
        "--relaxed-samples",
        type=int,
        default=64,
        metavar="K",
        help="architectures drawn per relaxation to estimate its expected latency",
    )
    fit.add_argument(
        "--device",
        default="cpu",
        metavar="auto|cpu|cuda|cuda:N",
        help="where the MLP's epochs run (default cpu: the model is tiny, a GPU gains nothing, "
        "and the CPU fit is the bit-reproducible one); a transfer fit (--init) runs on the CPU",
    )
    fit.add_argument("--json", action="store_true", help="print the report as JSON")
    fit.set_defaults(func=_fit)

    ev = s.add_parser("eval", help="score a predictor file on a profile store")
    ev.add_argument("file", type=Path, help="predictor file")
    ev.add_argument("--db", required=True, type=Path, help="profile store (SQLite)")
    ev.add_argument(
        "--split",
        choices=("test", "val", "train", "all"),
        default="test",
        help="architectures to score (test: never trained on; all: for another store)",
    )
    ev.add_argument(
        "--allow-mixed", action="store_true", help="score on other fingerprints of the target too"
    )
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(func=_eval)

    pr = s.add_parser("predict", help="predicted latency of architecture JSON files")
    pr.add_argument("file", type=Path, help="predictor file")
    pr.add_argument("archs", nargs="+", type=Path, metavar="ARCH.json", help="architecture JSON files")
    pr.add_argument(
        "--json",
        action="store_true",
        help="a list of {path, hash, latency_ms, reference_ms, in_training, target_name}",
    )
    pr.set_defaults(func=_predict)


def _fit(args: argparse.Namespace) -> int:
    from hwnas.devices import resolve_device
    from predictor import (
        MLPConfig,
        ProfileQuery,
        build_header,
        fit_predictor,
        load_predictor,
        load_profiles,
        render_report,
        save_predictor,
    )
    from predictor.baselines import BASELINES
    from predictor.dataset import min_samples

    for flag, value, low in (
        ("--members", args.members, 1), ("--max-epochs", args.max_epochs, 1), ("--max-train", args.max_train, 1),
        ("--seed", args.seed, 0), ("--relaxed-points", args.relaxed_points, 0),
        ("--relaxed-samples", args.relaxed_samples, 1),
    ):  # fmt: skip
        check_range(flag, value, low)
    check_range("--time-budget", args.time_budget, 0, above=True)
    device = resolve_device(args.device)
    init = load_predictor(args.init) if args.init is not None else None
    query = ProfileQuery(
        min_samples=min_samples(init is not None),
        space=args.space,
        fingerprint=args.fingerprint,
        allow_mixed=args.allow_mixed,
        seed=args.seed,
        val_frac=args.val_frac,
        test_frac=args.test_frac,
        label=args.label,
        include_unstable=args.include_unstable,
    )
    ds = load_profiles(args.db, args.target, query)
    if init is not None:
        from predictor.transfer import transfer_predictor

        result = transfer_predictor(
            init,
            ds,
            method=args.transfer_method,
            baselines=() if args.no_baselines else BASELINES,
            seed=args.seed,
            max_train=args.max_train,
            init_path=str(args.init),
        )
    else:
        cfg = MLPConfig(members=args.members, max_epochs=args.max_epochs)
        result = fit_predictor(
            ds,
            cfg=cfg,
            features=args.features,
            baselines=() if args.no_baselines else BASELINES,
            seed=args.seed,
            max_train=args.max_train,
            time_budget_s=args.time_budget,
            progress=not args.no_progress,
            device=device,
        )
    calibration = _calibrate(result.model, ds, args)
    if calibration is not None:
        result.report["relaxed_calibration"] = calibration
    header = build_header(result.model, ds, result.report)
    header["relaxed_correction"] = calibration
    save_predictor(args.out, result.model, header)
    if args.json:
        print(strict_json({**result.report, "out": str(args.out)}, indent=2))  # undefined ranks: null
    else:
        print(render_report(result.report))
        if calibration is not None:
            c = calibration
            print(
                f"relaxed encodings: calibrated to the expected latency of their draws on "
                f"{c['n_points']} relaxations x {c['samples_per_point']} draws; on {c['n_val_points']} "
                f"others, mean gap {100 * c['val_mean_gap_before']:+.1f} % -> "
                f"{100 * c['val_mean_gap_after']:+.1f} % (one-hot predictions unchanged)"
            )
        print(f"wrote {args.out}")
    return 0


def _calibrate(model: Any, ds: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """Fit the relaxed-encoding correction when the store's space is one hwnas can sample."""
    import sys

    from hwnas.search.predictor_check import calibrate_predictor
    from hwnas.space import SpaceConfig
    from hwnas.space.encoding import encoding_layout

    if args.relaxed_points < 0 or args.relaxed_samples < 1:
        raise UserError("--relaxed-points must be >= 0 and --relaxed-samples >= 1")
    if args.relaxed_points == 0:
        return None
    try:
        space = SpaceConfig.from_dict(ds.space_config)
        usable = encoding_layout(space) == list(ds.encoding_layout)
    except (UserError, TypeError, ValueError, KeyError):
        usable = False
    if not usable:
        print(
            "relaxed calibration skipped: the store's space config is not an hwnas space "
            "with this encoding layout (pass --relaxed-points 0 to silence this)",
            file=sys.stderr,
        )
        return None
    return calibrate_predictor(
        model, space, points=args.relaxed_points, samples=args.relaxed_samples, seed=args.seed
    )


def _eval(args: argparse.Namespace) -> int:
    from predictor import ProfileQuery, evaluate, load_predictor, load_profiles, render_report
    from predictor.drift import predictor_baseline
    from predictor.profiles import read_meta

    model = load_predictor(args.file)
    h = model.header
    meta = read_meta(args.db)
    store_key = meta.get("space_key")
    if store_key and store_key != h.get("space_key"):
        cfg = meta.get("space_config") if isinstance(meta.get("space_config"), dict) else {}
        name = meta.get("space_name") or cfg.get("name") or "?"
        raise UserError(
            f"profile store {args.db} holds space '{name}' "
            f"({str(store_key)[:12]}); the predictor was fitted on space '{h.get('space_name')}' "
            f"({str(h.get('space_key'))[:12]})"
        )
    split = h.get("split", {})
    fp = (
        None
        if args.allow_mixed or str(h.get("fingerprint_key", "")).startswith("mixed:")
        else h.get("fingerprint_key")
    )
    try:
        query = ProfileQuery(
            space=h.get("space_key"),
            fingerprint=fp,
            allow_mixed=True,
            seed=int(split.get("seed", 0)),
            val_frac=float(split.get("val_frac", 0.15)),
            test_frac=float(split.get("test_frac", 0.15)),
            min_samples=1,
            label=str(h.get("label") or "raw"),
            include_unstable=bool(h.get("include_unstable", False)),
            # the predictor's own baseline, not this store's median: the labels are then
            # this store's latencies corrected to the predictor's footing (predictor/drift.py)
            baseline_ms=predictor_baseline(h),
        )
        ds = load_profiles(args.db, h["target_name"], query)
    except UserError as exc:
        if fp is not None and "fingerprint" in str(exc):
            raise UserError(
                f"profile store {args.db} has no profiles with the predictor's fingerprint {str(fp)[:12]} for "
                f"target '{h['target_name']}'; pass --allow-mixed to score it on other fingerprints ({exc})"
            ) from None
        raise
    fitted_on = h.get("fitted_on")
    report = evaluate(
        model, ds, args.split, fitted_on=fitted_on if isinstance(fitted_on, list) else None
    )
    if args.json:
        print(strict_json(report, indent=2))
    else:
        print(render_report(report))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from predictor import load_predictor
    from predictor.drift import predictor_baseline

    try:
        from hwnas.space.encoding import encode
    except ImportError:  # older layout: encode lived in hwnas.space
        from hwnas.space import encode  # type: ignore[attr-defined,no-redef]
    from hwnas.deploy.export import check_predictor_space
    from hwnas.space import load_architecture

    model = load_predictor(args.file)
    rows = []
    encs = []
    for path in args.archs:
        arch = load_architecture(path)
        note = check_predictor_space(
            model, arch, what=f"{path} (space '{arch.space.name}')", space_config=arch.space.to_dict()
        )
        if note is not None:
            print(f"note: {path}: {note}", file=sys.stderr)
        enc = np.asarray(encode(arch), dtype=np.float32)
        if enc.shape[-1] != model.dim:
            raise UserError(
                f"{path}: encoding has {enc.shape[-1]} entries, the predictor expects {model.dim}"
            )
        encs.append(enc)
        rows.append({"path": str(path), "hash": arch.hash})
    latency = model.predict_ms(np.stack(encs))
    baseline = predictor_baseline(model.header)
    fitted_on = model.header.get("fitted_on")
    seen = set(fitted_on) if isinstance(fitted_on, list) else None
    for row, ms in zip(rows, latency, strict=True):
        row["latency_ms"] = float(ms)
        # the reference figure this prediction is relative to: compare a measurement
        # x reference_ms / its own reference (predictor/drift.py); null for raw predictors
        row["reference_ms"] = baseline
        row["in_training"] = None if seen is None else row["hash"][:16] in seen
        row["target_name"] = model.header.get("target_name")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(r["path"]) for r in rows)
        target = model.header.get("target_name")
        print(f"{'architecture'.ljust(width)}  {'hash':12}  predicted ms ({target})")
        for r in rows:
            mark = "  (in training data)" if r["in_training"] else ""
            print(f"{r['path'].ljust(width)}  {r['hash'][:12]}  {r['latency_ms']:.4f}{mark}")
        if baseline is not None:
            print(
                f"predictions are relative to a reference-network figure of {baseline:.4f} ms "
                "(the predictor's baseline): compare a measurement corrected by its own reference"
            )
    if seen is None:
        print(
            "the predictor file does not list its training architectures (older file): "
            "cannot tell which of these it was fitted on",
            file=sys.stderr,
        )
    else:
        n_in = sum(1 for r in rows if r["in_training"])
        print(
            f"{n_in} of {len(rows)} architectures are in the predictor's training data "
            "(train/val splits)" + (": their predictions say nothing of its accuracy" if n_in else ""),
            file=sys.stderr,
        )
    return 0
