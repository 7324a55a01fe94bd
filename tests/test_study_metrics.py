"""Study metrics: the classifier as a torch-fidelity feature extractor, FD / precision / recall
through torch_fidelity.calculate_metrics, class accuracy and memorisation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from recipes.study.data import make_study_shapes
from recipes.study.features import (
    EXTRACTOR_NAME,
    StudyFeatureExtractor,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from recipes.study.generation_metrics import (
    class_accuracy,
    fidelity_metrics,
    memorisation,
    nearest_distance,
    token_copy_rate,
)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small CNN on a shared CPU (see test_study_data)
    x, y = make_study_shapes(640, 16, num_classes=4, seed=1)
    model, info = train_classifier(x[:512], y[:512], x[512:], y[512:], num_classes=4, steps=60, width=8, seed=0)
    path = tmp_path_factory.mktemp("clf") / "classifier.pt"
    sha = save_classifier(path, model, info)
    yield path, sha, model, info, x, y
    torch.set_num_threads(before)


def test_classifier_file_roundtrip_and_integrity(classifier, tmp_path):
    path, sha, model, info, x, y = classifier
    back = load_classifier(path, expected_sha256=sha)
    assert torch.equal(predict(back, x[:32]), predict(model, x[:32]))
    assert 0.0 <= info["heldout_top1"] <= 1.0 and info["chance"] == 0.25 and info["feature_dim"] == 16
    with pytest.raises(ValueError, match="changed since it was frozen"):
        load_classifier(path, expected_sha256="0" * 64)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        load_classifier(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier(tmp_path / "none.pt")


def test_extractor_is_registered_with_torch_fidelity(classifier):
    path, *_ , x, y = classifier
    assert FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME] is StudyFeatureExtractor
    fe = StudyFeatureExtractor(EXTRACTOR_NAME, ["features", "logits"], feature_extractor_weights_path=str(path))
    u8 = (x[:5] * 255).round().to(torch.uint8)
    feats, logits = fe(u8)
    assert feats.shape == (5, 16) and logits.shape == (5, 4)
    with pytest.raises(ValueError, match="uint8"):
        fe(x[:5])
    with pytest.raises(ValueError, match="trained on 16 x 16"):
        fe(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="feature_extractor_weights_path"):
        StudyFeatureExtractor(EXTRACTOR_NAME, ["features"])


def test_fd_precision_recall_come_from_torch_fidelity(classifier):
    path, _, model, _, x, y = classifier
    ref, same = x[:300], x[:300]
    r = fidelity_metrics(same, ref, classifier_path=path)
    assert r["fd"] == pytest.approx(0.0, abs=1e-3)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["num_samples"] == 300
    # the same numbers as torch-fidelity's own functions on the classifier's features
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    other = x[300:600]
    r2 = fidelity_metrics(other, ref, classifier_path=path, prc=False)
    u8 = lambda t: (t * 255).round() / 255  # noqa: E731 - the uint8 rounding torch-fidelity's input goes through
    with torch.no_grad():
        fa, fb = model.features(u8(other)).double(), model.features(u8(ref)).double()
    want = fid_statistics_to_metric(fid_features_to_statistics(fa), fid_features_to_statistics(fb), False)
    assert r2["fd"] == pytest.approx(float(want["frechet_inception_distance"]), rel=1e-4)
    # a degraded sample set (blurred to flat colour) is farther and less precise
    flat = x[300:600].mean(dim=(2, 3), keepdim=True).expand(-1, -1, 16, 16).contiguous()
    r3 = fidelity_metrics(flat, ref, classifier_path=path)
    assert r3["fd"] > r2["fd"] and r3["recall"] < 0.5
    with pytest.raises(ValueError, match="at least 2"):
        fidelity_metrics(x[:1], ref, classifier_path=path)


def test_class_accuracy_is_the_classifier_agreement(classifier):
    path, _, model, _, x, y = classifier
    pred = predict(model, (x[:200] * 255).round() / 255).argmax(1)
    assert class_accuracy(x[:200], pred, path) == 1.0
    assert class_accuracy(x[:200], (pred + 1) % 4, path) == 0.0
    with pytest.raises(ValueError, match="requested labels"):
        class_accuracy(x[:10], pred[:5], path)


def test_token_copy_rate_is_exact_row_matching():
    train = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]], dtype=np.int32)
    samples = np.array([[0, 1, 2], [0, 1, 3], [6, 7, 8], [8, 7, 6]])
    assert token_copy_rate(samples, train) == 0.5
    with pytest.raises(ValueError, match="same L"):
        token_copy_rate(samples[:, :2], train)


def test_nearest_distance_matches_brute_force_and_memorisation_reference():
    g = torch.Generator().manual_seed(0)
    bank = torch.rand(50, 3, 4, 4, generator=g)
    q = torch.rand(7, 3, 4, 4, generator=g)
    brute = torch.tensor([min(float(((a - b) ** 2).mean().sqrt()) for b in bank) for a in q])
    assert torch.allclose(nearest_distance(q, bank, chunk=3), brute, atol=1e-6)
    held = torch.rand(20, 3, 4, 4, generator=g)
    copies = bank[:10].clone()
    m = memorisation(np.zeros((10, 2)), np.zeros((5, 2)), copies, bank, held)
    assert m["nn_dist_median"] == pytest.approx(0.0, abs=1e-6) and m["nn_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert m["token_copy_rate"] == 1.0 and m["nn_dist_heldout_median"] > 0.1
