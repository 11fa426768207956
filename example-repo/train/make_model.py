"""Train the diabetes Ridge regression and export it to ONNX.

Uses the diabetes data set bundled with scikit-learn (442 patients, 10 scaled
features, target: disease progression one year later), so nothing is
downloaded. Writes ``model/diabetes.onnx`` next to ``score.py``.

Run from the repo root, in a venv with ``train/requirements.txt`` installed::

    python -m venv /tmp/trainvenv
    /tmp/trainvenv/bin/pip install -r train/requirements.txt
    /tmp/trainvenv/bin/python train/make_model.py

The output is deterministic: re-running it writes the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "model" / "diabetes.onnx"
N_FEATURES = 10
ALPHA = 1.0
SEED = 0
# Fixed opsets keep the file stable across skl2onnx upgrades that change defaults.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def train() -> tuple[Ridge, np.ndarray, np.ndarray]:
    """Fit Ridge on 80% of the data; return the model and the held-out 20%."""
    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED)
    model = Ridge(alpha=ALPHA).fit(x_train, y_train)
    return model, x_test, y_test


def to_onnx(model: Ridge) -> onnx.ModelProto:
    """Convert to ONNX: float32 input "input" [None, 10], output "variable" [None, 1]."""
    onx = convert_sklearn(
        model,
        name="diabetes-ridge",  # default is a random uuid, which breaks determinism
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        target_opset=TARGET_OPSET,
    )
    # skl2onnx may list the default domain twice; keep one entry per domain.
    opsets: dict[str, int] = {}
    for entry in onx.opset_import:
        opsets[entry.domain] = max(entry.version, opsets.get(entry.domain, 0))
    del onx.opset_import[:]
    for domain, version in sorted(opsets.items()):
        onx.opset_import.append(helper.make_opsetid(domain, version))
    onx.producer_name = "deployer-example"
    onx.producer_version = "1"
    onx.model_version = 1
    onx.doc_string = "Ridge(alpha=1.0) on sklearn.datasets.load_diabetes(); see train/make_model.py"
    onx.graph.doc_string = ""
    del onx.metadata_props[:]
    for key, value in {"data": "diabetes", "type": "regression", "alpha": str(ALPHA)}.items():
        onx.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(onx)
    return onx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    model, x_test, y_test = train()
    onx = to_onnx(model)
    data = onx.SerializeToString(deterministic=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)

    # Check the exported model against scikit-learn on the held-out rows.
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    pred_onnx = sess.run(None, {"input": x_test.astype(np.float32)})[0].ravel()
    pred_skl = model.predict(x_test)
    max_diff = float(np.max(np.abs(pred_onnx - pred_skl)))

    ops = ", ".join(sorted({node.op_type for node in onx.graph.node}))
    print(f"model:        Ridge(alpha={ALPHA}), {N_FEATURES} features, ONNX ops: {ops}")
    print(f"test rows:    {len(y_test)}")
    print(f"test R2:      {r2_score(y_test, pred_skl):.4f}")
    print(f"test MAE:     {mean_absolute_error(y_test, pred_skl):.2f}")
    print(f"onnx vs skl:  max |diff| = {max_diff:.2e}")
    print(
        f"wrote:        {args.output} ({len(data)} bytes, "
        f"sha256 {hashlib.sha256(data).hexdigest()[:16]})"
    )
    if max_diff > 1e-3:
        raise SystemExit(f"ONNX predictions differ from scikit-learn by {max_diff}")


if __name__ == "__main__":
    main()
