"""The `box` head (Appendix A): notation, counts, located errors, prediction and loss."""

import json

import pytest
import torch
from helpers import SPECS
from vggspec.compiler import Box, FullyConnected, SpecError, format_spec, parse
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.lowering.net import build, check_num_classes, densify, with_num_classes

SMALL = "input 16x16 RGB\nconv3-4 maxpool\nconv3-8 maxpool\nFC-12 FC-12 FC-{} box\n"
D_BODY = (SPECS / "D.vgg").read_text().replace("FC-1000 soft-max", "FC-{} box")


def test_box_parses_and_prints_as_the_last_word():
    spec = parse(SMALL.format(12))
    assert spec.layers[-2:] == (FullyConnected(12), Box())
    assert format_spec(spec).splitlines()[-1] == "FC-12 FC-12 FC-12 box"
    assert parse(format_spec(spec)) == spec
    assert parse("conv3-8 fc-4 BOX") == parse("conv3-8 FC-4 box")


@pytest.mark.parametrize(
    ("width", "params"),
    [(4000, 150_648_544), (4, 134_276_932)],  # PCR over 1000 classes; SCR
)
def test_compile_counts_d_with_a_box_head(cli, tmp_path, width, params):
    path = tmp_path / "d.vgg"
    path.write_text(D_BODY.format(width))
    code, out, err = cli("compile", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["params"] == params
    assert [layer["name"] for layer in report["layers"][-2:]] == ["fc8", "box"]
    assert report["layers"][-1]["shape"] == [width]


def test_d_loc_ships_with_the_per_class_head(cli):
    code, out, err = cli("compile", SPECS / "D-loc.vgg", "--json")
    assert code == 0, err
    assert json.loads(out)["params"] == 150_648_544
    demo = parse((SPECS / "demo-loc.vgg").read_text())
    plain = parse((SPECS / "demo.vgg").read_text())
    assert demo.layers[:-2] == plain.layers[:-2] and demo.input == plain.input
    assert demo.layers[-2:] == (FullyConnected(40), Box())


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("input 32x32 RGB\nconv3-8 FC-10 box\n", 2, 15, "FC-10 is not a multiple of 4"),
        ("input 32x32 RGB\nconv3-8 box\n", 2, 9, "box must follow an FC layer"),
        ("input 32x32 RGB\nconv3-8 FC-8 BN box\n", 2, 17, "box must follow an FC layer"),
        ("conv3-8 FC-8 box FC-4\n", 1, 18, "'FC-4' after box: box ends the net"),
        ("conv3-8 FC-8 box box\n", 1, 18, "'box' after box"),
        ("conv3-8 FC-8 box soft-max\n", 1, 18, "after box"),
        ("conv3-8 FC-8 soft-max box\n", 1, 23, "'box' after soft-max"),
    ],
)
def test_a_misplaced_box_is_a_located_error(text, line, column, words):
    with pytest.raises(SpecError) as caught:
        parse(text)
    assert (caught.value.loc.line, caught.value.loc.column) == (line, column)
    assert words in caught.value.message


def test_the_head_gives_the_task_that_training_and_evaluation_ask():
    from vggspec.compiler.ir.ops.box import BOXES
    from vggspec.compiler.ir.ops.task import CLASSIFICATION
    from vggspec.compiler.lowering.net import head_task
    from vggspec.runtime.eval.models import EvalError, check_box_width
    from vggspec.runtime.train.tasks import BoxTraining, training_task

    assert head_task(parse(SMALL.format(12))) is BOXES
    for text in ("conv3-8 FC-10 soft-max", "conv3-8 FC-10"):  # no head: classified
        assert head_task(parse(text)) is CLASSIFICATION
    assert type(training_task(parse(SMALL.format(12)))) is BoxTraining
    with pytest.raises(TypeError):  # a caller must say what it does for every kind
        BOXES.pick(labels=1)
    # One width rule: training's check and evaluation's agree on every width.
    for outputs in range(1, 50):
        for classes in range(1, 13):
            spec = parse(SMALL.format(outputs)) if outputs % 4 == 0 else None
            fits = BOXES.fits(outputs, classes)
            assert fits == (outputs in (4, 4 * classes))
            try:
                check_box_width(outputs, classes, "net")
                evaluated = True
            except EvalError:
                evaluated = False
            assert evaluated == fits
            if spec is not None:
                try:
                    check_num_classes(spec, classes)
                    trained = True
                except VggspecError:
                    trained = False
                assert trained == fits


