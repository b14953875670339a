"""The evaluation metrics against hand-computed cases, the one-class scores and the report tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from aelab.config import GaussianNoiseConfig, MaskingConfig, SaltAndPepperConfig
from aelab.errors import ConfigError, DataError
from aelab.evaluation import classification, denoising, oneclass, reduction, report, sparsity
from tests.helpers import blobs
from tests.helpers import repo_params as params


# ---- reduction -------------------------------------------------------------------------------------------
def test_reconstruction_errors_by_hand():
    clean = np.array([[0.0, 1.0], [1.0, 1.0]])
    recon = np.array([[0.5, 1.0], [1.0, 0.0]])  # squared errors: [0.25, 0], [0, 1]
    assert reduction.reconstruction_errors(clean, recon) == {"recon_mse": 1.25 / 4, "recon_sse": 1.25 / 2}


def test_pca_error_and_explained_variance_match_numpy_svd():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 10)) + 0.1 * rng.normal(size=(200, 10))
    k = 2
    pca = PCA(n_components=k).fit(x)
    recon = pca.inverse_transform(pca.transform(x))
    singular = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    errors = reduction.reconstruction_errors(x, recon)
    assert errors["recon_sse"] == pytest.approx((singular[k:] ** 2).sum() / len(x), rel=1e-9)
    expected_share = (singular[:k] ** 2).sum() / (singular**2).sum()
    assert reduction.explained_variance(x, recon) == pytest.approx(expected_share, rel=1e-9)
    assert reduction.explained_variance(x, recon) == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-9)


def test_code_statistics_count_used_directions():
    rng = np.random.default_rng(2)
    three = rng.normal(size=(5000, 3))
    assert reduction.code_statistics(three)["code/effective_dims"] == pytest.approx(3.0, rel=0.02)
    one = np.column_stack([three[:, 0], np.zeros(5000), np.zeros(5000)])
    stats = reduction.code_statistics(one)
    assert stats["code/effective_dims"] == pytest.approx(1.0)
    assert stats["code/constant_fraction"] == pytest.approx(2 / 3)


# ---- classification --------------------------------------------------------------------------------------
def test_knn_and_probe_on_a_trivial_case():
    train_x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    train_y = np.array([0, 0, 0, 1, 1, 1])
    test_x = np.array([[0.05], [5.05], [4.0]])
    assert list(classification.knn_predictions(3, train_x, train_y, test_x)) == [0, 1, 1]
    # one neighbour: [2.4] is nearest to 0.2 (class 0), so one of two class-1 samples is wrong
    found = classification.classify(
        params("evaluate.knn_neighbors=1").evaluate, 0, train_x, train_y, np.array([[0.0], [2.4]]), np.array([0, 1])
    )
    assert found.metrics["knn_accuracy"] == 0.5
    assert found.metrics["probe_accuracy"] == 0.5  # the linear boundary sits near the midpoint 2.6
    assert set(found.per_class_accuracy) == {0, 1}


def test_knn_accuracy_scores_the_given_rows_against_the_training_rows():
    train_x, train_y = np.array([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1])
    assert classification.knn_accuracy(1, train_x, train_y, np.array([[0.4], [10.6]]), np.array([0, 1])) == 1.0
    assert classification.knn_accuracy(1, train_x, train_y, np.array([[0.4], [10.6]]), np.array([1, 1])) == 0.5


def test_per_class_accuracy_is_recall_per_class():
    cfg = params().evaluate
    x, y = blobs(30)
    found = classification.classify(cfg, 0, x, y, x, y)
    assert found.per_class_accuracy == {0: 1.0, 1: 1.0, 2: 1.0}
    assert found.metrics == {"probe_accuracy": 1.0, "knn_accuracy": 1.0}


# ---- one-class -------------------------------------------------------------------------------------------
def test_auroc_precision_recall_of_a_known_ranking():
    is_anomaly = np.array([False, False, True, True])
    scores = np.array([0.1, 0.4, 0.35, 0.8])  # anomaly-over-normal pairs ranked right: 3 of 4
    val_scores = np.array([0.1, 0.3])  # 50th percentile: threshold 0.2 -> flagged: [F, T, T, T]
    found = oneclass.threshold_metrics(val_scores, scores, is_anomaly, percentile=50.0)
    assert found["auroc"] == pytest.approx(0.75)
    assert found["threshold"] == pytest.approx(0.2)
    assert found["precision"] == pytest.approx(2 / 3)
    assert found["recall"] == pytest.approx(1.0)
    assert found["f1"] == pytest.approx(0.8)


def test_standardized_score_by_hand():
    normal = np.array([[0.0, 0.0], [0.0, 0.0]])
    recon = np.array([[1.0, 0.0], [-1.0, 0.0]])  # feature 0 is always off by 1, feature 1 never
    weights = oneclass.error_weights(normal, recon)
    assert weights == pytest.approx([1 / (1 + 0.5), 1 / (0 + 0.5)])  # shrunk by the mean over features, 0.5
    sample, reconstruction = np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]])
    assert oneclass.per_sample_error(sample, reconstruction, weights) == pytest.approx([(2 / 3 + 2) / 2])
    assert oneclass.per_sample_error(sample, reconstruction) == pytest.approx([1.0])


def test_code_density_scores_catch_what_the_reconstruction_error_misses():
    """Normal rows on a plane: an anomaly on the plane but far out is reconstructed perfectly (mse misses it, the
    Mahalanobis distance of its code does not); one off the plane near the centre is the reverse; combined sees both."""
    from aelab.data.prepared import PreparedData, Split

    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(5, 2)))[0].T  # two orthonormal directions in 5-D

    def normal_rows(n: int) -> np.ndarray:
        return rng.normal(size=(n, 2)) @ plane + 0.01 * rng.normal(size=(n, 5))

    subset = PreparedData(Split(normal_rows(500), None), Split(normal_rows(200), None), Split(normal_rows(1), None))
    far_on_plane = np.array([[8.0, 0.0]]) @ plane
    off_plane_centre = 3.0 * np.linalg.svd(plane)[2][-1:]  # orthogonal to the plane, at the centre
    model = oneclass.PCAModel(subset.train.x, 2, seed=0)
    typical = subset.val.x[:100]

    def rank(score: str, row: np.ndarray) -> float:
        """The share of typical normal rows the row outscores."""
        scorer = oneclass.fit_score(model, subset, score)
        return float((scorer(row)[0] > scorer(typical)).mean())

    assert rank("mse", far_on_plane) < 0.9 and rank("mahalanobis", far_on_plane) == 1.0
    assert rank("mse", off_plane_centre) == 1.0 and rank("mahalanobis", off_plane_centre) < 0.5
    assert rank("combined", far_on_plane) == 1.0 and rank("combined", off_plane_centre) == 1.0
    # a list of parts is added the way combined adds its two
    listed = oneclass.fit_score(model, subset, ["mse", "mahalanobis"])
    assert np.allclose(listed(typical), oneclass.fit_score(model, subset, "combined")(typical))
    # PCA's features are its input: a Gaussian on the pixels sees the far point on the plane too
    assert rank("features", far_on_plane) == 1.0


def test_normalized_pathway_whitens_the_normal_differences():
    """NAP: on the rows it was fitted on, each kept direction contributes 1 on average; a direction the normal rows
    never vary in is dropped, and a row far out along the least varying direction outscores one along the most."""
    rng = np.random.default_rng(0)
    differences = np.hstack([rng.normal(size=(400, 3)) * [10.0, 1.0, 0.1], np.zeros((400, 1))])
    nap = oneclass.NormalizedPathway(differences)
    assert nap.directions.shape == (4, 3)
    assert nap(differences).mean() == pytest.approx(3.0)
    assert nap(np.array([[0.0, 0.0, 1.0, 0.0]]))[0] > 50 * nap(np.array([[1.0, 0.0, 0.0, 0.0]]))[0]


def test_pathway_differences_of_pca_are_the_residual_and_a_zero_code_difference():
    x = np.random.default_rng(1).normal(size=(50, 4))
    model = oneclass.PCAModel(x, 2, seed=0)
    differences = oneclass.pathway_differences(model, x[:5])
    assert differences.shape == (5, 6)
    assert differences[:, :4] == pytest.approx(x[:5] - model.reconstruct(x[:5]), abs=1e-5)
    assert differences[:, 4:] == pytest.approx(0.0, abs=1e-5)


def test_oneclass_hidden_dims_do_not_apply_to_convolutional_variants():
    with pytest.raises(ConfigError, match=r"evaluate\.oneclass: .*hidden_dims applies to fully connected variants"):
        params("evaluate.oneclass.variant=conv", "evaluate.oneclass.hidden_dims=[8]")


# ---- denoising -------------------------------------------------------------------------------------------
def test_psnr_of_a_known_noise_and_ssim_of_identical_images():
    clean = np.full((4, 16), 0.5, dtype=np.float32)
    noisy = clean + np.where(np.arange(16) % 2 == 0, 0.1, -0.1).astype(np.float32)  # MSE exactly 0.01
    flat = denoising.image_quality(noisy, clean, None)
    assert flat == {"psnr": pytest.approx(20.0, abs=1e-4)}  # 10 log10(1 / 0.01)
    images = denoising.image_quality(noisy, clean, (1, 4, 4))
    assert images["psnr"] == pytest.approx(20.0, abs=1e-4)
    rng = np.random.default_rng(0)
    textured = rng.uniform(size=(3, 64)).astype(np.float32)
    assert denoising.image_quality(textured, textured, (1, 8, 8))["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_denoisers_are_scored_on_the_same_corruption():
    clean = np.random.default_rng(0).uniform(size=(10, 64)).astype(np.float32)
    corruptions = [GaussianNoiseConfig(kind="gaussian", sigma=0.2), MaskingConfig(kind="masking", p=0.5)]
    metrics, outputs = denoising.evaluate_denoisers(
        clean, corruptions, {"identity": lambda x: x, "oracle": lambda x: clean}, (1, 8, 8), seed=3
    )
    assert metrics["identity"] == metrics["raw"]  # doing nothing scores as the corrupted input
    assert math.isinf(metrics["oracle"]["denoise/gaussian_0.2/psnr"])
    assert set(outputs) == {"gaussian_0.2", "masking_0.5"}
    again, _ = denoising.evaluate_denoisers(clean, corruptions, {"identity": lambda x: x}, (1, 8, 8), seed=3)
    assert again["raw"] == metrics["raw"]


def test_corruption_names_and_ssim_window():
    assert denoising.corruption_name(SaltAndPepperConfig(kind="salt_pepper", ratio=0.1)) == "salt_pepper_0.1"
    assert denoising.ssim_window((1, 8, 8)) == (3, pytest.approx(0.3))
    assert denoising.ssim_window((1, 28, 28)) == (11, pytest.approx(1.5))


# ---- sparsity --------------------------------------------------------------------------------------------
def test_unit_statistics_by_hand():
    codes = np.array([[0.0, 0.5, 1.0], [0.0, 0.05, 1.0]])  # unit 0 dead, unit 1 half-active, unit 2 always on
    metrics, rho_hat = sparsity.unit_statistics(codes, 0.05, params().evaluate.sparsity)
    assert rho_hat == pytest.approx([0.0, 0.275, 1.0])
    assert metrics["sparsity/dead_fraction"] == pytest.approx(1 / 3)
    assert metrics["sparsity/always_on_fraction"] == pytest.approx(1 / 3)
    assert metrics["sparsity/active_per_sample"] == pytest.approx(1.5)
    assert metrics["sparsity/mean_abs_deviation"] == pytest.approx((0.05 + 0.225 + 0.95) / 3)


# ---- the report ------------------------------------------------------------------------------------------
def test_report_tables_and_anchors(tmp_path):
    metrics = {
        "pca": {"code_dim": 30, "recon_sse": 13.5, "probe_accuracy": 0.9, "oneclass/auroc_mean": 0.95},
        "raw": {"probe_accuracy": 0.92, "denoise/gaussian_0.1/psnr": 20.0, "denoise/gaussian_0.1/ssim": 0.5},
        "undercomplete": {"code_dim": 30, "recon_sse": 3.5, "oneclass/auroc_mean": 0.97},
        "stacked": {"code_dim": 2, "recon_sse": 1.0},  # another code size: not beside Hinton's 30-d figure
    }
    metrics["pca"]["oneclass/auroc/0"], metrics["undercomplete"]["oneclass/auroc/0"] = 0.95, 0.97
    text = report.render(metrics)
    assert "| undercomplete | 30 | 3.5 |" in text
    assert "| 0 | 0.95 | 0.97 |" in text
    assert "| gaussian_0.1 | 20 / 0.5 |" in text
    results = {"dataset": "mnist", "command": "python -m aelab.benchmarks.published", "seed": 42, "metrics": metrics}
    path = tmp_path / "mnist.json"
    path.write_text(json.dumps(results))
    text = report.report(tmp_path / "unused.json", [path])
    assert "| test summed squared error, 784-1000-500-250-30 autoencoder | 3 |" in text
    assert "undercomplete: 3.5 |" in text and "undercomplete: 97 (our PCA: 95) |" in text
    assert "stacked: 1 |" not in text
    metrics["pca"]["code_dim"] = 2  # PCA at another code size is not beside the published PCA-30 figure
    path.write_text(json.dumps(results))
    assert "PCA with 30 components" not in report.report(tmp_path / "unused.json", [path])
    metrics["pca"]["code_dim"] = 30
    # one-class anchors stand beside the best of our variants, whichever it is
    metrics["conv"] = {"oneclass/auroc_mean": 0.981, "oneclass/auroc/0": 0.981}
    path.write_text(json.dumps(results))
    text = report.report(tmp_path / "unused.json", [path])
    assert "| one-class mean AUROC (%), geometric transformations | 98 |" in text
    assert "conv: 98.1 (our PCA: 95) |" in text and "undercomplete: 97 " not in text


def test_report_merges_results_files_of_one_dataset(tmp_path):
    pca = {"oneclass/auroc_mean": 0.95, "oneclass/auroc/0": 0.95}
    files = []
    for variant, auroc in (("undercomplete", 0.96), ("conv", 0.97)):
        results = {
            "dataset": "mnist",
            "command": f"python -m aelab.benchmarks.oneclass --variant {variant}",
            "reused_models": [0] if variant == "conv" else [],
            "metrics": {variant: {"oneclass/auroc_mean": auroc, "oneclass/auroc/0": auroc}, "pca": pca},
        }
        files.append(tmp_path / f"{variant}.json")
        files[-1].write_text(json.dumps(results))
    text = report.report(tmp_path / "unused.json", files, merge=True)
    assert text.count("### mnist") == 1 and "| normal class | undercomplete | pca | conv |" in text
    assert "| 0 | 0.96 | 0.95 | 0.97 |" in text  # the same PCA figures are shown once
    assert "conv: 97 (our PCA: 95) |" in text and "raw" not in text  # no anchor without a figure of ours
    assert "the models of classes [0] were trained by an earlier run" in text
    other = tmp_path / "fashion.json"
    other.write_text(json.dumps({"dataset": "fashion-mnist", "metrics": {}}))
    with pytest.raises(DataError, match="--merge: the results files are of several datasets"):
        report.report(tmp_path / "unused.json", [*files, other], merge=True)


def test_report_command_errors_are_one_line(tmp_path, capsys):
    from aelab.cli import main

    assert main(["report", "--metrics", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.json: metrics file" in err


def test_evaluate_params_are_validated():
    with pytest.raises(ConfigError, match=r"evaluate\.oneclass\.threshold_percentile"):
        params("evaluate.oneclass.threshold_percentile=0")
    with pytest.raises(ConfigError, match=r"evaluate\.tsne\.colour: unknown key"):
        params("evaluate.tsne.colour=red")


def test_mosaic_tiles_images_row_by_row_with_white_gaps() -> None:
    from aelab.plots import mosaic

    images = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)
    canvas = mosaic(images, n_cols=2)
    assert canvas.shape == (3 * 3 - 1, 2 * 4 - 1)
    np.testing.assert_array_equal(canvas[0:2, 0:3], images[0])
    np.testing.assert_array_equal(canvas[0:2, 4:7], images[1])
    np.testing.assert_array_equal(canvas[6:8, 0:3], images[4])
    assert (canvas[2, :] == 1.0).all() and (canvas[6:8, 4:7] == 1.0).all()  # gap row, empty last cell


def test_first_layer_weights_are_drawn_as_input_images_or_conv_kernels() -> None:
    from torch import nn

    dense = nn.Module()
    dense.encoder = nn.Sequential(nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 2))
    weights, shape = sparsity.first_layer_weights(dense, (1, 8, 8))
    assert weights.shape == (5, 64) and shape == (1, 8, 8)
    conv = nn.Module()
    conv.encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 2))
    weights, shape = sparsity.first_layer_weights(conv, (1, 8, 8))
    assert weights.shape == (4, 9) and shape == (1, 3, 3)  # the kernels, not the bottleneck's weights
    sparsity.features_figure(weights, shape, 64, "kernels")
