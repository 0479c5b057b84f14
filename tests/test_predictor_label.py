"""The predictor's label: raw latency, or latency corrected by the reference network."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from predictor import ProfileQuery, load_profiles
from predictor.synthetic import make_synthetic_store
from targets.basics import UserError


def test_reference_label_cancels_host_drift(tmp_path):
    db = tmp_path / "s.db"
    make_synthetic_store(db, 120, seed=3, repeat_fraction=0.0)
    con = sqlite3.connect(db)
    with con:
        con.execute("UPDATE measurements SET reference_ms = NULL")
    con.close()
    raw = load_profiles(db, "ort-cpu")
    assert raw.stats["label"] == "raw"  # auto: the rows carry no reference figure
    with pytest.raises(UserError, match="--label raw"):
        load_profiles(db, "ort-cpu", ProfileQuery(label="reference"))
    # A host that ran 30 % slow for half the rows: latency and reference both scale.
    con = sqlite3.connect(db)
    ids = [r[0] for r in con.execute("SELECT id FROM measurements WHERE kind='profile' ORDER BY id")]
    slow = set(ids[::2])
    with con:
        for i in ids:
            f = 1.3 if i in slow else 1.0
            con.execute(
                "UPDATE measurements SET latency_ms = latency_ms * ?, reference_ms = ? WHERE id = ?",
                (f, 0.8 * f, i),
            )
    con.close()
    drifted = load_profiles(db, "ort-cpu", ProfileQuery(label="raw"))
    corrected = load_profiles(db, "ort-cpu")  # auto -> reference
    assert corrected.stats["label"] == "reference"
    assert corrected.stats["reference_baseline_ms"] == pytest.approx(0.8 * 1.3, rel=0.3)
    assert drifted.hashes == raw.hashes == corrected.hashes
    ratio_drifted = drifted.latency_ms / raw.latency_ms
    ratio_corrected = corrected.latency_ms / raw.latency_ms
    assert np.ptp(ratio_drifted) == pytest.approx(0.3, abs=1e-6)  # two host states
    assert np.ptp(ratio_corrected) < 1e-6  # one scale: the drift is gone
    with pytest.raises(UserError, match="label 'x'"):
        load_profiles(db, "ort-cpu", ProfileQuery(label="x"))
