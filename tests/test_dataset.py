"""SegmentationDataset, DatasetInfo and the training transforms on tiny hand-written datasets."""

import numpy as np
import pytest
import torch
from PIL import Image

from aeroseg.data import DatasetInfo, SegmentationDataset
from aeroseg.data.info import builtin_split
from aeroseg.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    RandomRotate90,
    Resize,
    mask_unseen,
    training_transforms,
)
from aeroseg.errors import DatasetNotFoundError, UserError

INFO = DatasetInfo(name="toy", classes=["road", "tree", "water", "roof"], unseen=["water"])


def _write_dataset(root, stems=("a", "b"), size=(12, 16)):
    """root/dataset.yaml and train/{images,masks} with PNG images; mask = (row + col) % 4, corner 255."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir(parents=True)
    (root / "dataset.yaml").write_text(INFO.to_yaml())
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    mask = ((rows + cols) % 4).astype(np.uint8)
    mask[0, 0] = 255
    for index, stem in enumerate(stems):
        image = np.stack([rows * 10 + index, cols * 10, np.full_like(rows, 200)], -1).astype(np.uint8)
        Image.fromarray(image).save(root / "train" / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "train" / "masks" / f"{stem}.png")
    return root


def test_sample_shapes_dtypes_and_values(tmp_path):
    ds = SegmentationDataset(_write_dataset(tmp_path), split="train")
    assert len(ds) == 2 and ds.info == INFO
    sample = ds[1]
    assert sample["stem"] == "b"
    assert sample["image"].shape == (3, 12, 16) and sample["image"].dtype == torch.float32
    assert sample["mask"].shape == (12, 16) and sample["mask"].dtype == torch.int64
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["image"][2, 0, 0] == pytest.approx(200 / 255)
    assert sample["image"][0, 3, 5] == pytest.approx(31 / 255)  # row 3 * 10 + index 1
    assert int(sample["mask"][0, 0]) == 255 and int(sample["mask"][1, 2]) == 3


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_tif_and_jpg_images(tmp_path):
    import rasterio

    root = _write_dataset(tmp_path, stems=("a",))
    (root / "train" / "images" / "a.png").unlink()
    bands = np.zeros((4, 12, 16), dtype=np.uint16)
    bands[0], bands[2], bands[3] = 65535, 32768, 7  # 4 bands: only the first 3 are read
    profile = dict(driver="GTiff", dtype="uint16", count=4, height=12, width=16)
    with rasterio.open(root / "train" / "images" / "a.tif", "w", **profile) as dst:
        dst.write(bands)
    image = SegmentationDataset(root)[0]["image"]
    assert image.shape == (3, 12, 16)
    assert torch.equal(image, _predict_input(root / "train" / "images" / "a.tif"))  # the one pixel rule

    (root / "train" / "images" / "a.tif").unlink()
    Image.new("RGB", (16, 12), (255, 0, 0)).save(root / "train" / "images" / "a.jpg", quality=100)
    image = SegmentationDataset(root)[0]["image"]
    assert image.shape == (3, 12, 16) and float(image[0].mean()) > 0.95 and float(image[1].mean()) < 0.05


def _predict_input(path):
    """What ``aeroseg predict`` (and ``serve``) feed the model for the whole file."""
    from rasterio.windows import Window

    from aeroseg.raster import RasterSource

    with RasterSource(str(path)) as source:
        return torch.from_numpy(source.read(Window(0, 0, source.width, source.height))[0])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_a_geotiff_reaches_the_model_as_predict_feeds_it(tmp_path, dtype):
    """uint16 and floats beyond 255 by each band's 2nd-98th percentiles, in the dataset as in predict (the
    dataset used to divide uint16 by 65535 and clip floats)."""
    import rasterio

    root = _write_dataset(tmp_path, stems=("a",))
    (root / "train" / "images" / "a.png").unlink()
    rng = np.random.default_rng(0)
    bands = (rng.random((3, 12, 16)) * 3000 + 400).astype(dtype)  # reflectances: not [0, 1], not [0, 255]
    path = root / "train" / "images" / "a.tif"
    profile = dict(driver="GTiff", dtype=dtype, count=3, height=12, width=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
    image = SegmentationDataset(root)[0]["image"]
    expected = _predict_input(path)
    assert torch.equal(image, expected)
    low, high = np.percentile(bands[0].astype(np.float64), (2, 98))
    by_hand = np.clip((bands[0].astype(np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    np.testing.assert_allclose(image[0].numpy(), by_hand, rtol=1e-5, atol=1e-6)
    assert float(image.max()) == 1.0 and float(image.min()) == 0.0  # the tails are clipped


def test_missing_dataset_yaml(tmp_path):
    root = _write_dataset(tmp_path)
    (root / "dataset.yaml").unlink()
    with pytest.raises(DatasetNotFoundError, match="dataset.yaml"):
        SegmentationDataset(root)


def test_missing_split_folder(tmp_path):
    root = _write_dataset(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=str(root / "val")):
        SegmentationDataset(root, split="val")


def test_image_without_mask(tmp_path):
    root = _write_dataset(tmp_path)
    (root / "train" / "masks" / "b.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="b.png has no mask: expected .*masks/b.png"):
        SegmentationDataset(root)


def test_missing_root_and_empty_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        SegmentationDataset(tmp_path / "nowhere")
    root = _write_dataset(tmp_path / "d", stems=())
    with pytest.raises(DatasetNotFoundError, match="no images in"):
        SegmentationDataset(root)


def test_rgb_mask_and_size_mismatch_are_errors(tmp_path):
    root = _write_dataset(tmp_path)
    Image.new("RGB", (16, 12)).save(root / "train" / "masks" / "a.png")
    Image.new("L", (8, 8)).save(root / "train" / "masks" / "b.png")
    ds = SegmentationDataset(root)
    with pytest.raises(UserError, match="single-channel"):
        ds[0]
    with pytest.raises(UserError, match="16×12 px but its mask"):
        ds[1]


def test_dataset_info_seen_unseen():
    assert INFO.seen == ["road", "tree", "roof"]
    assert INFO.seen_ids == [0, 1, 3] and INFO.unseen_ids == [2]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"unseen": ["lake"]}, "unseen classes not in 'classes': lake"),
        ({"classes": ["a", "b", "a"]}, "duplicate names in 'classes': a"),
        ({"classes": []}, "non-empty list"),
        ({"ignore_index": 2}, "ignore_index must be"),
    ],
)
def test_dataset_info_validation(fields, message):
    data = {"name": "toy", "classes": ["a", "b", "c"], "unseen": [], **fields}
    with pytest.raises(UserError, match=message):
        DatasetInfo(**data)


def test_dataset_yaml_round_trip_and_unknown_keys(tmp_path):
    path = tmp_path / "dataset.yaml"
    path.write_text(INFO.to_yaml())
    assert DatasetInfo.from_yaml(path) == INFO
    path.write_text(INFO.to_yaml() + "unseen_classes: [road]\n")
    with pytest.raises(UserError, match="unknown keys unseen_classes"):
        DatasetInfo.from_yaml(path)


def test_builtin_splits_match_the_paper():
    isaid, codes = builtin_split("isaid")
    assert isaid.seen == [
        "ship", "storage tank", "baseball diamond", "basketball court", "ground track field",
        "large vehicle", "swimming pool", "roundabout", "plane",
    ]  # fmt: skip
    assert len(codes["colors"]) == len(isaid.classes) == 15
    dlrsd, codes = builtin_split("dlrsd")
    assert dlrsd.classes == sorted(dlrsd.classes) and len(dlrsd.classes) == 17
    assert len(dlrsd.unseen) == 7 and len(codes["colors"]) == len(codes["raw_values"]) == 17
    oem, codes = builtin_split("openearthmap")
    assert oem.seen == ["bareland", "rangeland", "road", "building"] and codes["raw_values"] == list(
        range(1, 9)
    )


def _coded_sample(height=10, width=14):
    """A sample whose image channel 0 encodes the mask, so any misaligned transform shows."""
    mask = torch.randint(0, 4, (height, width))
    image = torch.stack([mask.float() / 255, torch.rand(height, width), torch.rand(height, width)])
    return {"image": image, "mask": mask, "stem": "x"}


def test_geometric_transforms_move_image_and_mask_together():
    torch.manual_seed(0)
    transform = Compose([RandomCrop(8), RandomHorizontalFlip(), RandomRotate90()])
    for _ in range(40):
        sample = _coded_sample()
        out = transform(sample)
        assert out["image"].shape == (3, 8, 8) and out["mask"].shape == (8, 8) and out["stem"] == "x"
        assert torch.equal((out["image"][0] * 255).round().long(), out["mask"])


def test_rotate90_covers_all_quarter_turns_consistently():
    torch.manual_seed(1)
    sample = _coded_sample(6, 9)
    seen = set()
    for _ in range(40):
        out = RandomRotate90()(sample)
        k = next(k for k in range(4) if torch.equal(out["mask"], torch.rot90(sample["mask"], k)))
        assert torch.equal(out["image"], torch.rot90(sample["image"], k, dims=(-2, -1)))
        seen.add(k)
    assert seen == {0, 1, 2, 3}


def test_resize_shorter_side_and_nearest_mask():
    sample = _coded_sample(10, 20)
    out = Resize(5)(sample)
    assert out["image"].shape == (3, 5, 10) and out["mask"].shape == (5, 10)
    assert set(out["mask"].unique().tolist()) <= set(sample["mask"].unique().tolist())
    assert Resize((7, 3))(sample)["mask"].shape == (7, 3)
    big = Resize(40)({"image": torch.zeros(3, 2, 2), "mask": torch.tensor([[0, 1], [2, 3]]), "stem": "y"})
    assert big["mask"][:20, :20].unique().tolist() == [0] and big["mask"][20:, 20:].unique().tolist() == [3]


def test_random_crop_pads_with_ignore():
    out = RandomCrop(6, ignore_index=255)(
        {"image": torch.ones(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long)}
    )
    assert out["mask"].shape == (6, 6) and int((out["mask"] == 255).sum()) == 36 - 16
    assert float(out["image"].sum()) == pytest.approx(3 * 16 + 3 * 20 * 128 / 255)  # CAT-Seg pads with 128


def test_mask_unseen():
    mask = torch.tensor([[0, 1, 2], [3, 2, 255]])
    out = mask_unseen(mask, [2, 3], 255)
    assert out.tolist() == [[0, 1, 255], [255, 255, 255]]
    assert mask.tolist() == [[0, 1, 2], [3, 2, 255]]  # input untouched
    assert torch.equal(mask_unseen(mask, [], 255), mask)


def test_training_transforms_on_dataset(tmp_path):
    root = _write_dataset(tmp_path)
    transform = training_transforms(8, INFO.unseen_ids, ignore_index=INFO.ignore_index)
    torch.manual_seed(0)
    sample = SegmentationDataset(root, transforms=transform)[0]
    assert sample["image"].shape == (3, 8, 8) and sample["mask"].shape == (8, 8)
    assert set(sample["mask"].unique().tolist()) <= {*INFO.seen_ids, 255}
    assert 2 not in sample["mask"].tolist()
