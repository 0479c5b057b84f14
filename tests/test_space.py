from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest

from hwnas.space import (
    CELL_OPS,
    Architecture,
    get_space,
    list_spaces,
    load_architecture,
    sample_architectures,
    sample_nth,
    save_architecture,
)
from targets.basics import UserError


def test_named_spaces_registered():
    assert {"tiny", "digits", "cifar"} <= set(list_spaces())
    with pytest.raises(UserError, match="unknown space 'nope'.*tiny"):
        get_space("nope")


def test_space_count_matches_brute_force_on_small_config():
    # a one-node cell: 1 input pair x 7^2 ops; depth {1, 2}, window 2: 9 + 81 stage choices
    from hwnas.space import SpaceConfig

    cfg = SpaceConfig("t", 3, 8, 10, 4, depth_choices=(1, 2), window=2, nodes=1)
    assert cfg.cell_count() == 49
    assert cfg.stage_count() == 9 + 81
    assert cfg.count() == (49 * 90) ** 3 * 49**2
    assert math.log10(get_space("cifar").count()) > 70


@pytest.mark.parametrize("name", ["tiny", "digits", "cifar"])
def test_json_round_trip_and_hash_stable(name, tmp_path):
    for arch in sample_architectures(get_space(name), seed=7, n=5):
        path = tmp_path / f"{arch.hash}.json"
        save_architecture(arch, path)
        back = load_architecture(path)
        assert back == arch
        assert back.hash == arch.hash
        assert json.loads(path.read_text())["schema"] == "hwnas.architecture/1"


def test_sampling_is_seeded_and_varied():
    space = get_space("tiny")
    a = [x.hash for x in sample_architectures(space, 3, 20)]
    assert a == [x.hash for x in sample_architectures(space, 3, 20)]
    assert len(set(a)) == 20
    assert a != [x.hash for x in sample_architectures(space, 4, 20)]
    depths = {s.depth for x in sample_architectures(space, 0, 50) for s in x.stages}
    assert depths == set(space.depth_choices)


def test_sampling_reproducible_across_processes():
    code = (
        "from hwnas.space import get_space, sample_architectures;"
        "print(','.join(a.hash for a in sample_architectures(get_space('tiny'), 11, 5)))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": str(h), "PATH": ""},
        ).stdout.strip()
        for h in (1, 2)
    }
    assert outs == {",".join(a.hash for a in sample_architectures(get_space("tiny"), 11, 5))}


def _base() -> dict:
    return sample_nth(get_space("tiny"), 0, 0).to_dict()


def _bad(mutate) -> str:
    data = copy.deepcopy(_base())
    mutate(data)
    with pytest.raises(UserError) as info:
        Architecture.from_dict(data, where="a.json")
    return str(info.value)


def test_validation_names_the_field():
    def unknown_op(d):
        d["stages"][1]["cell"][2][0][0] = "conv_7x7"

    msg = _bad(unknown_op)
    assert "stages[1].cell[2][0]" in msg and "conv_7x7" in msg and CELL_OPS[0] in msg

    def missing_edge(d):
        d["reductions"][0]["cell"][3].pop()

    assert "reductions[0].cell[3]" in _bad(missing_edge)

    def index_out_of_range(d):
        d["stages"][0]["cell"][0][1][1] = 5

    msg = _bad(index_out_of_range)
    assert "stages[0].cell[0][1]" in msg and "out of range" in msg

    def bad_depth(d):
        d["stages"][2]["depth"] = 9

    msg = _bad(bad_depth)
    assert "stages[2].depth" in msg and "[1, 2, 3]" in msg

    def wrong_space(d):
        d["space"]["channels"] = 99

    assert "wrong space" in _bad(wrong_space)

    def no_schema(d):
        del d["schema"]

    assert "schema" in _bad(no_schema)

    def bad_connection_window(d):
        d["stages"][0]["depth"] = 3
        d["stages"][0]["connections"] = [
            [["skip_connect", 0], ["skip_connect", 1]],
            [["skip_connect", 0], ["skip_connect", 2]],
            [["skip_connect", 0], ["skip_connect", 3]],  # state 0 is outside cell 2's window
        ]

    assert "stages[0].connections[2][0]" in _bad(bad_connection_window)

    def same_input_twice(d):
        d["stages"][0]["cell"][0] = [["skip_connect", 1], ["max_pool_3x3", 1]]

    assert "must differ" in _bad(same_input_twice)


