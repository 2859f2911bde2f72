"""Saved samples: ADM-style .npz and EDM-layout PNG folders, streamed, atomic, never overwritten
silently, and read back by cmbench's own image reader to the very same uint8 images."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch

from cmbench.metrics.npz_array import NpzArray
from cmbench.sample_files import (NpzSampleWriter, PngSampleWriter, adm_npz_name, png_name, save_formats)
from cmbench.stats import open_images


def _images(count, shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)


def _labels(count, seed=1):
    return torch.randint(0, 1000, (count,), generator=torch.Generator().manual_seed(seed))


def _write(writer, images, labels, batch):
    with writer:
        for start in range(0, len(images), batch):
            writer.write(images[start : start + batch], None if labels is None else labels[start : start + batch])


def _read_back(spec, batch=4):
    return torch.cat(list(open_images(spec).batches(batch)))


def _nhwc(images):
    return images.permute(0, 2, 3, 1).numpy()


# --- npz --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 6), (1, 5, 7)])
@pytest.mark.parametrize("labelled", [True, False])
def test_npz_round_trip(tmp_path, shape, labelled):
    images, labels = _images(11, shape), (_labels(11) if labelled else None)
    path = tmp_path / adm_npz_name(11, shape)
    _write(NpzSampleWriter(path, 11, shape, labels=labelled), images, labels, batch=4)

    with np.load(path) as data:
        assert sorted(data.files) == (["arr_0", "arr_1"] if labelled else ["arr_0"])
        assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (11, shape[1], shape[2], shape[0])
        np.testing.assert_array_equal(data["arr_0"], _nhwc(images))
        if labelled:
            assert data["arr_1"].dtype == np.int64
            np.testing.assert_array_equal(data["arr_1"], labels.numpy())
    streamed = np.concatenate(list(NpzArray(path, "arr_0").batches(3)))
    np.testing.assert_array_equal(streamed, _nhwc(images))
    assert torch.equal(_read_back(str(path)), images)
    assert os.listdir(tmp_path) == [path.name]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_npz_members_are_byte_identical_to_np_savez(tmp_path):
    shape = (3, 4, 4)
    images, labels = _images(6, shape), _labels(6)
    ours = tmp_path / "ours.npz"
    _write(NpzSampleWriter(ours, 6, shape, labels=True), images, labels, batch=5)
    theirs = tmp_path / "theirs.npz"
    np.savez(theirs, _nhwc(images), labels.numpy())  # as image_sample.py: np.savez(out_path, arr, label_arr)
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(theirs) as b:
        assert a.namelist() == b.namelist() == ["arr_0.npy", "arr_1.npy"]
        for name in a.namelist():
            assert a.read(name) == b.read(name)
            assert a.getinfo(name).compress_type == b.getinfo(name).compress_type == zipfile.ZIP_STORED


def test_adm_npz_name_follows_image_sample():
    assert adm_npz_name(50000, (3, 256, 256)) == "samples_50000x256x256x3.npz"


@pytest.mark.parametrize("sent", [5, 7])
def test_npz_count_mismatch_is_an_error_and_leaves_no_file(tmp_path, sent):
    path = tmp_path / "s.npz"
    images = _images(sent, (3, 4, 4))
    with pytest.raises(ValueError, match=r"s\.npz.*(received 5 images but the file was opened for 6|would make 7)"):
        _write(NpzSampleWriter(path, 6, (3, 4, 4), labels=False), images, None, batch=5)
    assert os.listdir(tmp_path) == []


def test_npz_too_many_images_rejects_the_batch_before_writing(tmp_path):
    writer = NpzSampleWriter(tmp_path / "s.npz", 4, (1, 2, 2), labels=False)
    writer.write(_images(3, (1, 2, 2)), None)
    with pytest.raises(ValueError, match=r"images 3\.\.4: this batch of 2 would make 5 images, but the file was "
                                         r"opened for 4"):
        writer.write(_images(2, (1, 2, 2)), None)
    writer.write(_images(1, (1, 2, 2)), None)
    writer.close()
    assert len(NpzArray(tmp_path / "s.npz", "arr_0")) == 4


@pytest.mark.parametrize(("images", "labels", "message"), [
    (torch.zeros(2, 3, 4, 4), None, "must be uint8"),
    (np.zeros((2, 3, 4, 4), np.uint8), None, "must be a torch tensor"),
    (torch.zeros(3, 4, 4, dtype=torch.uint8), None, "NCHW"),
    (torch.zeros(2, 3, 4, 5, dtype=torch.uint8), None, r"\(3, 4, 5\), but this set holds \(3, 4, 4\)"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "opened with labels=False"),
])
def test_npz_rejects_bad_batches(tmp_path, images, labels, message):
    writer = NpzSampleWriter(tmp_path / "s.npz", 2, (3, 4, 4), labels=False)
    with pytest.raises((TypeError, ValueError), match=message):
        writer.write(images, labels)
    writer.discard()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("labels", "message"), [
    (None, "class labels are missing"),
    (torch.zeros(2), "integer tensor"),
    (torch.zeros(3, dtype=torch.long), r"expected 2 class labels"),
    (torch.zeros(2, 10, dtype=torch.long), r"expected 2 class labels"),
])
def test_npz_rejects_bad_labels(tmp_path, labels, message):
    with pytest.raises(ValueError, match=message):
        with NpzSampleWriter(tmp_path / "s.npz", 2, (3, 4, 4), labels=True) as writer:
            writer.write(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), labels)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"path": "s.npy"}, "ending in .npz"),
    ({"count": 0}, "at least 1 image"),
    ({"image_shape": (4, 8, 8)}, r"C in \(1, 3\)"),
    ({"image_shape": (8, 8)}, r"\(C, H, W\)"),
])
def test_npz_rejects_bad_settings(tmp_path, kwargs, message):
    settings = {"path": "s.npz", "count": 2, "image_shape": (3, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=message):
        NpzSampleWriter(tmp_path / settings.pop("path"), **settings, labels=False)
    assert os.listdir(tmp_path) == []


def test_npz_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "s.npz"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"s\.npz exists; refusing to overwrite it"):
        NpzSampleWriter(path, 2, (3, 4, 4), labels=False)
    assert path.read_bytes() == b"precious" and os.listdir(tmp_path) == ["s.npz"]
    images = _images(2, (3, 4, 4))
    _write(NpzSampleWriter(path, 2, (3, 4, 4), labels=False, overwrite=True), images, None, batch=2)
    np.testing.assert_array_equal(np.load(path)["arr_0"], _nhwc(images))


def test_npz_file_appearing_during_the_run_is_not_replaced(tmp_path):
    path = tmp_path / "s.npz"
    writer = NpzSampleWriter(path, 2, (3, 4, 4), labels=False)
    writer.write(_images(2, (3, 4, 4)), None)
    path.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match=r"s\.npz exists"):
        writer.close()
    assert path.read_bytes() == b"someone else's" and os.listdir(tmp_path) == ["s.npz"]


def test_npz_crash_leaves_no_file_and_keeps_the_old_one(tmp_path):
    fresh, old = tmp_path / "fresh.npz", tmp_path / "old.npz"
    old.write_bytes(b"old")
    for path, overwrite in ((fresh, False), (old, True)):
        with pytest.raises(KeyboardInterrupt):
            with NpzSampleWriter(path, 8, (3, 4, 4), labels=True, overwrite=overwrite) as writer:
                writer.write(_images(4, (3, 4, 4)), _labels(4))
                raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["old.npz"] and old.read_bytes() == b"old"


def test_npz_closed_writer_takes_no_more_images(tmp_path):
    writer = NpzSampleWriter(tmp_path / "s.npz", 1, (1, 2, 2), labels=False)
    writer.write(_images(1, (1, 2, 2)), None)
    assert writer.close() == tmp_path / "s.npz"
    assert writer.close() == tmp_path / "s.npz"
    with pytest.raises(ValueError, match="closed"):
        writer.write(_images(1, (1, 2, 2)), None)


def test_npz_streams_without_holding_the_images(tmp_path):
    """64 batches, 107 MB of images in all: Python's peak allocation stays near one batch."""
    shape, batch, batches = (3, 128, 128), 34, 64
    batch_bytes = batch * int(np.prod(shape))
    total = batch_bytes * batches
    assert total > 100e6
    block = _images(batch, shape)
    path = tmp_path / adm_npz_name(batch * batches, shape)
    tracemalloc.start()
    try:
        with NpzSampleWriter(path, batch * batches, shape, labels=True) as writer:
            for i in range(batches):
                writer.write(block + i, torch.full((batch,), i))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * batch_bytes < total / 10, (peak, batch_bytes, total)
    array = NpzArray(path, "arr_0")
    assert array.shape == (batch * batches, 128, 128, 3) and array.dtype == np.uint8
    last = list(array.batches(batch))[-1]
    np.testing.assert_array_equal(last, _nhwc(block + (batches - 1)))
    np.testing.assert_array_equal(NpzArray(path, "arr_1").batches(batch * batches).__next__(),
                                  np.repeat(np.arange(batches), batch))


