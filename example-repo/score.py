"""Scoring script for the diabetes Ridge regression (Azure ML entry-script contract).

``init()`` runs once per worker and loads ``model/diabetes.onnx`` from
``$AZUREML_MODEL_DIR`` into an onnxruntime session. ``run()`` is called per
request with the raw JSON body::

    {"data": [[age, sex, bmi, bp, s1, s2, s3, s4, s5, s6], ...]}

(the ten scaled features of ``sklearn.datasets.load_diabetes``) and returns one
predicted disease-progression score per row, as a list of floats.
"""

import json
import os

import numpy as np
import onnxruntime as ort

N_FEATURES = 10

session = None
input_name = None


def init():
    """Load the ONNX model into a global InferenceSession."""
    global session, input_name  # noqa: PLW0603 - the entry-script contract keeps state in globals
    model_path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "diabetes.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model_path, sess_options=options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name


def run(raw_data):
    """Predict for the rows in ``{"data": [[10 floats], ...]}``; return a list of floats."""
    try:
        data = json.loads(raw_data)["data"]
        x = np.asarray(data, dtype=np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f'expected a JSON object {{"data": [[{N_FEATURES} numbers], ...]}}: {exc}'
        ) from exc
    if x.ndim != 2 or x.shape[1] != N_FEATURES or x.shape[0] == 0:
        raise ValueError(
            f"expected 'data' to be a non-empty list of rows of {N_FEATURES} numbers, "
            f"got an array of shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("'data' must contain only finite numbers (no null, NaN or Infinity)")
    return session.run(None, {input_name: x})[0].ravel().tolist()
