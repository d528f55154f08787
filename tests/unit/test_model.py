"""MixNet shapes, versions and Table 1 widths."""

import copy

import pytest
import torch

from mixnet_bids.model import MODALITIES, DilateResUnit, MixNetV2, build_mixnet, fold_batchnorm


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
@pytest.mark.parametrize("size", [(37, 53), (48, 240), (64, 64), (1, 1)])
def test_output_shape_any_size(version, size):
    torch.manual_seed(0)
    model = build_mixnet(version, n_classes=4).eval()
    x = torch.randn(2, len(MODALITIES), *size)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 4, *size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_no_pooling_variant_and_train_mode_backward(version):
    model = build_mixnet(version, n_classes=9, pool=False)
    x = torch.randn(2, 3, 24, 30)
    y = model(x)
    assert y.shape == (2, 9, 24, 30)
    y.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_wrong_channel_count_is_refused():
    with pytest.raises(ValueError, match="expects"):
        build_mixnet("v3", 4)(torch.zeros(1, 2, 16, 16))


def test_unknown_version():
    with pytest.raises(ValueError, match="unknown MixNet version"):
        build_mixnet("v4", 4)


def test_dilate_res_unit_identity_and_projection_shortcuts():
    same = DilateResUnit(72, 72, 72, 2)
    assert isinstance(same.shortcut, torch.nn.Identity)
    proj = DilateResUnit(72, 24, 24, 4)
    assert isinstance(proj.shortcut, torch.nn.Conv2d)
    assert proj(torch.randn(1, 72, 20, 20)).shape == (1, 24, 20, 20)
    # the 3x3 conv is dilated as asked and keeps f/2 filters
    conv = proj.body[1][2]
    assert conv.dilation == (4, 4) and conv.out_channels == 12


def test_table1_widths():
    v1 = build_mixnet("v1", 4)
    assert [lvl.body[0][2].in_channels for lvl in v1.levels] == [72] * 5
    assert [lvl.body[1][2].dilation[0] for lvl in v1.levels] == [2, 1, 4, 1, 8]
    v2 = MixNetV2()
    stream = v2.streams[0]
    assert [lvl.body[0][2].in_channels for lvl in stream] == [72, 48, 72, 48, 72]
    assert [lvl.body[2][2].out_channels for lvl in stream] == [24] * 5
    # 240x240 input with pooling works at 120x120 inside
    v1.eval()
    with torch.inference_mode():
        feats = v1.features(torch.randn(1, 3, 240, 240))
    assert feats.shape == (1, 72 * 6, 120, 120)


def test_v3_streams_are_independent_until_output():
    model = build_mixnet("v3", 4).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        base = model.features(x)
        x2 = x.clone()
        x2[:, 0] += 1.0  # change T1w only
        changed = model.features(x2)
    # InitUnit and levels 1-5, each 72 channels: T1w, IR, FLAIR blocks of 24
    assert base.shape[1] == 6 * 72
    t1w = (torch.arange(base.shape[1]) % 72) < 24
    assert not torch.allclose(base[:, t1w], changed[:, t1w])
    assert torch.equal(base[:, ~t1w], changed[:, ~t1w])


def test_v3_stream_widths():
    v3 = build_mixnet("v3", 4)
    assert v3.init.conv.groups == 3 and v3.init.conv.out_channels == 3 * 24
    for level, dilation in zip(v3.levels, [2, 1, 4, 1, 8]):
        convs = [block[2] for block in level.body]
        assert all(c.groups == 3 for c in convs)
        # per stream: 24 -> 12 -> 12 (3x3, dilated) -> 24
        assert [(c.in_channels // 3, c.out_channels // 3) for c in convs] == [
            (24, 12), (12, 12), (12, 24)]
        assert convs[1].dilation == (dilation, dilation)
        assert isinstance(level.shortcut, torch.nn.Identity)


def test_v3_trains_in_channels_last_bfloat16_with_gradients_that_agree_with_float32():
    # 128 x 128 crops give 64 x 64 feature maps, where the grouped dilated convolutions'
    # bfloat16 weight gradients were NaN in channels-last on an AVX-512 BF16 CPU
    torch.manual_seed(0)
    net = build_mixnet("v3", 10)
    x, y = torch.randn(2, 3, 128, 128), torch.randint(0, 10, (2, 128, 128))

    def gradients(model, layout, bf16):
        model = model.to(memory_format=layout)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.contiguous(memory_format=layout))
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    reference = gradients(copy.deepcopy(net), torch.contiguous_format, False)
    fast = gradients(copy.deepcopy(net), torch.channels_last, True)
    assert torch.isfinite(fast).all()
    assert float((fast - reference).norm() / reference.norm()) < 0.05
    # the same parameters as plain convolutions: the shipped state_dicts load unchanged
    assert [k for k in net.state_dict()] == [k for k in build_mixnet("v3", 10).state_dict()]


