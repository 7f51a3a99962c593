"""albumentations pipelines from YAML: valid lists build, typos are errors."""

import numpy as np
import pytest
import torch

from eva_lightning.data.transforms import build_pipeline, build_transform
from eva_lightning.core.errors import EvaError


def test_valid_list_builds_and_ends_in_a_tensor():
    pipe = build_pipeline(
        [{"name": "PadIfNeeded", "min_height": 40, "min_width": 40, "border_mode": 0, "fill": 0},
         {"name": "RandomCrop", "height": 32, "width": 32},
         {"name": "HorizontalFlip", "p": 0.5},
         {"name": "Normalize"}],
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )
    out = pipe(image=np.full((32, 32, 3), 255, np.uint8))["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32, 32)


def test_normalize_without_arguments_uses_the_data_set_statistics():
    out = build_pipeline(None, mean=(0.5,), std=(0.25,))(image=np.full((4, 4, 1), 255, np.uint8))["image"]
    assert torch.allclose(out, torch.full((1, 4, 4), 2.0))


def test_misspelled_argument_is_an_error_naming_it():
    with pytest.raises(EvaError) as err:
        build_transform({"name": "CoarseDropout", "hole_heigth_range": [8, 8]})
    assert "hole_heigth_range" in str(err.value) and "hole_height_range" in str(err.value)


def test_unknown_transform_suggests_the_closest():
    with pytest.raises(EvaError, match="HorizontalFlip"):
        build_transform({"name": "HorizontalFlipp"})


def test_bad_value_is_an_error():
    with pytest.raises(EvaError, match="Rotate"):
        build_transform({"name": "Rotate", "limit": "a lot"})
