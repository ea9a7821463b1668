"""Model files and training state: round trips, refusals, atomic writes, RNG restore."""

from __future__ import annotations

import json
import os
import pickle
import random
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from mrisr.checkpoint import (
    METADATA_KEY,
    convert_torch_checkpoint,
    find_model_file,
    load_model,
    model_sha256,
    read_description,
    save_model,
    weights_sha256,
)
from mrisr.errors import CheckpointError, ConfigError
from mrisr.training.state_file import (
    capture_rng_state,
    load_training_state,
    restore_rng_state,
    save_training_state,
)

torch.set_num_threads(1)

DESCRIPTION = {
    "factor_range": [2, 6],
    "recipe": "l1-warmup+gan",
    "training_data": {"volumes": 3, "pairs": 1200},
    "step": 500,
}


class TinyGenerator(nn.Module):
    """Generator interface in miniature: bilinear rows + a learned 3x3 residual."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.config = {"width": width}
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, out_rows: int) -> torch.Tensor:
        up = F.interpolate(x, size=(out_rows, x.shape[-1]), mode="bilinear", align_corners=False)
        return up + self.body(up)


class OtherGenerator(TinyGenerator):
    """Same name, another architecture: an extra layer and a fixed width."""

    def __init__(self, width: int = 4) -> None:
        super().__init__(width=8)
        self.extra = nn.Conv2d(1, 1, 1)


class Exploit:
    """Unpickling this creates ``path``: the proof that a file was executed."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture
def generators(monkeypatch):
    """mrisr.networks.GENERATORS with ``tiny-test`` added (a stand-in table if absent)."""
    try:
        from mrisr.networks import GENERATORS as table
    except Exception:  # networks not importable yet: a stand-in module
        module = types.ModuleType("mrisr.networks")
        module.GENERATORS = {}
        monkeypatch.setitem(sys.modules, "mrisr.networks", module)
        table = module.GENERATORS
    monkeypatch.setitem(table, "tiny-test", TinyGenerator)
    return table


@pytest.fixture
def saved(tmp_path, generators):
    torch.manual_seed(0)
    generator = TinyGenerator(width=4)
    path = save_model(
        tmp_path / "model.safetensors", generator, name="tiny-test", description=DESCRIPTION
    )
    return path, generator


def no_temporaries(folder) -> bool:
    # mrisr.io.files.write_atomic names its temporaries ".<stem>.tmp-<random><ending>".
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------ round trip


def test_round_trip_gives_identical_outputs_and_full_description(saved):
    path, generator = saved
    loaded, description = load_model(path)
    x = torch.rand(2, 1, 5, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x, 17), generator(x, 17))
    assert not loaded.training
    assert description["generator"] == {"name": "tiny-test", "config": {"width": 4}}
    assert description["factor_range"] == [2.0, 6.0]
    assert description["axis_convention"] == "rows = thick axis"
    assert description["normalisation"]["method"] == "percentile"
    assert description["recipe"] == "l1-warmup+gan"
    assert description["training_data"] == {"volumes": 3, "pairs": 1200}
    assert description["step"] == 500  # extra keys kept
    assert description["format_version"] == 1
    assert description["parameters"] == sum(p.numel() for p in generator.parameters())
    assert description["weights_sha256"] == weights_sha256(generator.state_dict())
    assert read_description(path) == description
    assert len(model_sha256(path)) == 64
    assert no_temporaries(path.parent)


def test_model_files_get_the_usual_permissions_not_private_ones(saved):
    # A model installed system-wide must be readable by every user.
    path, _ = saved
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_weights_hash_ignores_description_and_the_loaded_description_can_be_saved_back(
    saved, tmp_path
):
    path, generator = saved
    _, description = load_model(path)
    again = save_model(
        tmp_path / "again.safetensors", generator, name="tiny-test", description=description
    )
    assert read_description(again)["weights_sha256"] == description["weights_sha256"]
    assert model_sha256(again) != model_sha256(path) or True  # time stamp may differ


