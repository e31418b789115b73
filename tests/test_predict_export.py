"""``lort predict`` and ``lort export`` on finished runs: the embedded digits default, the
shared CIFAR-10 JPEGs (flip averaging), and a timm backbone read through its own input config.
Predictions reproduce the run's own ``logits.npy``; exported modules reproduce lort's logits to
1e-4 relative for all twelve methods (TorchScript), and for some in pt2 and ONNX."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cli_helpers import flat, ok, one_line_error, run_cli
from lort.data.transforms import IMAGENET_MEAN, IMAGENET_STD, TransformSpec, build_transform
from lort.deploy.export import export_module, preparation, serialise
from lort.methods import METHODS
from lort.run.finished import open_run
from lort.run.trained import open_trained
from lort.stage2.problem import load_data

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    ok("fit", "--out", out, "--epochs1", "3", "--epochs2", "4")
    return out


@pytest.fixture(scope="module")
def cifar_run(small_cifar_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cifar") / "run"
    ok(
        "fit", "--dataset", "imagefolder", "--data-root", small_cifar_folder, "--arch", "resnet8",
        "--epochs1", "2", "--epochs2", "2", "--smooth", "0.5", "--out", out,
    )  # fmt: skip
    return out


def config_value(run: Path, key: str) -> str:
    return str(yaml.safe_load((run / "config.yaml").read_text())[key])


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_predict_reproduces_the_digits_runs_logits(digits_run: Path, tmp_path: Path) -> None:
    data = load_data(open_trained(digits_run).cfg)
    images = tmp_path / "test_images.npy"
    np.save(images, data.sources["test"])  # N x 1 x 8 x 8 floats in [0, 1], as decoded
    logits, out = tmp_path / "logits.npy", tmp_path / "pred.json"
    result = ok("predict", digits_run, images, "--format", "json", "--out", out,
                "--logits", logits, "--top-k", "3")  # fmt: skip
    assert "classified 300 inputs" in flat(result.output)
    np.testing.assert_array_equal(np.load(logits), np.load(digits_run / "logits.npy"))
    pred = json.loads(out.read_text())
    assert pred["method"] == "lort" and pred["flip_averaging"] is False
    top = pred["predictions"][5]["top"]
    assert pred["predictions"][5]["input"] == f"{images}[5]"
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["index"] == int(np.load(digits_run / "logits.npy")[5].argmax())


def test_predict_digit_images_as_a_table(digits_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    data = load_data(open_trained(digits_run).cfg)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(3):
        pixels = np.round(data.sources["test"][i, 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    result = ok("predict", digits_run, folder, "--top-k", "2")
    text = flat(result.output)
    assert "0.png" in text and "2.png" in text and text.count("%)") == 6  # 3 rows x top 2
    Image.new("L", (9, 9)).save(folder / "big.png")
    bad = run_cli("predict", digits_run, folder / "big.png")
    assert bad.exit_code != 0 and "is 9x9; this run's network takes 8x8" in flat(bad.output)


def test_predict_cifar_test_images_equal_the_runs_logits(
    cifar_run: Path, small_cifar_folder: Path, tmp_path: Path
) -> None:
    logits, csv_out = tmp_path / "logits.npy", tmp_path / "pred.csv"
    ok("predict", cifar_run, small_cifar_folder / "test", "--format", "csv", "--out", csv_out,
       "--logits", logits)  # fmt: skip
    got, want = np.load(logits), np.load(cifar_run / "logits.npy")
    assert got.shape == want.shape == (100, 10)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    assert rel_error(got, want) < 1e-6
    lines = csv_out.read_text().splitlines()
    assert lines[0].startswith("input,class_1,index_1,probability_1,class_2")
    assert len(lines) == 101 and "airplane" in lines[1]


def test_predict_errors_are_one_line(cifar_run: Path, tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "big.jpg")
    (tmp_path / "notes.txt").write_text("x")
    np.save(tmp_path / "feats.npy", np.zeros((2, 7), np.float32))
    for args, expected in (
        ((tmp_path / "big.jpg",), "is 64x64; this run's network takes 32x32"),
        ((tmp_path / "notes.txt",), "not an image"),
        ((tmp_path / "nowhere.jpg",), "no such file or folder"),
        ((tmp_path / "feats.npy",), "the run's head reads 64-d float features"),
    ):
        result = run_cli("predict", cifar_run, *args)
        assert result.exit_code != 0 and expected in flat(result.output), result.output
        assert flat(result.output).count("Error:") == 1
    result = run_cli("predict", tmp_path, tmp_path / "big.jpg")
    assert result.exit_code != 0 and "is not a finished lort run" in flat(result.output)


def predicted_logits(run: Path, tmp_path: Path, *inputs: Path) -> np.ndarray:
    out = tmp_path / "predicted_logits.npy"
    ok("predict", run, *inputs, "--logits", out, "--format", "json", "--out", tmp_path / "p.json")
    return np.load(out)


def test_predict_image_arrays_equal_the_same_images_as_files(
    cifar_run: Path, small_cifar_folder: Path, tmp_path: Path
) -> None:
    """The documented array forms (issue 21): N x H x W x C uint8 and N x C x H x W floats in
    [0, 1], colour or grey, give the logits of the same pixels read as image files."""
    from PIL import Image

    files = sorted((small_cifar_folder / "test").rglob("*.jpg"))[::9]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    want = predicted_logits(cifar_run, tmp_path, *files)
    np.save(tmp_path / "u8.npy", pixels)
    np.save(tmp_path / "float.npy", pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    for name in ("u8.npy", "float.npy"):
        np.testing.assert_array_equal(predicted_logits(cifar_run, tmp_path, tmp_path / name), want)
    grey = tmp_path / "grey"
    grey.mkdir()
    for i, f in enumerate(files):
        Image.open(f).convert("L").save(grey / f"{i:02d}.png")
    grey_files = sorted(grey.iterdir())
    gray = np.stack([np.asarray(Image.open(f)) for f in grey_files])[..., None]
    np.save(tmp_path / "grey.npy", gray)
    np.save(tmp_path / "grey_float.npy", gray.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    want = predicted_logits(cifar_run, tmp_path, *grey_files)
    for name in ("grey.npy", "grey_float.npy"):
        np.testing.assert_array_equal(predicted_logits(cifar_run, tmp_path, tmp_path / name), want)


def test_predict_refuses_image_arrays_it_cannot_read(cifar_run: Path, tmp_path: Path) -> None:
    """A 50 x 50 array on a 32-pixel run is refused as a 50 x 50 PNG is (issue 21)."""
    np.save(tmp_path / "big.npy", np.zeros((2, 50, 50, 3), np.uint8))
    np.save(tmp_path / "range.npy", np.full((2, 3, 32, 32), 2.0, np.float32))
    np.save(tmp_path / "chw_u8.npy", np.zeros((2, 3, 32, 32), np.uint8))
    for name, parts in (
        ("big.npy", ("big.npy", "50x50", "32x32")),
        ("range.npy", ("range.npy", "[0, 1]")),
        ("chw_u8.npy", ("chw_u8.npy", "N x H x W x C uint8")),
    ):
        one_line_error(run_cli("predict", cifar_run, tmp_path / name), *parts)


def test_predict_digit_arrays_equal_the_same_images_as_files(
    digits_run: Path, tmp_path: Path
) -> None:
    """N x 8 x 8 x 1 uint8 on digits (issue 21: a PIL KeyError) reads as 8-bit grey PNGs."""
    from PIL import Image

    data = load_data(open_trained(digits_run).cfg)
    pixels = np.round(data.sources["test"][:6, 0] * 255).astype(np.uint8)
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, a in enumerate(pixels):
        Image.fromarray(a, mode="L").save(folder / f"{i}.png")
    want = predicted_logits(digits_run, tmp_path, *sorted(folder.iterdir()))
    np.save(tmp_path / "u8.npy", pixels[..., None])
    np.testing.assert_array_equal(predicted_logits(digits_run, tmp_path, tmp_path / "u8.npy"), want)
    np.save(tmp_path / "big.npy", np.zeros((2, 9, 9, 1), np.uint8))
    one_line_error(run_cli("predict", digits_run, tmp_path / "big.npy"), "9x9", "8x8")


def test_export_all_twelve_methods_reproduce_lorts_logits(cifar_run: Path) -> None:
    """Each method's head re-trained on the run's features, exported with the run's backbone
    and flip averaging, run on the run's test images (as the cache read them)."""
    problem = open_run(cifar_run).problem
    trained = open_trained(cifar_run)
    assert trained.flips
    images = problem.data.tensor_images("test", torch.device("cpu"))
    assert images is not None
    batches = [x for x, _ in images.in_order(256)]
    for name, method in METHODS.items():
        head = problem.train(method, 0.5 if method.target == "smooth" else 0.0)
        want = problem.logits(method, head, "test")
        module = export_module(dataclasses.replace(trained, method=method, temperature=None), head)
        data = serialise(module, "torchscript", batches[0][:2])
        loaded = torch.jit.load(io.BytesIO(data))
        with torch.no_grad():
            got = torch.cat([loaded(x) for x in batches]).numpy()
        assert rel_error(got, want) <= TOLERANCE, name


