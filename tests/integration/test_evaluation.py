"""The one-class protocol and the evaluate stage on tiny data, and the one-class benchmark on MNIST."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from aelab.data.prepared import PreparedData, Split
from aelab.errors import DataError
from aelab.evaluation import oneclass, report
from aelab.models.transformations import HEAD_WIDTH
from tests.helpers import blobs, tiny_data
from tests.helpers import repo_params as params


# ---- one-class -------------------------------------------------------------------------------------------
def test_oneclass_protocol_on_small_data(tmp_path):
    cfg = params(
        "evaluate.oneclass.hidden_dims=[8, 2]", "evaluate.oneclass.max_epochs=3", "evaluate.oneclass.classes=[0, 2]"
    )
    data = tiny_data()
    found = oneclass.run_oneclass(cfg, data, root=tmp_path)
    assert [(r["class"], r["method"]) for r in found.rows] == [
        (0, "autoencoder"),
        (0, "pca"),
        (2, "autoencoder"),
        (2, "pca"),
    ]
    pca_metrics = found.metrics("pca")
    assert pca_metrics["oneclass/auroc_mean"] > 0.95  # separated blobs: PCA of one class misfits the others
    assert set(found.metrics("autoencoder")) >= {"oneclass/auroc/0", "oneclass/auroc/2", "oneclass/f1_mean"}
    models = sorted(tmp_path.glob("*/class_*/model.pt"))
    assert [p.parent.name for p in models] == ["class_0", "class_2"]
    # a repeated evaluation reuses the finished per-class models and gives the same numbers
    stamps = [p.stat().st_mtime_ns for p in models]
    again = oneclass.run_oneclass(cfg, data, root=tmp_path)
    assert again.rows == found.rows
    assert [p.stat().st_mtime_ns for p in models] == stamps
    curves = oneclass.mean_roc(found, 11)
    assert list(curves) == ["fpr", "autoencoder", "pca"] and curves["pca"][-1] == pytest.approx(1.0)
    # another score reuses the same models (it is not part of their cache key) and rescores every method
    standardized = oneclass.run_oneclass(
        cfg.model_copy(
            update={
                "evaluate": cfg.evaluate.model_copy(
                    update={"oneclass": cfg.evaluate.oneclass.model_copy(update={"score": "standardized"})}
                )
            }
        ),
        data,
        root=tmp_path,
    )
    assert [p.stat().st_mtime_ns for p in models] == stamps
    assert [r["threshold"] for r in standardized.rows] != [r["threshold"] for r in found.rows]
    assert standardized.metrics("pca")["oneclass/auroc_mean"] > 0.95
    # the validation AUROC (other classes' validation rows as anomalies) is what a score is chosen on
    assert pca_metrics["oneclass/val_auroc_mean"] > 0.95
    for score in ("mahalanobis", "combined", "features", "sap", "nap"):
        oneclass_cfg = cfg.evaluate.oneclass.model_copy(update={"score": score})
        rescored = oneclass.run_oneclass(
            cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"oneclass": oneclass_cfg})}),
            data,
            root=tmp_path,
        )
        assert [p.stat().st_mtime_ns for p in models] == stamps
        assert rescored.metrics("pca")["oneclass/val_auroc_mean"] > 0.9, score
        # the briefly trained autoencoder reconstructs every blob alike; its codes and hidden layers tell them apart
        mse_val = found.metrics("autoencoder")["oneclass/val_auroc_mean"]
        assert rescored.metrics("autoencoder")["oneclass/val_auroc_mean"] > mse_val + 0.15, score


@pytest.mark.parametrize("variant", ["conv", "stacked_conv"])
def test_oneclass_protocol_trains_convolutional_and_pretrained_variants(tmp_path, variant):
    cfg = params(
        f"evaluate.oneclass.variant={variant}",
        "evaluate.oneclass.max_epochs=2",
        "evaluate.oneclass.classes=[1]",
        f"variants.{variant}.code_dim=4",
        *([f"variants.{variant}.pretrain_epochs=1"] if variant == "stacked_conv" else []),
    )
    x, y = blobs(30, n_features=64)
    data = PreparedData(
        Split(x, y), Split(*blobs(10, 64, seed=1)), Split(*blobs(20, 64, seed=2)), meta={"image_shape": [1, 8, 8]}
    )
    found = oneclass.run_oneclass(cfg, data, root=tmp_path)
    assert [(r["class"], r["method"]) for r in found.rows] == [(1, "autoencoder"), (1, "pca")]
    (model,) = tmp_path.glob("*/class_1/model.pt")
    assert oneclass.AutoencoderReducer.load(model).module_.code_dim == 4
    phases = sorted(p.name for p in model.parent.glob("pretrain/layer*.pt"))
    assert phases == (["layer1.pt", "layer2.pt", "layer3.pt"] if variant == "stacked_conv" else [])  # blocks, code


def shapes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images: class 0 a bright corner with a bar (every rotation and flip of it looks different), class 1 a
    centred square (the same under all eight), with noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.2, size=(2 * n, 8, 8))
    images[:n, :3, :3] += 0.7
    images[:n, 0, 3:7] += 0.7
    images[n:, 2:6, 2:6] += 0.7
    order = rng.permutation(2 * n)
    labels = np.repeat([0, 1], n)
    return images.reshape(2 * n, 64)[order].clip(0, 1).astype(np.float32), labels[order]


def test_oneclass_transformation_score_reads_the_head_trained_with_the_reconstruction(tmp_path):
    """The head learns which rotation or flip turned a normal image; on the other class, which looks the same
    under all eight, it cannot tell, so the transformation score ranks it as anomalous. PCA has no head: its row
    is its mse score."""
    overrides = [
        "evaluate.oneclass.variant=conv",
        "evaluate.oneclass.max_epochs=8",
        "evaluate.oneclass.classes=[0]",
        "variants.conv.code_dim=4",
        "variants.conv.transformations={weight: 1.0}",
        "train.batch_size=32",
    ]
    data = PreparedData(
        Split(*shapes(96, 0)), Split(*shapes(24, 1)), Split(*shapes(24, 2)), meta={"image_shape": [1, 8, 8]}
    )
    found = {
        score: oneclass.run_oneclass(params(*overrides, f"evaluate.oneclass.score={score}"), data, root=tmp_path)
        for score in ("transformations", "transformations_mse", "transformations_features", "mse")
    }
    listed = ["mse", "mahalanobis", "head_features"]
    found["listed"] = oneclass.run_oneclass(params(*overrides, f"evaluate.oneclass.score={listed}"), data, tmp_path)
    for score in ("transformations", "transformations_mse", "transformations_features", "listed"):
        assert found[score].metrics("autoencoder")["oneclass/auroc_mean"] > 0.95, score
        assert found[score].metrics("pca") == found["mse"].metrics("pca"), score
    (model_file,) = tmp_path.glob("*/class_0/model.pt")  # one model, trained once, for every score
    model = oneclass.AutoencoderCodeModel(oneclass.AutoencoderReducer.load(model_file))
    # the features under the code: the last conv block's map, flat
    with torch.inference_mode():
        below_code = torch.from_numpy(data.test.x[:5])
        for layer in model.layers[:-1]:
            below_code = layer(below_code)
    assert below_code.dim() == 4  # (rows, channels, height, width)
    assert np.array_equal(model.features(data.test.x[:5]), below_code.flatten(1).numpy())
    assert model.head_features(data.test.x[:5]).shape == (5, HEAD_WIDTH)  # the head's hidden layer
    scores = model.transformation_nll(data.test.x)
    # a centred square is its own rotation: the head sees one image eight times and cannot beat log 8
    assert scores[data.test.y == 1].min() > np.log(8) - 0.1
    assert np.median(scores[data.test.y == 0]) < np.log(8) - 0.5  # learnt: sure of the transformation


def test_a_shifted_head_is_kept_with_the_model_and_scores_all_72_transformations(tmp_path):
    """With a shift the head learns 72 transformations; the model file keeps the shift, so a loaded model scores
    with the same set it was trained on."""
    overrides = [
        "evaluate.oneclass.variant=conv",
        "evaluate.oneclass.max_epochs=40",
        "evaluate.oneclass.classes=[0]",
        "variants.conv.code_dim=4",
        "variants.conv.transformations={weight: 1.0, shift: 2}",
        "evaluate.oneclass.score=transformations",
        "train.batch_size=32",
    ]
    data = PreparedData(
        Split(*shapes(96, 0)), Split(*shapes(24, 1)), Split(*shapes(24, 2)), meta={"image_shape": [1, 8, 8]}
    )
    found = oneclass.run_oneclass(params(*overrides), data, root=tmp_path)
    assert found.metrics("autoencoder")["oneclass/auroc_mean"] > 0.9
    (model_file,) = tmp_path.glob("*/class_0/model.pt")
    module = oneclass.AutoencoderReducer.load(model_file).module_
    assert module.hparams["transformation_shift"] == 2
    assert module.transform_head(torch.zeros(1, 4)).shape == (1, 72)
    scores = oneclass.AutoencoderCodeModel(oneclass.AutoencoderReducer.load(model_file)).transformation_nll(data.test.x)
    assert np.median(scores[data.test.y == 0]) < np.log(72) - 1.0  # learnt: far surer than a guess among 72


def test_oneclass_rejects_unknown_classes(tmp_path):
    with pytest.raises(DataError, match=r"evaluate\.oneclass\.classes: \[7\]"):
        oneclass.run_oneclass(params("evaluate.oneclass.classes=[7]"), tiny_data(), root=tmp_path)


# ---- the stage ----------------------------------------------------------------------------
def test_evaluate_stage_on_tiny_data(tmp_path):
    from aelab.evaluation import study as stage
    from aelab.stages.reduce import reduce

    cfg = params(
        "reduce.pca_components=3",
        "evaluate.tsne.max_samples=30",
        "evaluate.oneclass.classes=[1]",
        "evaluate.oneclass.max_epochs=1",
        "evaluate.oneclass.hidden_dims=[4]",
        "evaluate.num_threads=1",
    )
    data = tiny_data()
    reduce(cfg, "pca", data, out=tmp_path / "codes")
    with torch.random.fork_rng():
        results, outputs = stage.evaluate(
            cfg, data, codes_dir=tmp_path / "codes", models_dir=tmp_path / "models", out=tmp_path / "evaluation"
        )
    assert set(results) == {"pca", "raw", "undercomplete"}
    pca = results["pca"]
    expected = {"recon_mse", "recon_sse", "probe_accuracy", "knn_accuracy", "val_knn_accuracy", "explained_variance"}
    assert expected <= set(pca)
    assert "denoise/gaussian_0.3/ssim" in pca and "denoise/gaussian_0.3/psnr" in results["raw"]
    assert "oneclass/auroc/1" in pca and "oneclass/auroc/1" in results["undercomplete"]
    files = {p.relative_to(tmp_path / "evaluation").as_posix() for p in (tmp_path / "evaluation").rglob("*.*")}
    assert {"oneclass/roc.csv", "oneclass/roc.png", "tsne/pca.png", "classification/confusion_raw.png"} <= files
    confusion = pd.read_csv(tmp_path / "evaluation/confusion/raw.csv")  # DVC's confusion template
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(data.test.y)
    assert (tmp_path / "evaluation/oneclass/roc.csv").read_text().splitlines()[0] == "fpr,autoencoder,pca"


@pytest.mark.slow  # the MNIST originals and per-class training on them: over 10 s
def test_oneclass_benchmark_writes_a_results_file_the_report_renders(shared_data, tmp_path, monkeypatch):
    from aelab.benchmarks import oneclass as benchmark

    monkeypatch.setenv("AELAB_SHARED_DATA", str(shared_data))
    out = tmp_path / "results.json"
    argv = ["--dataset", "mnist", "--variant", "conv", "--work", str(tmp_path / "work"), "--out", str(out)]
    argv += ["--set", "data.max_train_samples=500", "--set", "evaluate.oneclass.classes=[0, 1]"]
    argv += ["--set", "evaluate.oneclass.max_epochs=1"]
    monkeypatch.chdir(tmp_path)
    assert benchmark.main(argv) == 0
    results = json.loads(out.read_text())
    assert set(results["metrics"]) == {"conv", "pca"}
    assert set(results["metrics"]["conv"]) >= {"oneclass/auroc/0", "oneclass/auroc/1", "oneclass/auroc_mean"}
    assert results["variant_settings"]["code_dim"] == 32  # the 28x28 layout of deep-mnist.yaml
    text = report.report(tmp_path / "unused.json", [out])
    assert "per-class conv models, 1 epochs each (from `deep-mnist.yaml`)" in text
    assert "| one-class mean AUROC (%), convolutional autoencoder | 89.7 |" in text and "conv: " in text