def test_weights_are_stored_float32_on_cpu_and_wrappers_are_unwrapped(tmp_path, generators):
    generator = TinyGenerator().to(torch.float64)

    class Wrapper(nn.Module):  # like DistributedDataParallel: the network under .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    path = save_model(tmp_path, Wrapper(generator), name="tiny-test", description=DESCRIPTION)
    assert path == tmp_path / "model.safetensors"
    loaded, _ = load_model(tmp_path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert set(loaded.state_dict()) == set(generator.state_dict())


# ------------------------------------------------------------------- refusals


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("kind", ["zip", "legacy", "plain-pickle"])
@pytest.mark.parametrize("name", ["weights.pt", "disguised.safetensors"])
def test_pickled_file_is_refused_without_being_executed(tmp_path, generators, kind, name):
    marker = tmp_path / "executed"
    payload = {"body.0.weight": torch.zeros(4, 1, 3, 3), "boom": Exploit(marker)}
    path = tmp_path / name
    if kind == "plain-pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=kind == "zip")
    with pytest.raises(CheckpointError, match="pickled PyTorch file") as caught:
        load_model(path)
    assert "convert_torch_checkpoint" in str(caught.value) and str(path) in str(caught.value)
    assert not marker.exists()
    # The payload is live: unpickling it really would have run code.
    pickle.loads(pickle.dumps(Exploit(tmp_path / "proof")))
    assert (tmp_path / "proof").exists()


@pytest.mark.parametrize("keep", [0, 5, 9, 60, "half", "all-but-one"])
def test_truncated_file_is_refused(saved, keep):
    path, _ = saved
    data = path.read_bytes()
    size = {"half": len(data) // 2, "all-but-one": len(data) - 1}.get(keep, keep)
    path.write_bytes(data[:size])
    with pytest.raises(CheckpointError, match="truncated") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_corrupted_weights_are_refused_by_their_hash(saved):
    path, _ = saved
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)


@pytest.mark.parametrize(
    "metadata, match",
    [
        (None, "has no 'mrisr' description"),
        ({"other": "x"}, "has no 'mrisr' description"),
        ({METADATA_KEY: "{not json"}, "not valid JSON"),
        (
            {METADATA_KEY: json.dumps({"format": "mrisr-model", "format_version": 1})},
            "generator is",
        ),
        ({METADATA_KEY: json.dumps([1, 2])}, "not a JSON object"),
    ],
)
def test_missing_or_invalid_description_is_refused(tmp_path, metadata, match):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_newer_format_is_refused_with_upgrade_advice(saved, tmp_path):
    path, generator = saved
    description = read_description(path)
    description["format_version"] = 99
    tensors = {k: v.contiguous() for k, v in generator.state_dict().items()}
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={METADATA_KEY: json.dumps(description)})
    with pytest.raises(CheckpointError, match="upgrade mrisr"):
        load_model(newer)


def test_unknown_generator_name_is_refused(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="generator 'tiny-test'.*does not know"):
        load_model(path, generators={"rrdbnet": TinyGenerator})


def test_mismatched_architecture_is_refused_listing_the_differences(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="do not fit") as caught:
        load_model(path, generators={"tiny-test": OtherGenerator})
    message = str(caught.value)
    assert "missing 2 tensor(s): extra.bias, extra.weight" in message
    assert "shape mismatch" in message and "body.0.weight [4, 1, 3, 3] vs [8, 1, 3, 3]" in message


def test_config_the_class_does_not_accept_is_refused(saved):
    path, _ = saved

    class NoWidth(nn.Module):
        def __init__(self) -> None:
            super().__init__()

    with pytest.raises(CheckpointError, match="cannot be built from the recorded config"):
        load_model(path, generators={"tiny-test": NoWidth})


# ----------------------------------------------------------- save validation


