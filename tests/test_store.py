"""The profile store: WAL, one transaction per row, space binding, claims, export, bad input."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiling.store import COLUMNS, ProfileStore
from targets.basics import UserError

FP = {"backend": "debug", "device": "debug", "threads": 1}
KEY = "k" * 64


def row(i: int, **over: object) -> dict:
    r = {
        "kind": "profile",
        "arch_hash": f"h{i:04d}",
        "arch_json": json.dumps({"i": i}),
        "encoding": [0.5, float(i)],
        "space_name": "s",
        "space_key": "sk",
        "target_name": "debug",
        "fingerprint": FP,
        "fingerprint_key": KEY,
        "status": "ok",
        "error": None,
        "latency_ms": 1.0 + i / 10,
        "statistic": "p10",
        "median_ms": 1.2 + i / 10,
        "p10_ms": 1.0 + i / 10,
        "min_ms": 0.9,
        "spread": 0.1,
        "repetitions": 120,
        "rounds": 10,
        "reference_ms": 2.0,
        "stable": True,
        "host": "h",
        "pid": 1,
        "run_id": "r",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:01+00:00",
    }
    r.update(over)
    return r


@pytest.fixture
def store(tmp_path: Path):
    st = ProfileStore(tmp_path / "p.db")
    st.bind_space("s", "sk", {"name": "s"}, ["a", "b"])
    yield st
    st.close()


def test_new_store_uses_wal_and_binds_space(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "p.db"  # missing parent directories are created
    with ProfileStore(path) as st:
        assert st.journal_mode() == "wal"
        assert st.space_binding() is None
        st.bind_space("s", "sk", {"name": "s", "c": 16}, ["a", "b"])
        st.bind_space("s", "sk", {"name": "s", "c": 16}, ["a", "b"])  # idempotent
        assert st.space_binding() == {
            "space_name": "s",
            "space_key": "sk",
            "space_config": {"c": 16, "name": "s"},
            "encoding_layout": ["a", "b"],
        }
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = [r[1] for r in conn.execute("PRAGMA table_info(measurements)")]
    assert cols == list(COLUMNS)
    conn.close()


def _wal_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name + "-"))


def test_no_wal_files_are_left_once_the_store_is_closed(tmp_path: Path, cli) -> None:
    """Issue 21: profile.db-wal and -shm stayed beside the store after `hwnas run` and
    `hwnas report`: a read-only connection (every reader) closing last leaves them."""
    from predictor import load_profiles

    db = tmp_path / "p.db"
    with ProfileStore(db) as st:  # written through the public API
        st.bind_space("s", "sk", {"name": "s"}, ["a", "b"])
        st.insert_measurements([row(i) for i in range(3)])
        assert _wal_files(db)  # WAL while it is open
    assert _wal_files(db) == []
    with ProfileStore(db, readonly=True) as st:
        assert st.stats()
    assert _wal_files(db) == []
    with pytest.raises(UserError), ProfileStore(db, readonly=True):  # an error while it is open
        raise UserError("boom")
    assert _wal_files(db) == []
    with pytest.raises(UserError):  # a reader whose read fails (no figures of this target)
        load_profiles(db, "no-such-target")
    assert _wal_files(db) == []
    code, _, err = cli("db", "stats", "--db", db)  # a command: opens it read-only
    assert code == 0, err
    assert _wal_files(db) == []
    # a reader beside an open writer leaves the WAL to the writer, who removes it on closing
    writer = ProfileStore(db)
    with ProfileStore(db, readonly=True) as st:
        st.stats()
    assert (tmp_path / "p.db-wal").exists()
    writer.close()
    assert _wal_files(db) == []
    with ProfileStore(db, readonly=True) as st:  # nothing was lost
        assert st.stats()["rows"] == 3


def test_one_transaction_per_row_visible_at_once(store: ProfileStore) -> None:
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    other = sqlite3.connect(store.path)
    for i in range(3):
        store.insert_measurement(row(i))
        # committed: another connection sees it immediately
        assert other.execute("SELECT count(*) FROM measurements").fetchone()[0] == i + 1
    store.conn.set_trace_callback(None)
    assert sum(s == "BEGIN IMMEDIATE" for s in statements) == 3
    assert sum(s == "COMMIT" for s in statements) == 3
    other.close()


def test_space_mismatch_refused_and_nothing_lost(store: ProfileStore) -> None:
    store.insert_measurement(row(1))
    with pytest.raises(UserError) as err:
        store.bind_space("other", "ok2", {"name": "other"}, ["a"])
    msg = str(err.value)
    assert "'s'" in msg and "'other'" in msg and "new --db" in msg
    with pytest.raises(UserError, match="same name, different config"):
        store.bind_space("s", "sk-changed", {"name": "s"}, ["a", "b"])
    with pytest.raises(UserError, match="encoding layout"):
        store.bind_space("s", "sk", {"name": "s"}, ["a", "b", "c"])
    assert store.count_rows() == 1


def test_unwritable_paths_are_user_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create the directory"):
        ProfileStore(blocker / "p.db")
    with pytest.raises(UserError, match="is a directory"):
        ProfileStore(tmp_path)
    with pytest.raises(UserError, match="no profile store"):
        ProfileStore(tmp_path / "missing.db", readonly=True)


def test_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite " * 100)
    with pytest.raises(UserError, match="not a hwnas profile store"):
        ProfileStore(junk)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="not a hwnas profile store"):
        ProfileStore(other)
    with pytest.raises(UserError, match="not a hwnas profile store"):
        ProfileStore(other, readonly=True)


def test_newer_schema_refused(store: ProfileStore) -> None:
    store.conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(UserError, match="upgrade hwnas"):
        ProfileStore(store.path)


def test_locked_store_times_out_with_user_error(store: ProfileStore) -> None:
    store.insert_measurement(row(1))
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match="locked by another process"):
            ProfileStore(store.path, timeout=0.2)
        assert time.monotonic() - t0 < 5
        store.timeout = 0.2
        store.conn.execute("PRAGMA busy_timeout = 200")
        with pytest.raises(UserError, match="locked"):
            store.insert_measurement(row(2))
        # readers are not blocked by a writer (WAL)
        with ProfileStore(store.path, readonly=True, timeout=0.2) as ro:
            assert ro.count_rows() == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.insert_measurement(row(2))
    assert store.count_rows() == 2


def test_readonly_store_refuses_writes(store: ProfileStore) -> None:
    with ProfileStore(store.path, readonly=True) as ro, pytest.raises(UserError, match="read-only"):
        ro.insert_measurement(row(1))


def test_bad_rows_are_programming_errors(store: ProfileStore) -> None:
    with pytest.raises(ValueError, match="lacks"):
        store.insert_measurement(row(1, arch_hash=""))
    with pytest.raises(ValueError, match="status"):
        store.insert_measurement(row(1, status="meh"))
    with pytest.raises(ValueError, match="unknown"):
        store.insert_measurement({**row(1), "bogus": 1})
    assert store.count_rows() == 0


def test_duplicate_profile_row_is_kept_as_repeat(store: ProfileStore) -> None:
    assert store.insert_measurement(row(1))[1] == "profile"
    assert store.insert_measurement(row(1, latency_ms=1.5))[1] == "repeat"
    assert store.count_rows(kind="profile") == 1
    assert store.count_rows(kind="repeat") == 1
    # a failed first attempt does not turn a later ok one into a repeat
    assert store.insert_measurement(row(2, status="failed", latency_ms=None))[1] == "profile"
    assert store.insert_measurement(row(2))[1] == "profile"


def test_claims_split_work_and_die_with_their_process(store: ProfileStore) -> None:
    store.insert_measurement(row(0))
    assert store.claim(KEY, ["h0000", "h0001", "h0002"], "runA") == ["h0001", "h0002"]
    # another run (this process is alive) cannot take A's claims
    assert store.claim(KEY, ["h0001", "h0002", "h0003"], "runB") == ["h0003"]
    assert store.live_claims(KEY) == 3
    # limit_total: 1 done + 3 claimed = 4; room for one more
    assert store.claim(KEY, ["h0004", "h0005"], "runB", limit_total=5) == ["h0004"]
    assert store.claim(KEY, ["h0005"], "runB", limit_total=5) == []
    # storing a row releases its claim
    store.insert_measurement(row(1), release_run_id="runA")
    assert store.live_claims(KEY) == 3
    store.release_claims("runB")
    assert store.live_claims(KEY) == 1
    # a claim of a dead process (same host) is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.conn.execute("UPDATE claims SET pid=?, run_id='dead' WHERE arch_hash='h0002'", (dead.pid,))
    assert store.claim(KEY, ["h0002"], "runC") == ["h0002"]
    # a claim from another host goes stale by age
    store.conn.execute(
        "INSERT INTO claims VALUES (?, 'h0009', 'far', 'other-host', 1, ?)", (KEY, time.time() - 10)
    )
    assert store.claim(KEY, ["h0009"], "runC") == []
    assert store.claim(KEY, ["h0009"], "runC", stale_after=5) == ["h0009"]


def test_done_hashes_and_failed(store: ProfileStore) -> None:
    store.insert_measurement(row(1))
    store.insert_measurement(row(2, status="failed", error="boom", latency_ms=None))
    store.insert_measurement(row(3, kind="repeat"))
    assert store.done_hashes(KEY) == {"h0001", "h0002"}
    assert store.done_hashes(KEY, include_failed=False) == {"h0001"}
    assert store.claim(KEY, ["h0002"], "r", include_failed=False) == ["h0002"]


def test_stats(store: ProfileStore) -> None:
    for i in range(4):
        store.insert_measurement(row(i, stable=i != 3))
    store.insert_measurement(row(9, status="failed", error="boom", latency_ms=None))
    store.insert_measurement(row(1, kind="repeat"))
    stats = store.stats()
    assert stats["rows"] == 6 and stats["architectures"] == 5
    assert stats["space_name"] == "s" and stats["encoding_length"] == 2
    (t,) = stats["targets"]
    assert t["profile_ok"] == 4 and t["profile_failed"] == 1 and t["repeat"] == 1
    assert t["unstable"] == 1 and t["fingerprint"] == FP
    assert t["latency_ms"]["min"] == pytest.approx(1.0)
    assert t["latency_ms"]["max"] == pytest.approx(1.3)
    json.dumps(stats)  # JSON-able for --json


def test_export_csv_round_trip(store: ProfileStore, tmp_path: Path) -> None:
    store.insert_measurement(row(1, arch_json='{"a": "comma, \\"quote\\"\\nline"}'))
    store.insert_measurement(row(2, status="failed", error="x, y\nz", latency_ms=None, stable=None))
    out = tmp_path / "rows.csv"
    assert store.export(out, "csv") == 2
    with out.open(newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == list(COLUMNS)
    stored = list(store.rows())
    for g, s in zip(got, stored, strict=True):
        for c in COLUMNS:
            assert g[c] == ("" if s[c] is None else str(s[c])), c
    assert json.loads(got[0]["encoding"]) == [0.5, 1.0]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(UserError, match="does not exist"):
        store.export(tmp_path / "nope" / "x.csv", "csv")
    with pytest.raises(UserError, match="unknown export format"):
        store.export(out, "xlsx")


def test_export_parquet(store: ProfileStore, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    store.insert_measurement(row(1))
    store.insert_measurement(row(2, status="failed", latency_ms=None))
    out = tmp_path / "rows.parquet"
    assert store.export(out, "parquet") == 2
    table = pq.read_table(out)
    assert table.column_names == list(COLUMNS)
    assert table.column("latency_ms").to_pylist() == [pytest.approx(1.1), None]
    assert table.column("status").to_pylist() == ["ok", "failed"]


def test_export_parquet_without_pyarrow(store: ProfileStore, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="pip install pyarrow"):
        store.export(tmp_path / "x.parquet", "parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_store_survives_open_by_two_processes(tmp_path: Path) -> None:
    """Two processes creating the same new store at once both succeed (schema race)."""
    path = tmp_path / "race.db"
    code = (
        "import sys; from profiling.store import ProfileStore\n"
        "st = ProfileStore(sys.argv[1]); st.bind_space('s', 'sk', {}, []); st.close()"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(3)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with ProfileStore(path) as st:
        assert st.integrity_check() == "ok"
        assert st.space_binding()["space_key"] == "sk"
    assert os.path.getsize(path) > 0


def test_select_is_the_read_query(tmp_path: Path) -> None:
    """Readers get rows through `select` (columns, kinds, equality), never their own SQL."""
    with ProfileStore(tmp_path / "p.db") as store:
        for kind, h in (("profile", "a"), ("repeat", "a"), ("measure", "b")):
            store.insert_measurement(row(0, kind=kind, arch_hash=h))
        got = store.select(("arch_hash", "kind"), kinds=("profile", "repeat"))
        assert got == [{"arch_hash": "a", "kind": "profile"}, {"arch_hash": "a", "kind": "repeat"}]
        assert [r["kind"] for r in store.select(kinds=("measure",), arch_hash="b")] == ["measure"]
        with pytest.raises(ValueError, match="unknown columns"):
            store.select(("nope",))
        with pytest.raises(ValueError, match="kinds must be among"):
            store.select(kinds=("profiles",))


def test_insert_measurements_is_one_transaction(tmp_path: Path) -> None:
    with ProfileStore(tmp_path / "p.db") as store:
        kinds = store.insert_measurements([row(0, arch_hash="a"), row(0, arch_hash="a")])
        assert kinds == ["profile", "repeat"]  # the raced-duplicate rule, as insert_measurement
        with pytest.raises(ValueError):  # one bad row: nothing of the batch is stored
            store.insert_measurements([row(0, arch_hash="c"), row(1, kind="nope")])
        assert store.count_rows() == 2


def test_one_schema_for_every_store(tmp_path: Path) -> None:
    """The predictor's synthetic store is a ProfileStore; no module but the store has SQL DDL
    or reads the measurements table itself."""
    from predictor.synthetic import SyntheticSpace, make_synthetic_store

    db = tmp_path / "s.db"
    make_synthetic_store(db, 60, failed=3)
    with ProfileStore(db, readonly=True) as store:
        assert store.space_binding()["space_key"] == SyntheticSpace().key
        assert store.count_rows(kind="profile", status="failed") == 3
        assert store.count_rows(kind="profile", status="ok") == 60
        assert store.integrity_check() == "ok"
    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(p.relative_to(root))
        for layer in ("targets", "profiling", "predictor", "hwnas")
        for p in (root / layer).rglob("*.py")
        if (root / "profiling" / "store") not in p.parents
        and any(sql in p.read_text() for sql in ("CREATE TABLE", "FROM measurements"))
    ]
    assert not offenders, f"SQL of the profile store outside profiling/store/: {offenders}"
