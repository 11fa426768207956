"""Compute the model's true predictions for the deploy.yaml test requests.

Runs score.py's ``init()``/``run()`` exactly as the scoring server does and writes
``train/expected.json`` (request name -> list of predictions, full precision).
Needs onnxruntime and numpy (environment.yml), not the training tools::

    python train/make_expected.py

``dataset-rows`` are the first three rows of ``load_diabetes()``, rounded to 6
decimals; those rounded values are the request body.
"""

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# fmt: off
REQUESTS = {
    "two-rows": {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]},
    "dataset-rows": {"data": [
        [0.038076, 0.05068, 0.061696, 0.021872, -0.044223,
         -0.034821, -0.043401, -0.002592, 0.019907, -0.017646],
        [-0.001882, -0.044642, -0.051474, -0.026328, -0.008449,
         -0.019163, 0.074412, -0.039493, -0.068332, -0.092204],
        [0.085299, 0.05068, 0.044451, -0.00567, -0.045599,
         -0.034194, -0.032356, -0.002592, 0.002861, -0.02593],
    ]},
}
# fmt: on


def main() -> None:
    os.environ["AZUREML_MODEL_DIR"] = str(REPO)
    sys.path.insert(0, str(REPO))
    import score

    score.init()
    expected = {name: score.run(json.dumps(body)) for name, body in REQUESTS.items()}
    out = REPO / "train" / "expected.json"
    out.write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