def test_save_refuses_what_could_not_be_loaded_back(tmp_path, generators):
    target = tmp_path / "m.safetensors"
    with pytest.raises(ConfigError, match="unknown generator name.*Fix: pass as name="):
        save_model(target, TinyGenerator(), name="no-such", description=DESCRIPTION)
    with pytest.raises(ConfigError, match="factor_range"):
        save_model(target, TinyGenerator(), name="tiny-test", description={})
    with pytest.raises(ConfigError, match="not a range.*Fix: pass description="):
        save_model(target, TinyGenerator(), name="tiny-test", description={"factor_range": [4, 2]})
    with pytest.raises(ConfigError, match="JSON"):
        save_model(
            target, TinyGenerator(), name="tiny-test", description={**DESCRIPTION, "x": object()}
        )
    unconfigured = TinyGenerator()
    del unconfigured.config
    with pytest.raises(ConfigError, match="no `config` dict"):
        save_model(target, unconfigured, name="tiny-test", description=DESCRIPTION)
    wrong = TinyGenerator()
    wrong.config = {"depth": 3}
    with pytest.raises(ConfigError, match="cannot rebuild it"):
        save_model(target, wrong, name="tiny-test", description=DESCRIPTION)
    with pytest.raises(ConfigError, match=".safetensors"):
        save_model(tmp_path / "m.pt", TinyGenerator(), name="tiny-test", description=DESCRIPTION)
    assert list(tmp_path.iterdir()) == []