# --- png --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 8, 6), (1, 5, 7)])
@pytest.mark.parametrize("labelled", [True, False])
def test_png_round_trip_in_seed_order_across_a_thousand(tmp_path, shape, labelled):
    from PIL import Image

    seeds = list(range(995, 1005))
    images, labels = _images(10, shape), (_labels(10) if labelled else None)
    folder = tmp_path / "samples"
    _write(PngSampleWriter(folder, seeds=seeds, labels=labelled), images, labels, batch=3)

    assert (folder / "000000" / "000995.png").is_file() and (folder / "001000" / "001004.png").is_file()
    with Image.open(folder / "001000" / "001000.png") as first_of_thousand:
        assert first_of_thousand.mode == ("RGB" if shape[0] == 3 else "L")
        np.testing.assert_array_equal(np.asarray(first_of_thousand).reshape(shape[1], shape[2], shape[0]),
                                      _nhwc(images)[5])
    assert torch.equal(_read_back(str(folder)), images)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    expected = [png_name(s) for s in seeds]
    if labelled:
        metadata = json.loads((folder / "dataset.json").read_text())
        assert metadata == {"labels": [[name, int(label)] for name, label in zip(expected, labels)]}
        expected = ["dataset.json", *expected]
    assert names == sorted(expected)


def test_png_layout_is_edm_generate_subdirs():
    assert png_name(0) == "000000/000000.png"
    assert png_name(999) == "000000/000999.png"
    assert png_name(1000) == "001000/001000.png"
    assert png_name(49999) == "049000/049999.png"