@pytest.mark.parametrize("size", [(64, 64), (13, 17), (3, 7)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pyramid_pool_equals_adaptive_average_pooling(size, layout):
    """Every bin, also bins finer than the map (3 rows into 12 bins); in the input's layout;
    in bfloat16 within a few roundings of the exact average (bins of 15 or 13 rows and
    columns included, whose reciprocals bfloat16 cannot hold)."""
    from mixnet_bids.model.mixnet import PYRAMID_BINS, pyramid_pool

    torch.manual_seed(0)
    x = torch.randn(2, 5, *size, dtype=torch.float64).contiguous(memory_format=layout)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.bfloat16, 0.02)):
        pooled = pyramid_pool(x.to(dtype), PYRAMID_BINS)
        for bins, out in zip(PYRAMID_BINS, pooled):
            exact = torch.nn.functional.adaptive_avg_pool2d(x, bins)
            assert out.shape == (2, 5, bins, bins) and out.dtype == dtype
            assert torch.allclose(out.double(), exact, atol=tolerance, rtol=0)
            assert out.is_contiguous(memory_format=layout)


def test_concat_channels_gives_dense_channels_last_gradients():
    """A channel slice of a channels-last gradient is strided: each input gets it dense."""
    from mixnet_bids.model.mixnet import concat_channels

    parts = [torch.randn(2, c, 5, 6).contiguous(memory_format=torch.channels_last)
             .requires_grad_() for c in (3, 4)]
    joined = concat_channels(parts)
    assert torch.equal(joined, torch.cat(parts, dim=1))
    weight = torch.randn(joined.shape).contiguous(memory_format=torch.channels_last)
    (joined * weight).sum().backward()
    for part, grad in zip(parts, weight.split([3, 4], dim=1)):
        assert torch.equal(part.grad, grad)
        assert part.grad.is_contiguous(memory_format=torch.channels_last)


def test_grouped_dilated_conv_trains_in_channels_last_bfloat16_with_right_gradients():
    """Group by group, on the 64 x 64 maps where the grouped channels-last bfloat16 weight
    gradient was NaN: finite gradients that agree with float64, in channels-last."""
    from mixnet_bids.model.mixnet import GroupedDilatedConv2d

    torch.manual_seed(0)
    conv = GroupedDilatedConv2d(36, 36, 3, padding=4, dilation=4, groups=3, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(4, 36, 64, 64).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    weight = conv.weight.detach().double().requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y64 = torch.nn.functional.conv2d(x64, weight, padding=4, dilation=4, groups=3)
    y.float().square().sum().backward()
    y64.square().sum().backward()
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    for fast, exact in ((y.detach(), y64.detach()), (conv.weight.grad, weight.grad),
                        (x.grad, x64.grad)):
        assert torch.isfinite(fast).all()
        assert float((fast.double() - exact).norm() / exact.norm()) < 0.02


@pytest.mark.parametrize("n_classes,upscale", [(4, True), (10, False)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_output_unit_equals_the_3x3_conv_of_features_and_upsampled_priors(n_classes, upscale,
                                                                         layout):
    """The OutputUnit mixes the features and the priors by the kernel's taps (the priors
    before upsampling them): the same function as the paper's form, the 3x3 conv of the
    concatenated features and priors, in either layout."""
    from mixnet_bids.model import OutputUnit

    torch.manual_seed(0)
    unit = OutputUnit(48, n_classes, upscale=upscale).double().eval()
    for module in unit.modules():  # BatchNorm statistics away from the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 48, 30, 26, dtype=torch.float64)
    priors = [torch.nn.functional.interpolate(branch(x), size=x.shape[-2:], mode="bilinear",
                                              align_corners=False) for branch in unit.branches]
    expected = unit.classify(torch.cat([unit.pre(x), *priors], dim=1))
    if upscale:
        expected = torch.nn.functional.interpolate(expected, scale_factor=2.0, mode="bilinear",
                                                   align_corners=False)
    unit = unit.to(memory_format=layout)
    with torch.no_grad():
        assert torch.allclose(unit(x.contiguous(memory_format=layout)), expected, atol=1e-10)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_folded_batchnorms_give_the_same_function_and_leave_the_model_alone(version):
    torch.manual_seed(0)
    model = build_mixnet(version, 4).double()
    for norm in model.modules():  # statistics and affines far from the identity
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.uniform_(-1, 1)
            norm.running_var.uniform_(0.5, 2)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.5, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, 40, 36, dtype=torch.float64)
    with torch.no_grad():
        expected, got = model.eval()(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert 0 < len(norms) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