def test_the_head_width_must_fit_the_data_at_training_time():
    pcr, scr = parse(SMALL.format(40)), parse(SMALL.format(4))
    check_num_classes(pcr, 10)
    check_num_classes(scr, 10)
    check_num_classes(scr, 3)
    with pytest.raises(VggspecError, match=r"FC-40 does not fit data of 3 classes.*FC-12"):
        check_num_classes(pcr, 3)
    check_num_classes(parse("conv3-8 FC-10 soft-max"), 3)  # classifiers are resized
    # resizing for a class count keeps SCR one box and PCR a box per class
    assert with_num_classes(pcr, 3).layers[-2] == FullyConnected(12)
    assert with_num_classes(scr, 3).layers[-2] == FullyConnected(4)
    assert with_num_classes(parse("conv3-8 FC-10"), 3).layers[-1] == FullyConnected(3)


def test_predict_gives_the_raw_boxes_and_the_dense_twin_a_box_map():
    torch.manual_seed(0)
    net = build(parse(SMALL.format(8)), "torch").eval()
    x = torch.randn(2, 3, 16, 16)
    assert [n for n, _ in net.head()] == ["box"]
    out = net.predict(x)
    assert out.shape == (2, 8) and torch.equal(out, net(x))  # no soft-max
    dense = densify(net)
    assert [n for n, _ in dense.head()] == ["box"]  # no score_mean
    # FC→conv for boxes: at the net's own input size the map is one position, the same box
    assert torch.allclose(dense.predict(x)[:, :, 0, 0], out, atol=1e-5)
    wide = dense.predict(torch.randn(2, 3, 32, 32))
    assert wide.shape == (2, 8, 5, 5)  # 32 px: an 8x8 map under the 4x4 fc6


def test_euclidean_loss_scr_and_pcr_by_hand():
    scr = build(parse(SMALL.format(4)), "torch")
    scores = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[3.0, 0.5, 0.25, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    # squared error summed over the 4 parameters: 0.0625 + 1 and 4; mean over the batch
    assert scr.loss(scores, target).item() == pytest.approx((1.0625 + 4.0) / 2)
    pcr = build(parse(SMALL.format(8)), "torch")
    scores = torch.tensor([[9.0, 9.0, 9.0, 9.0, 0.5, 0.5, 1.0, 1.0], [0.0] * 4 + [7.0] * 4])
    target = torch.tensor([[1.0, 0.5, 0.25, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
    # only the ground-truth class's 4 outputs count: class 1 of row 0, class 0 of row 1
    assert pcr.loss(scores, target).item() == pytest.approx((1.0625 + 4.0) / 2)
    scores.requires_grad_(True)
    pcr.loss(scores, target).backward()
    assert (
        torch.count_nonzero(scores.grad[0, :4]) == 0
        and torch.count_nonzero(scores.grad[1, 4:]) == 0
    )


def test_box_is_offered_only_where_it_may_stand():
    with pytest.raises(SpecError) as after_fc:
        parse("conv3-8 FC-8, blah")
    assert "box" in after_fc.value.expected.split(", ")
    with pytest.raises(SpecError) as after_conv:
        parse("conv3-8 # a comment naming FC-8\nblah")
    assert "box" not in after_conv.value.expected.split(", ")
    assert "soft-max" in after_conv.value.expected.split(", ")