def test_png_count_mismatch_is_an_error_without_labels_file(tmp_path):
    folder = tmp_path / "samples"
    with pytest.raises(ValueError, match=r"samples: received 3 images for 4 seeds; the folder is incomplete and "
                                         r"has no dataset\.json"):
        _write(PngSampleWriter(folder, seeds=range(4), labels=True), _images(3, (3, 4, 4)), _labels(3), batch=2)
    assert not (folder / "dataset.json").exists()
    writer = PngSampleWriter(tmp_path / "more", seeds=range(2), labels=False)
    with pytest.raises(ValueError, match="would make 3 images, but 2 seeds were given"):
        writer.write(_images(3, (3, 4, 4)), None)
    assert not (tmp_path / "more").exists()


def test_png_crash_keeps_whole_images_and_writes_no_labels(tmp_path):
    folder = tmp_path / "samples"
    with pytest.raises(KeyboardInterrupt):
        with PngSampleWriter(folder, seeds=range(6), labels=True) as writer:
            writer.write(_images(2, (3, 4, 4)), _labels(2))
            raise KeyboardInterrupt
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))
    assert files == ["000000", "000000/000000.png", "000000/000001.png"]


def test_png_refuses_a_folder_with_images_unless_asked(tmp_path):
    folder = tmp_path / "samples"
    first = _images(3, (3, 4, 4))
    _write(PngSampleWriter(folder, seeds=range(3), labels=False), first, None, batch=3)
    with pytest.raises(FileExistsError, match=r"samples already holds 3 image file\(s\).*000000/000000\.png"):
        PngSampleWriter(folder, seeds=range(3), labels=False)
    second = _images(3, (3, 4, 4), seed=5)
    _write(PngSampleWriter(folder, seeds=range(3), labels=False, overwrite=True), second, None, batch=2)
    assert torch.equal(_read_back(str(folder)), second)
    with pytest.raises(FileExistsError, match=r"holds 1 file\(s\) this set does not write "
                                              r"\(e\.g\. 000000/000002\.png\)"):
        PngSampleWriter(folder, seeds=range(2), labels=False, overwrite=True)
    with pytest.raises(FileExistsError, match=r"does not write"):  # a stale dataset.json would relabel the set
        (folder / "dataset.json").write_text('{"labels": null}')
        PngSampleWriter(folder, seeds=range(3), labels=False, overwrite=True)


@pytest.mark.parametrize(("seeds", "message"), [
    ([], "no seeds"),
    ([-1, 0], "≥ 0"),
    ([3, 2], "seeds must increase"),
    ([1, 1], "seeds must increase"),
    (range(999_990, 1_000_010), "names of different lengths"),
])
def test_png_rejects_seeds_whose_names_do_not_sort_in_seed_order(tmp_path, seeds, message):
    with pytest.raises(ValueError, match=message):
        PngSampleWriter(tmp_path / "samples", seeds=seeds, labels=False)


def test_png_rejects_bad_batches(tmp_path):
    writer = PngSampleWriter(tmp_path / "samples", seeds=range(4), labels=False)
    with pytest.raises(ValueError, match=r"C in \(1, 3\)"):
        writer.write(torch.zeros(1, 4, 4, 4, dtype=torch.uint8), None)
    writer.write(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), None)
    with pytest.raises(ValueError, match=r"images 1\.\.1: images have shape .* but this set holds \(3, 4, 4\)"):
        writer.write(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), None)


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "formats"), [
    ("npz", ("npz",)), ("png", ("png",)), ("npz,png", ("npz", "png")), ("png, npz", ("npz", "png")),
    (["png"], ("png",)), (("npz", "png"), ("npz", "png")),
])
def test_save_formats(spec, formats):
    assert save_formats(spec) == formats


@pytest.mark.parametrize("spec", ["jpg", "npz,tar", "", ["npz", 3], []])
def test_save_formats_rejects_others_listing_the_accepted(spec):
    with pytest.raises(ValueError, match=r"accepted: npz, png, or both as 'npz,png'"):
        save_formats(spec)