def test_malformed_json_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"schema": ')
    with pytest.raises(UserError, match=r"x.json: not valid JSON \(line 1"):
        load_architecture(p)
    with pytest.raises(UserError, match="no such file"):
        load_architecture(tmp_path / "missing.json")


# -- data variants (README 'Your own data') ---------------------------------------------------
def test_a_data_variant_is_named_for_what_differs_and_rebuilt_from_its_name(tmp_path):
    """`tiny` for grey images of 3 classes is `tiny-1ch-3class`: the name alone rebuilds it
    (run configs, stores and Ray workers keep only the name), every choice is tiny's."""
    from hwnas.space import space_variant

    tiny = get_space("tiny")
    grey3 = space_variant(tiny, in_channels=1, num_classes=3)
    assert grey3.name == "tiny-1ch-3class" and get_space("tiny-1ch-3class") == grey3
    assert (grey3.in_channels, grey3.num_classes) == (1, 3) and grey3.key != tiny.key
    assert {k: v for k, v in grey3.to_dict().items() if k not in ("name", "description", "in_channels", "num_classes")} == {
        k: v for k, v in tiny.to_dict().items() if k not in ("name", "description", "in_channels", "num_classes")
    }
    assert get_space("tiny-3class").in_channels == 3 and get_space("digits-3ch").in_channels == 3
    assert space_variant(grey3, in_channels=3, num_classes=10) == tiny  # back to the registered space
    # an architecture of the variant round-trips; one whose space claims the name but differs is refused
    arch = sample_nth(grey3, 0, 0)
    save_architecture(arch, tmp_path / "a.json")
    assert load_architecture(tmp_path / "a.json") == arch
    bad = json.loads(arch.to_json())
    bad["space"]["num_classes"] = 4
    with pytest.raises(UserError, match="claims the registered space 'tiny-1ch-3class'"):
        Architecture.from_dict(bad)


def test_a_variant_searches_at_its_base_space_proxy_width():
    from hwnas.search.config import SearchConfig, search_channels

    assert search_channels(SearchConfig(space="cifar-3class"), get_space("cifar-3class")) == 16
    assert search_channels(SearchConfig(space="tiny-3class"), get_space("tiny-3class")) == 10


def test_a_variant_of_one_class_or_an_unknown_base_is_refused():
    from hwnas.space import space_variant

    with pytest.raises(UserError, match="at least 2 classes"):
        space_variant(get_space("tiny"), num_classes=1)
    with pytest.raises(UserError, match="at least 2 classes"):
        get_space("tiny-1class")
    with pytest.raises(UserError, match="use 'tiny'"):
        get_space("tiny-10class")  # tiny itself: one name per network
    with pytest.raises(UserError, match="unknown space 'nope-3class'"):
        get_space("nope-3class")


@pytest.mark.parametrize("name", ["tiny", "digits"])
def test_the_head_rule_counts_what_the_network_runs(name):
    """`macs_floor` is below every network's multiply-adds, and `head_share` x the floor is the
    classifier's change exactly (the rule that keeps a predictor for a class-count variant)."""
    from hwnas.nets.network import build_network
    from hwnas.space import head_share, space_variant
    from hwnas.space.config import macs_floor
    from hwnas.train.evaluate import count_macs

    space = get_space(name)
    three = space_variant(space, num_classes=3)
    for i in range(3):
        arch = sample_nth(space, 0, i)
        macs = count_macs(build_network(arch).eval(), space.input_shape)
        other = Architecture(space=three, stages=arch.stages, reductions=arch.reductions)
        assert macs >= macs_floor(space)
        assert macs - count_macs(build_network(other).eval(), three.input_shape) == pytest.approx(
            head_share(space, three) * macs_floor(space)
        )