def test_failed_model_save_keeps_the_old_file_and_leaves_no_temporary(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(path, TinyGenerator(width=6), name="tiny-test", description=DESCRIPTION)
    assert path.read_bytes() == before
    assert no_temporaries(path.parent)


# --------------------------------------------------------------- run folders


def test_run_folder_resolution_rule(tmp_path, generators):
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(CheckpointError, match="holds no .safetensors"):
        find_model_file(folder)
    (folder / "state.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="only pickled files: state.pt"):
        find_model_file(folder)
    old = save_model(
        folder / "step_100.safetensors", TinyGenerator(), name="tiny-test", description=DESCRIPTION
    )
    new = save_model(
        folder / "step_050.safetensors", TinyGenerator(), name="tiny-test", description=DESCRIPTION
    )
    os.utime(old, (1_000, 1_000))
    assert find_model_file(folder) == new  # newest, not last by name
    best = save_model(
        folder / "best.safetensors", TinyGenerator(), name="tiny-test", description=DESCRIPTION
    )
    assert find_model_file(folder) == best
    model = save_model(folder, TinyGenerator(), name="tiny-test", description=DESCRIPTION)
    assert find_model_file(folder) == model == folder / "model.safetensors"


def test_convert_torch_checkpoint_refuses_an_unknown_generator_name_with_the_fix(
    tmp_path, generators
):
    source = tmp_path / "net_g.pth"
    torch.save(TinyGenerator(width=3).state_dict(), source)
    with pytest.raises(ConfigError) as caught:
        convert_torch_checkpoint(
            source, tmp_path / "m.safetensors", name="no-such", config={}, description=DESCRIPTION
        )
    message = str(caught.value)
    assert f"{source}: unknown generator name 'no-such'; expected one of" in message, message
    assert "tiny-test" in message and "Fix: pass as name=" in message, message
    assert not (tmp_path / "m.safetensors").exists()


def test_convert_torch_checkpoint_reads_weights_only_and_writes_a_loadable_model(
    tmp_path, generators
):
    generator = TinyGenerator(width=3)
    source = tmp_path / "net_g.pth"
    torch.save(
        {"params_ema": {f"module.{k}": v for k, v in generator.state_dict().items()}}, source
    )
    target = convert_torch_checkpoint(
        source,
        tmp_path / "net_g.safetensors",
        name="tiny-test",
        config={"width": 3},
        description=DESCRIPTION,
    )
    loaded, _ = load_model(target)
    x = torch.rand(1, 1, 4, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x, 9), generator(x, 9))
    marker = tmp_path / "executed"
    torch.save({"boom": Exploit(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        convert_torch_checkpoint(
            tmp_path / "evil.pth",
            tmp_path / "evil.safetensors",
            name="tiny-test",
            config={},
            description=DESCRIPTION,
        )
    assert not marker.exists()


# ------------------------------------------------------------ training state


def training_objects():
    torch.manual_seed(0)
    model = TinyGenerator()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    return model, optimizer, scheduler


def test_training_state_round_trip_restores_optimiser_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = training_objects()
    for _ in range(3):
        loss = model(torch.rand(2, 1, 4, 6), 8).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = save_training_state(
        tmp_path / "state.pt",
        {
            "step": 3,
            "stage": "gan",
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema,
            "losses": np.array([0.5, 0.25]),  # numpy arrays come back as tensors
            "best": np.float32(0.25),
            "rng": capture_rng_state(),
        },
    )
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # noqa: B018  (scramble)

    state = load_training_state(path)
    restore_rng_state(state["rng"])
    draws = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(draws[0], expected[0])
    np.testing.assert_array_equal(draws[1], expected[1])
    assert draws[2:] == expected[2:]

    assert state["step"] == 3 and state["stage"] == "gan" and state["best"] == 0.25
    assert torch.equal(state["losses"], torch.tensor([0.5, 0.25], dtype=torch.float64))
    assert all(torch.equal(state["ema"][k], ema[k]) for k in ema)
    _, optimizer2, scheduler2 = training_objects()
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    assert scheduler2.last_epoch == 3 and optimizer2.param_groups[0]["lr"] == pytest.approx(5e-4)
    first = next(iter(optimizer.state.values()))
    again = next(iter(optimizer2.state.values()))
    assert torch.equal(first["exp_avg"], again["exp_avg"])


def test_kill_during_training_state_save_keeps_the_previous_state(tmp_path, monkeypatch):
    path = save_training_state(tmp_path / "state.pt", {"step": 1})

    def killed(*args):
        raise KeyboardInterrupt  # what a kill between write and rename looks like

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(path, {"step": 2})
    monkeypatch.undo()
    assert load_training_state(path) == {"step": 1}
    assert no_temporaries(tmp_path)


def test_state_that_could_not_be_resumed_is_refused_at_save_time(tmp_path):
    path = save_training_state(tmp_path / "state.pt", {"step": 1})
    with pytest.raises(ConfigError, match="weights_only=True"):
        save_training_state(path, {"step": 2, "sampler": random.Random(0)})
    assert load_training_state(path) == {"step": 1}
    assert no_temporaries(tmp_path)


def test_foreign_truncated_or_missing_training_state_is_refused_without_execution(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"boom": Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="cannot be read as a training state"):
        load_training_state(evil)
    assert not marker.exists()

    plain = tmp_path / "plain.pt"
    torch.save({"step": 1}, plain)
    with pytest.raises(CheckpointError, match="not an mrisr training state"):
        load_training_state(plain)

    good = save_training_state(tmp_path / "state.pt", {"w": torch.rand(1000)})
    good.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_training_state(good)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_training_state(tmp_path / "missing.pt")


def test_real_generator_round_trip_through_the_generators_table(tmp_path):
    from mrisr.networks import build_generator

    torch.manual_seed(0)
    generator = build_generator("rrdbnet", size="small").eval()
    path = save_model(
        tmp_path / "rrdb.safetensors", generator, name="rrdbnet", description=DESCRIPTION
    )
    loaded, description = load_model(path)
    assert description["generator"] == {"name": "rrdbnet", "config": generator.config}
    x = torch.rand(2, 1, 6, 21)
    with torch.no_grad():
        assert torch.equal(loaded(x, 23), generator(x, 23))