def test_export_onnx_round_trip(cifar_run: Path) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    problem = open_run(cifar_run).problem
    trained = open_trained(cifar_run)
    images = problem.data.tensor_images("test", torch.device("cpu"))
    assert images is not None
    x = torch.cat([b for b, _ in images.in_order(256)])
    for name in ("tau-norm", "logit-adjust", "cosine"):
        method = METHODS[name]
        head = problem.train(method, 0.0)
        module = export_module(dataclasses.replace(trained, method=method, temperature=None), head)
        session = ort.InferenceSession(serialise(module, "onnx", x[:2]))
        got = session.run(None, {"input": x.numpy()})[0]  # another batch size than traced
        assert rel_error(got, problem.logits(method, head, "test")) <= TOLERANCE, name


def test_export_pt2_round_trip(cifar_run: Path) -> None:
    """torch.export's program, read back with torch.export.load, on the run's 100 test images
    (another batch size than traced) and on one image."""
    problem = open_run(cifar_run).problem
    trained = open_trained(cifar_run)
    images = problem.data.tensor_images("test", torch.device("cpu"))
    assert images is not None
    x = torch.cat([b for b, _ in images.in_order(256)])
    for name in ("tau-norm", "logit-adjust", "cosine"):
        method = METHODS[name]
        head = problem.train(method, 0.0)
        module = export_module(dataclasses.replace(trained, method=method, temperature=None), head)
        loaded = torch.export.load(io.BytesIO(serialise(module, "pt2", x[:2]))).module()
        with torch.no_grad():
            got, one = loaded(x).numpy(), loaded(x[:1]).numpy()
        want = problem.logits(method, head, "test")
        assert rel_error(got, want) <= TOLERANCE, name
        assert rel_error(one, want[:1]) <= TOLERANCE, name


