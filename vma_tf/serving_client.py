"""Client for a VMA model served by TF Serving: REST predict and gRPC.

REST (`http://HOST:8501`, numpy only, no TensorFlow needed):

  POST /v1/models/<name>[/versions/<v>]:predict
  {"signature_name": "classify", "inputs": {"x": [...], "memory": [...], ...}}
  -> {"outputs": {"class_probs": [...], ...}}

(the columnar "inputs" format: inputs of different sizes, scalars allowed).
gRPC (`grpc://HOST:8500`) uses `PredictionService.Predict` from the optional
`tensorflow-serving-api` package (imported only when used).

Input names and dtypes are those of the exported signatures
(`vma_tf.export`): float32 `x`, `memory`; int32 `num_samples`, `k`, `num`,
`seed` (`[2]`), `memory_labels`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Mapping

import numpy as np

INPUT_DTYPES = {
    "x": np.float32,
    "memory": np.float32,
    "num_samples": np.int32,
    "k": np.int32,
    "num": np.int32,
    "seed": np.int32,
    "memory_labels": np.int32,
}

GRPC_MISSING = (
    "gRPC needs the optional tensorflow-serving-api package "
    "(pip install tensorflow-serving-api==2.21.0); or use the REST API "
    "(--url=http://HOST:8501)"
)


# gRPC channel options: no client-side limit on request or reply size.
UNLIMITED_MESSAGES = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


class ServingError(RuntimeError):
    """The server (or the transport) reported an error; one-line message."""


# The signatures with a single output, and its name. TF Serving's REST API
# leaves a lone output unnamed (`{"outputs": value}`); the client names it.
# VAE and soft-attention `sample` (`images`); VMA's have `addresses` too.
SINGLE_OUTPUTS = {"sample": "images", "sample_with_memory": "images"}


def as_inputs(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Casts known inputs to their signature dtypes (others kept as given).

    Raises:
        ServingError: an integer input (`k`, `seed`, `memory_labels`, ...)
            holding a non-integer or a value outside int32, which a cast
            would silently change (merging labels, say); a float input (`x`,
            `memory`) holding no numbers (text, objects).
    """
    out = {}
    for name, value in inputs.items():
        dtype = INPUT_DTYPES.get(name)
        if dtype is np.int32:
            array = np.asarray(value)
            if array.dtype.kind not in "iub":
                raise ServingError(
                    f"input {name!r} must hold integers; got {array.dtype}"
                )
            info = np.iinfo(np.int32)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise ServingError(
                    f"input {name!r} must lie in the int32 range "
                    f"[{info.min}, {info.max}]; got {array.min()}..{array.max()}"
                )
        elif dtype is not None:
            array = np.asarray(value)
            if array.dtype.kind not in "fiub":
                raise ServingError(
                    f"input {name!r} must hold numbers; got {array.dtype}"
                )
        out[name] = np.asarray(value, dtype=dtype)
    return out


def rest_request_body(signature: str, inputs: Mapping[str, Any]) -> dict:
    """The JSON body of a TF Serving REST predict request.

    Args:
        signature: signature name, e.g. `"classify"`.
        inputs: `{input name: array-like}`.

    Returns:
        `{"signature_name": signature, "inputs": {name: nested lists}}`.
    """
    return {
        "signature_name": signature,
        "inputs": {k: v.tolist() for k, v in as_inputs(inputs).items()},
    }


def _array(value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == np.float64:  # Every float output is float32.
        array = array.astype(np.float32)
    return array


def parse_rest_response(
    body: str | bytes | Mapping, signature: str | None = None
) -> dict[str, np.ndarray]:
    """Outputs of a REST predict response as numpy arrays.

    Args:
        body: the response JSON (text or decoded).
        signature: the signature called: names a lone unnamed output
            (`SINGLE_OUTPUTS`; TF Serving does not name it).

    Returns:
        `{output name: array}` (floats as float32, integers as int64). A
        single unnamed output is named by `SINGLE_OUTPUTS[signature]`, or
        `"output"` for another signature.

    Raises:
        ServingError: the response is an error or has no outputs.
    """
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except ValueError as e:
            raise ServingError(f"response is not JSON: {e}") from None
    if "error" in body:
        raise ServingError(str(body["error"]).splitlines()[0] if body["error"] else "")
    if "outputs" not in body:
        raise ServingError(f"response has no 'outputs': keys {sorted(body)}")
    outputs = body["outputs"]
    if not isinstance(outputs, Mapping):
        return {SINGLE_OUTPUTS.get(signature, "output"): _array(outputs)}
    return {k: _array(v) for k, v in outputs.items()}


def predict_url(url: str, model_name: str = "vma", version: int | None = None) -> str:
    """`URL/v1/models/NAME[/versions/V]:predict` for a server base URL."""
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return url.rstrip("/") + path + ":predict"


def _error_text(text: str) -> str:
    try:
        message = str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        message = text
    return " ".join(message.split())


def predict_rest(
    url: str,
    signature: str,
    inputs: Mapping[str, Any],
    model_name: str = "vma",
    version: int | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """Calls a signature through TF Serving's REST predict API.

    Args:
        url: server base URL, e.g. `"http://localhost:8501"`.
        signature: signature name.
        inputs: `{input name: array-like}`.
        model_name: the served model's name (`MODEL_NAME`).
        version: a specific version (default: the newest).
        timeout: seconds.

    Returns:
        `{output name: array}`.

    Raises:
        ServingError: HTTP or model error (the server's message).
    """
    body = json.dumps(rest_request_body(signature, inputs)).encode()
    request = urllib.request.Request(
        predict_url(url, model_name, version),
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as e:
        detail = _error_text(e.read().decode(errors="replace"))
        raise ServingError(f"HTTP {e.code} from {request.full_url}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServingError(f"cannot reach {request.full_url}: {reason}") from None
    return parse_rest_response(text, signature)


def predict_grpc(
    target: str,
    signature: str,
    inputs: Mapping[str, Any],
    model_name: str = "vma",
    version: int | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """Calls a signature through TF Serving's gRPC `PredictionService`.

    Needs `tensorflow-serving-api` (and so TensorFlow), imported here.

    Args:
        target: `"HOST:PORT"` of the gRPC port (8500 by default).
        signature, inputs, model_name, version, timeout: as `predict_rest`.

    Returns:
        `{output name: array}`.

    Raises:
        ServingError: the package is missing, or the RPC failed.
    """
    try:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError:
        raise ServingError(GRPC_MISSING) from None
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    for name, value in as_inputs(inputs).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    # gRPC's own 4 MiB message limit would refuse a large reply (sampled
    # images, q(a|x) over a large memory) that TF Serving sends and REST takes.
    channel = grpc.insecure_channel(target, options=UNLIMITED_MESSAGES)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    except grpc.RpcError as e:
        detail = " ".join(str(e.details()).split())
        raise ServingError(f"gRPC {e.code().name} from {target}: {detail}") from None
    finally:
        channel.close()
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def predict(
    url: str,
    signature: str,
    inputs: Mapping[str, Any],
    model_name: str = "vma",
    version: int | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """REST for `http(s)://HOST:PORT`, gRPC for `grpc://HOST:PORT`."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "grpc":
        target = url[len("grpc://") :].rstrip("/")
        return predict_grpc(target, signature, inputs, model_name, version, timeout)
    if scheme in ("http", "https"):
        return predict_rest(url, signature, inputs, model_name, version, timeout)
    raise ServingError(f"url {url!r} must start with http://, https:// or grpc://")
