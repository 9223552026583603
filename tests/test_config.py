"""medrecon.config: strict YAML -> frozen dataclasses, dotted overrides; medrecon.utils_io: atomic writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from medrecon.config import ConfigError, apply_overrides, dump_config, load_config
from medrecon.utils_io import atomic_save_npy, atomic_save_torch, atomic_write, atomic_write_text


@dataclass(frozen=True)
class Inner:
    n_iter: int = 10
    lam: float = 1e-2
    step: float | None = None
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Method:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    window: tuple[float, float] | None = None
    methods: list[Method] = field(default_factory=list)
    path: Path | None = None
    flag: bool = False


def test_yaml_loads_into_frozen_dataclasses(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: x\ninner: {n_iter: 5, lam: 1e-3, kind: b}\nsizes: [3, 4]\nwindow: [-1000, 1000]\n"
        "methods:\n  - {name: tv, options: {lam: 0.1}}\npath: a/b.npy\nflag: true\n"
    )
    cfg = load_config(p, Outer)
    assert cfg.inner == Inner(n_iter=5, lam=1e-3, kind="b")  # 1e-3 is a float (YAML 1.2), not a string
    assert isinstance(cfg.inner.lam, float)
    assert cfg.sizes == (3, 4) and cfg.window == (-1000.0, 1000.0) and isinstance(cfg.window[0], float)
    assert cfg.methods == [Method("tv", {"lam": 0.1})]
    assert cfg.path == Path("a/b.npy") and cfg.flag is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "y"  # type: ignore[misc]


def test_int_is_accepted_for_float_but_not_bool():
    assert load_config({"name": "x", "inner": {"lam": 1}}, Outer).inner.lam == 1.0
    with pytest.raises(ConfigError, match=r"'inner.lam': expected float, got bool"):
        load_config({"name": "x", "inner": {"lam": True}}, Outer)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"name": "x", "inner": {"n_itr": 3}},
            r"unknown config key 'inner.n_itr'; valid keys of 'inner': n_iter, lam, step, kind",
        ),
        ({"name": "x", "colour": 1}, r"unknown config key 'colour'"),
        ({"name": "x", "inner": {"n_iter": "ten"}}, r"'inner.n_iter': expected int, got str 'ten'"),
        ({"name": "x", "inner": {"n_iter": 2.5}}, r"'inner.n_iter': expected int, got float"),
        ({"name": "x", "inner": {"kind": "c"}}, r"'inner.kind': expected one of 'a', 'b', got 'c'"),
        ({"name": "x", "inner": {"step": "big"}}, r"'inner.step': expected float \| null"),
        ({"name": "x", "sizes": [1, "2"]}, r"'sizes.1': expected int"),
        (
            {"name": "x", "window": [1.0]},
            r"'window': expected tuple\[float, float\] \| null, got list \[1.0\]",
        ),
        ({"name": "x", "methods": [{"options": {}}]}, r"missing required config key 'methods.0.name'"),
        ({"inner": {}}, r"missing required config key 'name'"),
        ({"name": "x", "inner": 3}, r"'inner': expected a mapping"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data, Outer)


def test_overrides_parse_yaml_values_and_index_lists():
    data = {"name": "x", "methods": [{"name": "fbp"}, {"name": "tv", "options": {"lam": 0.1}}]}
    cfg = load_config(
        data,
        Outer,
        overrides=[
            "inner.n_iter=50",
            "inner.lam=1e-4",
            "methods.tv.options.lam=0.2",
            "methods.0.options.filter=hann",
            "sizes=[5, 6]",
            "window=null",
        ],
    )
    assert cfg.inner.n_iter == 50 and cfg.inner.lam == 1e-4
    assert cfg.methods[1].options == {"lam": 0.2} and cfg.methods[0].options == {"filter": "hann"}
    assert cfg.sizes == (5, 6) and cfg.window is None
    assert data["methods"][1]["options"]["lam"] == 0.1  # the input is not modified


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inner.n_iter", r"must look like key.sub=value"),
        ("methods.7.name=a", r"index 7 out of range"),
        ("methods.nope.options.lam=1", r"'nope' is not a list position or the name of exactly one entry"),
        ("name.sub=1", r"name is a str, not a mapping"),
        ("inner.bogus=1", r"unknown config key 'inner.bogus'"),
        ("inner.n_iter=[1", r"invalid YAML"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"name": "x", "methods": [{"name": "tv"}]}, Outer, overrides=[override])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", Outer)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml", Outer)
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml", Outer)


def test_dump_round_trips(tmp_path):
    cfg = load_config(
        {
            "name": "x",
            "window": [0, 1],
            "methods": [{"name": "tv", "options": {"lam": 1e-3}}],
            "path": "p.npy",
        },
        Outer,
    )
    p = tmp_path / "out.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p, Outer) == cfg


def test_apply_overrides_creates_missing_mappings():
    assert apply_overrides({}, ["a.b.c=3"]) == {"a": {"b": {"c": 3}}}


def test_atomic_write_replaces_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "one")

    def failing(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_text() == "one"  # the old content survives
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_text(tmp_path / "no" / "f.txt", "x")


def test_atomic_savers(tmp_path):
    import numpy as np
    import torch

    atomic_save_npy(np.arange(3), tmp_path / "a.npy")
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2]
    atomic_save_torch({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert torch.load(tmp_path / "m.pt", weights_only=True)["w"].tolist() == [1.0, 1.0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.npy", "m.pt"]