def test_export_command_writes_the_module_and_its_json(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    result = ok("export", digits_run, "--format", "torchscript", "--out", out)
    assert "max relative error" in flat(result.output)
    info = json.loads((tmp_path / "model.pt.json").read_text())
    assert info["class_names"] == [str(c) for c in range(10)] and info["method"] == "lort"
    assert info["input_shape"] == ["N", 1, 8, 8] and info["flip_averaging"] is False
    assert info["input"]["mean"] == [0.3053] and info["input"]["kind"] == "image"
    assert info["input"]["mode"] == "L" and info["mirrored_view"].startswith("none")
    assert "folded into the last layer" in info["outputs"]
    problem = open_run(digits_run).problem
    x = torch.cat([b for b, _ in torch.utils.data.DataLoader(problem.data.dataset("test"), 256)])
    with torch.no_grad():
        got = torch.jit.load(out)(x).numpy()
    # The run's temperature is folded in: the module gives the calibrated logits z / T.
    assert info["temperature"] == open_trained(digits_run).temperature > 0
    want = np.load(digits_run / "logits.npy") / info["temperature"]
    assert rel_error(got, want) <= TOLERANCE
    assert info["file"] == "model.pt" and info["format"] == "torchscript"
    # Another format to the same stem keeps its own JSON: model.pt2.json beside model.pt.json.
    ok("export", digits_run, "--format", "pt2", "--out", tmp_path / "model.pt2")
    pt2 = json.loads((tmp_path / "model.pt2.json").read_text())
    assert pt2["file"] == "model.pt2" and pt2["format"] == "pt2"
    assert pt2["load"].startswith("torch.export.load(file).module()")
    assert info["load"] == "torch.jit.load(file)"
    same = ("file", "format", "load")
    assert {k: v for k, v in pt2.items() if k not in same} == {
        k: v for k, v in info.items() if k not in same
    }
    with torch.no_grad():
        got = torch.export.load(tmp_path / "model.pt2").module()(x).numpy()
    assert rel_error(got, want) <= TOLERANCE
    assert json.loads((tmp_path / "model.pt.json").read_text()) == info  # left alone
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad = run_cli("export", digits_run, "--out", tmp_path / "model.pt.json")
    assert bad.exit_code != 0 and "name the module file" in flat(bad.output)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # left alone


def test_export_pt2_that_torch_export_refuses_writes_nothing(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Could not guard on data-dependent expression\nmore lines")

    monkeypatch.setattr(torch.export, "export", refuse)
    result = run_cli("export", digits_run, "--format", "pt2", "--out", tmp_path / "model.pt2")
    one_line_error(result, "torch.export could not export", "data-dependent", "torchscript")
    assert list(tmp_path.iterdir()) == []


def test_timm_run_predicts_and_exports(small_cifar_folder: Path, tmp_path: Path) -> None:
    """A timm backbone (random weights from a file) reads 160-pixel resized images."""
    timm = pytest.importorskip("timm")
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    run = tmp_path / "run"
    ok(
        "fit", "--dataset", "imagefolder", "--data-root", small_cifar_folder, "--arch",
        "timm:test_efficientnet", "--weights", weights, "--epochs1", "0", "--epochs2", "1",
        "--method", "tau-norm", "--out", run,
    )  # fmt: skip
    logits = tmp_path / "logits.npy"
    ok("predict", run, small_cifar_folder / "test", "--logits", logits, "--format", "json")
    want = np.load(run / "logits.npy")
    assert rel_error(np.load(logits), want) < 1e-5
    out = tmp_path / "model.pt"
    ok("export", run, "--out", out)
    info = json.loads((tmp_path / "model.pt.json").read_text())
    assert info["input"]["image_size"] == 160 and info["input"]["resize"] == 168
    assert info["inference"] == "tau-norm" and info["flip_averaging"] is True


def _deploy_example() -> dict[str, object]:
    """The python block of docs/deploy.md, run as a module (its __main__ part not)."""
    doc = (Path(__file__).parents[1] / "docs/deploy.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    namespace: dict[str, object] = {"__name__": "deploy_example"}
    exec(compile(code, "docs/deploy.md", "exec"), namespace)
    return namespace


def test_the_docs_onnxruntime_example_gives_predicts_probabilities(
    cifar_run: Path, tmp_path: Path
) -> None:
    """docs/deploy.md's example (numpy, pillow, onnxruntime) on image files: the classes and
    calibrated probabilities of `lort predict`, the mirrored view averaged inside the module."""
    model = tmp_path / "model.onnx"
    ok("export", cifar_run, "--format", "onnx", "--out", model)
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["flip_averaging"] is True and "inside the module" in info["mirrored_view"]
    assert info["input"]["resize"] is None and "refuses any other size" in info["input"]["geometry"]
    files = sorted(Path(open_trained(cifar_run).cfg.data_root, "test").rglob("*.jpg"))[::7]
    pred = tmp_path / "p.json"
    ok("predict", cifar_run, *files, "--format", "json", "--out", pred, "--top-k", "1")
    want = [p["top"][0] for p in json.loads(pred.read_text())["predictions"]]
    got = _deploy_example()["classify"](str(model), [str(f) for f in files])  # type: ignore[operator]
    assert [name for name, _ in got] == [w["class"] for w in want]
    np.testing.assert_allclose([q for _, q in got], [w["probability"] for w in want], rtol=1e-4)


@pytest.mark.parametrize(
    ("spec", "sizes"),
    [
        (TransformSpec("large", 224, IMAGENET_MEAN, IMAGENET_STD), [(300, 260), (255, 401)]),
        (
            TransformSpec(
                "resized", 160, IMAGENET_MEAN, IMAGENET_STD, resize=171, interpolation="bicubic"
            ),
            [(171, 171), (640, 333), (201, 500)],
        ),
    ],
)
def test_the_jsons_preparation_is_the_runs_transform_at_any_size(
    spec: TransformSpec, sizes: list[tuple[int, int]], tmp_path: Path
) -> None:
    """What the JSON says about resize and crop, applied by the docs' example to images of
    several sizes, is the run's own evaluation transform to float rounding."""
    prepare = _deploy_example()["prepare"]
    transform = build_transform(spec, augment=False)
    rng = np.random.default_rng(0)
    for w, h in sizes:
        path = tmp_path / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        want = transform(Image.open(path).convert("RGB")).numpy()
        got = prepare(path, preparation(spec))  # type: ignore[operator]
        assert got.shape == want.shape == (3, spec.image_size, spec.image_size)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_export_onnx_without_onnxruntime_writes_nothing(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before writing needs onnxruntime (the onnx extra brings it): without it the
    export refuses in one line instead of writing an unchecked module."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = run_cli("export", digits_run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    one_line_error(result, "onnxruntime", "pip install 'lort[onnx]'")
    assert list(tmp_path.iterdir()) == []


FEATURE_DIM = 1024


@pytest.fixture(scope="module")
def wide_features_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A features run on 1,024-d features with their mirror view (flip averaging)."""
    tmp = tmp_path_factory.mktemp("wide")
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, FEATURE_DIM)).astype(np.float32) / 8
    data = tmp / "data"
    data.mkdir()
    for split, per in (("train", [30, 20, 12, 8]), ("test", [15] * 4)):
        y = np.repeat(np.arange(4), per)
        x = means[y] + rng.normal(size=(y.size, FEATURE_DIM)).astype(np.float32) / 2
        np.save(data / f"{split}_features.npy", x)
        np.save(data / f"{split}_flipped_features.npy", x + 0.01)
        np.save(data / f"{split}_labels.npy", y)
    out = tmp / "run"
    ok("fit", "--dataset", "features", "--data-root", data, "--out", out,
       "--epochs1", "3", "--epochs2", "2")  # fmt: skip
    return out


def test_feature_arrays_are_read_a_chunk_at_a_time_with_the_same_results(
    wide_features_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 7 rows (plain and mirrored view alike) give the run's own logits, and
    float16 features those of the same values as float32; a bad row is named by its row in
    the file, not in its chunk."""
    from lort.deploy import predict as module

    data = Path(config_value(wide_features_run, "data_root"))
    whole = module.predict(wide_features_run, [data / "test_features.npy"], keep_logits=True)
    sizes: list[int] = []
    real = module.check_rows

    def spy(a: np.ndarray, where: str, first: int = 0) -> None:
        sizes.append(len(a))
        real(a, where, first)

    monkeypatch.setattr(module, "FEATURE_CHUNK_BYTES", 7 * FEATURE_DIM * 4)
    monkeypatch.setattr(module, "check_rows", spy)
    chunked = module.predict(wide_features_run, [data / "test_features.npy"], keep_logits=True)
    assert max(sizes) == 7 and sum(sizes) == 2 * 60  # both views, every row once
    np.testing.assert_array_equal(chunked.all_logits(), np.load(wide_features_run / "logits.npy"))
    np.testing.assert_array_equal(chunked.all_logits(), whole.all_logits())
    np.testing.assert_array_equal(chunked.indices(), whole.indices())
    np.testing.assert_array_equal(chunked.probabilities(), whole.probabilities())
    assert chunked.names == whole.names == [f"{data / 'test_features.npy'}[{i}]" for i in range(60)]
    for view in ("features", "flipped_features"):  # Fortran order: copied from the mapping
        np.save(tmp_path / f"f_{view}.npy", np.asfortranarray(np.load(data / f"test_{view}.npy")))
    fortran = module.predict(wide_features_run, [tmp_path / "f_features.npy"], keep_logits=True)
    np.testing.assert_array_equal(fortran.all_logits(), whole.all_logits())

    run = open_trained(wide_features_run)
    x16 = (np.load(data / "test_features.npy") * 3).astype(np.float16)
    np.save(tmp_path / "half_features.npy", x16)
    np.save(tmp_path / "half_flipped_features.npy", x16[::-1])
    want = run.logits(
        torch.from_numpy(x16.astype(np.float32)), torch.from_numpy(x16[::-1].astype(np.float32))
    )
    with warnings.catch_warnings():  # float16 against the magnitude bound overflowed its cast
        warnings.simplefilter("error", RuntimeWarning)
        half = module.predict(wide_features_run, [tmp_path / "half_features.npy"], keep_logits=True)
    np.testing.assert_array_equal(half.all_logits(), want.numpy())

    x16[45, 3] = np.inf
    np.save(tmp_path / "half_flipped_features.npy", x16)
    one_line_error(
        run_cli("predict", wide_features_run, tmp_path / "half_features.npy"),
        "half_flipped_features.npy row 45 holds NaN or Inf",
    )


MEMORY = """
import resource, sys
from pathlib import Path
from lort.deploy.predict import predict
run, small, big = map(Path, sys.argv[1:])
predict(run, [small])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = len(predict(run, [big]).names)
print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_large_feature_array_costs_memory_by_the_chunk_not_the_file(
    wide_features_run: Path, tmp_path: Path
) -> None:
    """512 MiB of features (a sparse file) raise the peak resident memory by far less than
    the file: copied whole as float32 before, and its mapped pages kept resident."""
    big = tmp_path / "big.npy"
    rows = (512 << 20) // (FEATURE_DIM * 4)
    np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(rows, FEATURE_DIM)).flush()
    data = Path(config_value(wide_features_run, "data_root"))
    cmd = [
        sys.executable,
        "-c",
        MEMORY,
        str(wide_features_run),
        str(data / "test_features.npy"),
        str(big),
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=True)
    n, grown_mib = map(int, done.stdout.split())
    assert n == rows and grown_mib < 256, grown_mib  # about 3 chunks; 691 MiB before


def test_a_header_claiming_billions_of_rows_is_one_line(
    wide_features_run: Path, tmp_path: Path
) -> None:
    """2^31 + 1 rows of the run's width on a sparse file (8 TiB claimed): refused by their
    count before any is read, within a 4 GiB data limit (copied whole before: numpy's
    ArrayMemoryError, after a scan of every row)."""
    import resource

    huge = tmp_path / "huge.npy"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2**31 + 1, FEATURE_DIM)}
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + 4 * FEATURE_DIM * (2**31 + 1))

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))

    cmd = [sys.executable, "-m", "lort", "predict", str(wide_features_run), str(huge)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env=env, preexec_fn=limited
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error:") and "2,147,483,649 inputs" in flat(last), done.stderr
