"""`tfchargen serve` against TF Serving's own tests: each case is ported from the TF Serving
test (or, where TF Serving has none, the source) named in its id or comment, adapted to
this model's signatures (``serving_default``: string ``prompt``; ``generate``: ``prompt``,
int32 ``max_length``/``top_k``, float ``temperature``/``top_p``, int64 ``seed``; ``score``:
string ``text``). Every case runs against the real server over its ports: raw HTTP for REST,
the ``tensorflow-serving-api`` stubs for gRPC.

Sources (tensorflow/serving): model_servers/http_rest_api_handler_test.cc (HANDLER),
util/json_tensor_test.cc (JSON), servables/tensorflow/predict_impl_test.cc,
get_model_metadata_impl_test.cc, model_servers/get_model_status_impl_test.cc,
model_servers/tensorflow_model_server_test.py, and the sources http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc, json_tensor.cc, classifier.cc, regressor.cc,
server_core.cc.
"""

import http.client
import io
import json
import os
import re
import socket
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tfchargen import contract
from tfchargen.serving.model_config import read_model_config
from tfchargen.serving.server import Server

pytestmark = pytest.mark.slow  # exports a model through the CLI

HANDLER = "http_rest_api_handler_test.cc"
JSON = "json_tensor_test.cc"
ROW = {"prompt": "ab", "max_length": 5, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 1}
READ_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(never_ending_model, tmp_path_factory):
    """`tfchargen serve` (in this process) on an export of a random model, version 1, with
    the labels stable -> 1 and canary -> 7 (not loaded) and a 2 s read timeout."""
    base = never_ending_model
    config = tmp_path_factory.mktemp("conformance-config") / "models.config"
    config.write_text(f"""model_config_list {{ config {{ name: "chargen" base_path: "{base}"
        model_platform: "tensorflow" version_labels {{ key: "stable" value: 1 }}
        version_labels {{ key: "canary" value: 7 }} }} }}""")
    with Server(None, port=0, grpc_port=0, read_timeout_s=READ_TIMEOUT_S, models=read_model_config(str(config)),
                model_config_file=str(config), allow_unavailable_labels=True) as s:  # canary: not loaded
        yield s


def rest(server, method, path, body=None, headers=None):
    """(status, headers, body bytes) of one request on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        data = body if body is None or isinstance(body, bytes) else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def rest_error(server, method, path, body=None):
    status, _, data = rest(server, method, path, body)
    return status, json.loads(data)["error"] if data.startswith(b"{") else data.decode()


@pytest.fixture(scope="module")
def stub(server):
    return prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.grpc_target))


@pytest.fixture(scope="module")
def model_stub(server):
    return model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(server.grpc_target))


def rpc_error(call, request):
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=30)
    return e.value.code().name, e.value.details()


# ---------------------------------------------------------------------------- REST: URLs, codes

UNSUPPORTED = [  # HANDLER:UnsupportedApiCalls, verbatim: every one is INVALID_ARGUMENT (400)
    ("GET", "/v1/foo", "Malformed request"),
    ("POST", "/v1/foo", "Malformed request"),
    ("GET", "/v1/models", "Missing model name"),
    ("GET", "/v1/models/debug/model_name", "Malformed request"),
    ("POST", "/v1/models", "Malformed request"),
    ("GET", "/v1/models/foo:predict", "Malformed request"),
    ("GET", "/v1/models/foo/version/50:predict", "Malformed request"),
    ("POST", "/v1/models/foo/version/50:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", "Malformed request"),
    ("POST", f"/v1/models/foo/versions/{2 ** 64 - 1}:regress", "Failed to convert version"),
    ("POST", "/v1/models/foo/metadata", "Malformed request"),
    ("POST", "/v1/models/foo/label/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/50/labels/some_label:regress", "Malformed request"),
    ("POST", "/v1/models/foo/versions/some_label:regress", "Malformed request"),
]


@pytest.mark.parametrize("method,path,text", UNSUPPORTED, ids=[f"{HANDLER}:UnsupportedApiCalls:{m} {p[:50]}"
                                                              for m, p, _ in UNSUPPORTED])
def test_unsupported_api_calls_are_400(server, method, path, text):
    status, error = rest_error(server, method, path, b"")
    assert status == 400 and text in error, error


OTHER_METHODS = [  # http_rest_api_handler.cc ProcessRequest: only GET and POST parse; the rest stays malformed
    ("PUT", "/v1/models/chargen:predict"), ("DELETE", "/v1/models/chargen"), ("PATCH", "/v1/models/chargen"),
    ("PUT", "/v1/models/chargen"), ("GET", "/v1/models/chargen:predict"), ("POST", "/v1/models/chargen"),
    ("POST", "/v1/models/chargen:PREDICT"),  # the regex ignores case, the verb comparison does not
    ("POST", "/v1/models/chargen:explain"),
]


@pytest.mark.parametrize("method,path", OTHER_METHODS,
                         ids=[f"http_rest_api_handler.cc:{m} {p}" for m, p in OTHER_METHODS])
def test_other_methods_and_verbs_are_malformed_requests(server, method, path):
    status, error = rest_error(server, method, path, {"instances": ["a"]})
    assert (status, error) == (400, f"Malformed request: {method} {path}")


def test_version_past_int64_and_exact_messages(server):
    # http_rest_api_util.cc ParseModelInfo: absl::SimpleAtoi into an int64
    status, error = rest_error(server, "POST", f"/v1/models/chargen/versions/{2 ** 63}:predict", {"instances": ["a"]})
    assert (status, error) == (400, f"Failed to convert version: {2 ** 63} to numeric.")
    status, error = rest_error(server, "GET", f"/v1/models/chargen/versions/{2 ** 63 - 1}")
    assert status == 404 and error == f"Could not find version {2 ** 63 - 1} of model chargen"
    assert rest_error(server, "GET", "/v1/models") == (400, "Missing model name in request.")


def test_head_is_malformed_and_paths_outside_v1_are_404(server):
    # http_server.cc: every /v1/ path goes to the handler (HEAD included); others are libevent's 404
    status, _, data = rest(server, "HEAD", "/v1/models/chargen")
    assert status == 400 and data == b""
    for method, path in (("GET", "/nowhere"), ("POST", "/v2/models/chargen:predict"), ("DELETE", "/x")):
        status, headers, data = rest(server, method, path)
        assert status == 404 and b"<TITLE>404 Not Found</TITLE>" in data, (method, path)


def test_paths_ignore_case_and_are_percent_decoded(server):
    # kModelStatusApiRegex is (?i); ParseModelInfo curl-unescapes the model name
    for path in ("/V1/MODELS/chargen", "/v1/Models/%63hargen/Versions/1"):
        status, _, data = rest(server, "GET", path)
        assert status == 200 and json.loads(data)["model_version_status"][0]["version"] == "1", path
    status, _, data = rest(server, "GET", "/v1/models/chargen/METADATA")  # not "metadata": the status API
    assert status == 200 and "model_version_status" in json.loads(data)


def test_options_is_the_cors_preflight(server):
    # http_server.cc ProcessRequest: OPTIONS answers from its Origin header, with no body
    assert rest(server, "OPTIONS", "/v1/models/chargen", headers={"Origin": "http://example.com"})[0] == 200
    status, _, data = rest(server, "OPTIONS", "/v1/models/chargen")
    assert status == 400 and data == b""


def test_errors_are_make_json_from_status(server):
    # JSON:MakeJsonFromTensors.StatusError: {"error": message}, rapidjson's PrettyWriter
    status, headers, data = rest(server, "POST", "/v1/models/chargen:predict", b'{"signature_name": "nope"}')
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert data == b'{\n    "error": "Serving signature name: \\"nope\\" not found in signature def"\n}'
    assert json.loads(data) == {"error": 'Serving signature name: "nope" not found in signature def'}


PREDICT_NAME_VERSION = [  # HANDLER:PredictModelNameVersionErrors (NOT_FOUND = 404)
    "/v1/models/foo:predict", "/v1/models/foo/versions/50:predict", "/v1/models/chargen99:predict",
    "/v1/models/chargen/versions/99:predict",
]


@pytest.mark.parametrize("path", PREDICT_NAME_VERSION, ids=[f"{HANDLER}:PredictModelNameVersionErrors:{p}"
                                                            for p in PREDICT_NAME_VERSION])
def test_predict_model_name_version_errors(server, path):
    status, error = rest_error(server, "POST", path, {"instances": ["a"]})
    assert status == 404 and error.startswith("Servable not found for request: "), error


PREDICT_REQUEST_ERRORS = [  # HANDLER:PredictRequestErrors (INVALID_ARGUMENT = 400)
    ("/v1/models/chargen:predict", "", "JSON Parse error: The document is empty"),
    ("/v1/models/chargen:predict", "instances = [1, 2]", "JSON Parse error: Invalid value"),
    ("/v1/models/chargen:predict", '{ "instances": [1, 2] }', "not of expected type: string"),
    ("/v1/models/chargen/labels/nonexistent:predict", '{ "instances": ["x", "y"] }',
     "Unrecognized servable version label"),
    ("/v1/models/chargen:predict", '{ "signature_name": 100 }', "'signature_name' key must be a string value."),
]


@pytest.mark.parametrize("path,body,text", PREDICT_REQUEST_ERRORS,
                         ids=[f"{HANDLER}:PredictRequestErrors:{t[:30]}" for _, _, t in PREDICT_REQUEST_ERRORS])
def test_predict_request_errors(server, path, body, text):
    status, error = rest_error(server, "POST", path, body.encode())
    assert status == 400 and text in error, error


def test_version_labels(server, stub):
    # server_core.cc ServableRequestFromModelSpec/GetModelVersionForLabel; HANDLER:Predict (labels URL)
    body = {"instances": ["ab"]}
    status, _, data = rest(server, "POST", "/v1/models/chargen/labels/stable:predict", body)
    assert status == 200 and json.loads(data)["predictions"][0]["text"].startswith("ab")
    assert rest_error(server, "POST", "/v1/models/chargen/labels/canary:predict", body) == (
        404, "Servable not found for request: Specific(chargen, 7)")
    assert rest_error(server, "GET", "/v1/models/chargen/labels/nope/metadata") == (
        400, "Unrecognized servable version label: nope")
    status, _, data = rest(server, "GET", "/v1/models/chargen/labels/nope")  # GetModelStatus ignores labels
    assert status == 200 and json.loads(data)["model_version_status"][0]["version"] == "1"
    request = score_request()
    request.model_spec.version_label = "stable"
    assert stub.Predict(request, timeout=30).model_spec.version.value == 1
    request.model_spec.version_label = "nope"
    assert rpc_error(stub.Predict, request) == ("INVALID_ARGUMENT", "Unrecognized servable version label: nope")
    request.model_spec.version.value = 1  # a oneof: the version set last replaces the label
    assert stub.Predict(request, timeout=30).model_spec.version.value == 1


def test_get_status_and_metadata_rest(server):
    # HANDLER:GetStatus, tensorflow_model_server_test.py:testGetStatusREST
    for path in ("/v1/models/chargen", "/v1/models/chargen/versions/1"):
        status, _, data = rest(server, "GET", path)
        assert status == 200 and json.loads(data) == {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest_error(server, "GET", "/v1/models/foo") == (404, "Could not find any versions of model foo")
    # HANDLER:GetModelMetadata, testGetModelMetadataREST
    status, _, data = rest(server, "GET", "/v1/models/chargen/versions/1/metadata")
    doc = json.loads(data)
    assert status == 200 and doc["model_spec"] == {"name": "chargen", "signature_name": "", "version": "1"}
    sig = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict" and sig["inputs"]["prompt"]["dtype"] == "DT_STRING"
    assert rest_error(server, "GET", "/v1/models/foo/metadata") == (404, "Servable not found for request: Latest(foo)")


CLASSIFY = [  # http_rest_api_handler.cc ProcessClassify/RegressRequest, json_tensor.cc, classifier.cc, regressor.cc
    ("classify", {"examples": [{"x": 1.0}]}, "Expected one or two output Tensors, found 5"),
    ("regress", {"examples": [{"x": 1.0}]}, "Expected one output Tensor."),
    ("classify", {"signature_name": "generate", "examples": [{"x": 1.0}]}, "Expected one input Tensor."),
    ("regress", {"signature_name": "nope", "examples": [{"x": 1.0}]}, "No signature was found with the name: nope"),
    ("classify", {"instances": ["a"]}, "When method is classify, key 'examples' is expected and was not found"),
    ("regress", {"examples": []}, "'examples' value is an empty array"),
    ("classify", {"examples": [1]}, "Example must be JSON object but got JSON Number"),
]


@pytest.mark.parametrize("verb,body,text", CLASSIFY, ids=[f"classifier.cc:{v}:{t[:30]}" for v, _, t in CLASSIFY])
def test_classify_and_regress_on_a_predict_model(server, verb, body, text):
    status, error = rest_error(server, "POST", f"/v1/models/chargen:{verb}", body)
    assert status == 400 and text in error, error
    assert rest_error(server, "POST", f"/v1/models/foo:{verb}", {"examples": [{}]})[0] == 404


# ---------------------------------------------------------------------------- REST: JSON bodies


def predict(server, body, path="/v1/models/chargen:predict"):
    status, _, data = rest(server, "POST", path, body)
    return status, data


def gen_inputs(**changes):
    return {k: [v] for k, v in {**ROW, **changes}.items()}


JSON_OK = [  # (id, body): TF Serving accepts these (200)
    (f"{JSON}:SingleUnnamedTensor", {"instances": ["ab", "cd", "ef"]}),
    (f"{JSON}:SingleUnnamedTensorWithSignature", {"signature_name": "serving_default", "instances": ["ab"]}),
    (f"{JSON}:SingleUnnamedTensorBase64Scalars", {"instances": [{"b64": "YWI="}, {"b64": "Y2Q="}]}),
    (f"{JSON}:SingleUnnamedTensorColumnarFormat", {"inputs": ["ab", "cd"]}),
    (f"{JSON}:MultipleNamedTensor", {"signature_name": "generate", "instances": [ROW, dict(ROW, prompt="cd")]}),
    (f"{JSON}:SingleNamedTensorBase64",
     {"signature_name": "generate", "instances": [dict(ROW, prompt={"b64": "YWI"})]}),
    (f"{JSON}:MultipleNamedTensorColumnarFormat", {"signature_name": "generate", "inputs": gen_inputs()}),
    (f"{JSON}:MixedInputForFloatTensor", {"signature_name": "generate", "inputs": gen_inputs(temperature=0, top_p=1)}),
    (f"{JSON}:FloatTensorThatExceedsMinReturnsZero",
     {"signature_name": "generate", "inputs": gen_inputs(temperature=2.2250738585072014e-308)}),
    ("json_tensor.cc:FillTensorMapFromInputsMap:extra keys ignored",
     {"signature_name": "generate", "inputs": {**gen_inputs(), "extra": [[1]], "comment": "not an input"}}),
    ("json_tensor.cc:FillPredictRequestFromJson:other top-level keys ignored", {"instances": ["ab"], "extra": 1}),
]


@pytest.mark.parametrize("body", [b for _, b in JSON_OK], ids=[i for i, _ in JSON_OK])
def test_json_bodies_tf_serving_accepts(server, body):
    status, data = predict(server, body)
    assert status == 200, data
    doc = json.loads(data)
    if "instances" in body:
        assert len(doc["predictions"]) == len(body["instances"])
        first = doc["predictions"][0]
        assert first["text"].startswith("ab") and first["num_chars"] >= 0
    else:
        texts = doc["outputs"]["text"]
        assert texts[0].startswith("ab") and len(texts) == len(body["inputs"] if isinstance(body["inputs"], list)
                                                               else body["inputs"]["prompt"])


def test_json_equal_values_give_equal_replies(server):
    # JSON:FloatTensorThatExceedsMinReturnsZero (2.2e-308 -> 0.0f: greedy, as temperature 0),
    # JSON:TensorFromNonNullTerminatedBuffer (bytes after the document are not read)
    body = {"signature_name": "generate", "inputs": gen_inputs(temperature=0.0, max_length=20)}
    want = predict(server, body)
    assert want[0] == 200
    tiny = {"signature_name": "generate", "inputs": gen_inputs(temperature=2.2250738585072014e-308, max_length=20)}
    assert predict(server, tiny) == want
    assert predict(server, json.dumps(body).encode() + b"X trailing bytes {") == want
    assert predict(server, b"  \n" + json.dumps(body).encode() + b"\n\n{}") == want


def test_json_float_past_float32_is_inf(server):
    # JSON:FloatTensorThatExceedsMaxReturnsInf: DBL_MAX -> inf, which the graph then refuses
    for value in ("1.7976931348623157e308", "-1.7976931348623157e308", "1e39", "Infinity"):
        body = ('{"signature_name": "generate", "instances": [{"prompt": "a", "max_length": 5, "temperature": %s, '
                '"top_k": 0, "top_p": 1.0, "seed": 0}]}' % value)
        status, data = predict(server, body.encode())
        assert status == 400 and contract.MSG_TEMPERATURE in json.loads(data)["error"], (value, data)
    status, data = predict(server, b'{"instances": [1e400]}')  # past a double: rapidjson's own error
    assert status == 400 and json.loads(data)["error"] == (
        "JSON Parse error: Number too big to be stored in double. at offset: 15")


def test_json_deeply_nested_documents(server):
    # JSON:DeeplyNestedWellFormed, JSON:DeeplyNestedMalformed (rapidjson's iterative parser)
    deep = "[" * 500000 + "]" * 500000
    status, data = predict(server, ('{"instances": ["ab"], "nested": %s}' % deep).encode())
    assert status == 200, data[:300]
    status, data = predict(server, ('{"signature_name": %s}' % deep).encode())
    assert status == 400 and "key must be a string value" in json.loads(data)["error"]


JSON_ERRORS = [  # (id, body, part of the error): INVALID_ARGUMENT (400)
    (f"{JSON}:SingleUnnamedTensorErrors:empty", b"", "document is empty"),
    (f"{JSON}:SingleUnnamedTensorErrors:signature", {"signature_name": 5, "instances": [["a", "b"]]},
     "must be a string value"),
    (f"{JSON}:SingleUnnamedTensorErrors:both", {"instances": [["a"]], "inputs": [["a"]]}, "Not formatted correctly"),
    (f"{JSON}:SingleUnnamedTensorErrors:size", {"instances": [["a", "b"], ["c", "d"], ["e", "f", "g"]]},
     "Expecting tensor size"),
    (f"{JSON}:SingleUnnamedTensorErrors:shape", {"instances": [["a", "b"], ["c", "d"], [["e", "f"]]]},
     "Expecting shape"),
    (f"{JSON}:SingleUnnamedTensorErrors:shape2", {"instances": ["a", ["a"]]}, "Expecting shape"),
    (f"{JSON}:SingleUnnamedTensorErrors:type", {"instances": [["a", "b"], [1, 2]]}, "not of expected type"),
    (f"{JSON}:MultipleNamedTensorErrors:shape", {"signature_name": "generate", "instances": [
        ROW, dict(ROW, prompt=["a"])]}, "Expecting shape"),
    (f"{JSON}:MultipleNamedTensorErrors:size", {"signature_name": "generate", "instances": [
        dict(ROW, prompt=["a", "b"]), dict(ROW, prompt=["a", "b", "c"])]}, "Expecting tensor size"),
    (f"{JSON}:MultipleNamedTensorErrors:object-then-list", {"signature_name": "generate", "instances": [
        ROW, [1, 20, 30]]}, "Expecting object but got list"),
    (f"{JSON}:MultipleNamedTensorErrors:list-then-object", {"instances": [["baz", "bar"], {"prompt": ["a"]}]},
     "Expecting value/list but got object"),
    ("json_tensor.cc:FillPredictRequestFromJson:missing", {"signature_name": "generate"},
     "Missing 'inputs' or 'instances' key"),
    ("json_tensor.cc:FillPredictRequestFromJson:not a list", {"instances": "a"},
     "Expecting 'instances' to be an list/array"),
    ("json_tensor.cc:FillPredictRequestFromJson:empty", {"instances": []}, "No values in 'instances' array"),
    ("json_tensor.cc:FillTensorMapFromInputsMap:missing input", {"signature_name": "generate", "inputs": {
        "prompt": ["a"]}}, "Missing named input: "),
    ("json_tensor.cc:FillTensorMapFromInputsMap:plain list", {"signature_name": "generate", "inputs": ["a"]},
     "inputs is a plain value/list, but expecting an object as multiple input tensors required"),
    ("json_tensor.cc:FillTensorMapFromInstancesList:plain list", {"signature_name": "generate", "instances": ["a"]},
     "instances is a plain list, but expecting list of objects as multiple input tensors required"),
    ("json_tensor.cc:FillTensorMapFromInstancesList:keys", {"signature_name": "generate", "instances": [
        {k: v for k, v in ROW.items() if k != "seed"}]}, "keys must be equal to: max_length,prompt,seed,"),
    ("json_tensor.cc:AddInstanceItem:unknown key", {"signature_name": "generate", "instances": [
        dict(ROW, colour="red")]}, "key: colour of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
     "have named input: colour"),
    ("json_tensor.cc:AddValueToTensor:int32 from a double", {"signature_name": "generate", "inputs": gen_inputs(
        max_length=5.0)}, "JSON Value: 5.0 Type: Number is not of expected type: int32"),
    ("json_tensor.cc:AddValueToTensor:int32 range", {"signature_name": "generate", "inputs": gen_inputs(
        top_k=2 ** 31)}, "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
    ("json_tensor.cc:AddValueToTensor:int64 range", {"signature_name": "generate", "inputs": gen_inputs(
        seed=2 ** 63)}, "Type: Number is not of expected type: int64"),
    ("json_tensor.cc:AddValueToTensor:float from a string", {"signature_name": "generate", "inputs": gen_inputs(
        temperature="0.5")}, 'JSON Value: "0.5" Type: String is not of expected type: float'),
    ("json_tensor.cc:AddValueToTensor:bool is no number", {"signature_name": "generate", "inputs": gen_inputs(
        top_p=True)}, "JSON Value: true Type: True is not of expected type: float"),
    ("json_tensor.cc:JsonDecodeBase64Object:bad base64", {"instances": [{"b64": "!!"}]}, "Unable to base64 decode"),
    ("json_tensor.cc:FillTensorProto:object for a string", {"instances": [{"b64": "YQ==", "x": 1}]},
     "JSON object: does not have named input: b64"),
    ("json_tensor.cc:FillTensorProto:level", {"signature_name": "generate", "inputs": gen_inputs(
        prompt=[["a"], "b"])}, 'JSON Value: "b" found at incorrect level: 3 in the JSON DOM. Expected at level: 3'),
    ("json_tensor.cc:ParseJson:not an object", b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    ("rapidjson:kParseErrorObjectMissName", b'{"instances": ["a"],}', "JSON Parse error: Missing a name for object "
     "member. at offset: 20"),
    ("rapidjson:kParseErrorArrayMissCommaOrSquareBracket", b'{"instances": ["a" "b"]}',
     "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19"),
    ("rapidjson:kParseErrorObjectMissCommaOrCurlyBracket", b'{"instances": ["a"] "x": 1}',
     "JSON Parse error: Missing a comma or '}' after an object member. at offset: 20"),
    ("rapidjson:kParseErrorObjectMissColon", b'{"instances" ["a"]}',
     "JSON Parse error: Missing a colon after a name of object member. at offset: 13"),
    ("rapidjson:kParseErrorStringMissQuotationMark", b'{"instances": ["a', "JSON Parse error: Missing a closing "
     "quotation mark in string. at offset: 17"),
    ("rapidjson:kParseErrorStringEscapeInvalid", b'{"instances": ["\\x"]}', "JSON Parse error: Invalid escape "
     "character in string."),
    ("rapidjson:kParseErrorStringUnicodeSurrogateInvalid", b'{"instances": ["\\ud800"]}',
     "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"),
    ("rapidjson:kParseErrorDocumentEmpty", b" \n ", "JSON Parse error: The document is empty. at offset: 3"),
]


@pytest.mark.parametrize("body,text", [(b, t) for _, b, t in JSON_ERRORS], ids=[i for i, _, _ in JSON_ERRORS])
def test_json_errors(server, body, text):
    status, data = predict(server, body)
    assert status == 400 and text in json.loads(data)["error"], data


def float_text(value: np.float32) -> str:
    """json_tensor.cc WriteDecimal, written out again here: six digits if they read back the same, else nine."""
    if not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text = "%g" % value
    if np.float32(text) != value:
        text = "%.9g" % value
    return text if "." in text or "e" in text else text + ".0"


def test_floats_are_written_as_tf_serving_writes_them(server):
    # JSON:FromJsonSingleFloatTensorSixDigitPrecision on the reply's floats (log_prob, nats_per_char)
    from tfchargen.serving.json_tensor import float_text as ours

    for value, text in ((9000000, "9e+06"), (999999, "999999.0"), (0.5, "0.5"), (0.0003, "0.0003"),
                        (0.00003, "3e-05"), (555557.5, "555557.5"), (3, "3.0"), (float("nan"), "NaN"),
                        (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (1 / 3, "0.333333343")):
        assert ours(np.float32(value)) == float_text(np.float32(value)) == text
    status, data = predict(server, {"signature_name": "score", "inputs": {"text": ["ab", "Today the fox", "x" * 9]}})
    assert status == 200
    tokens = re.findall(rb'"(?:log_prob|nats_per_char)": \[([^\]]*)\]', data)
    assert len(tokens) == 2
    for token in b", ".join(tokens).decode().split(", "):
        assert token == float_text(np.float32(token)), token
    status, data = predict(server, {"signature_name": "score", "instances": ["ab"]})
    value = json.loads(data)["predictions"][0]["log_prob"]
    assert f'"log_prob": {float_text(np.float32(value))}'.encode() in data


def test_replies_in_row_and_columnar_form(server):
    # JSON:FromJsonSingleBytesTensor (outputs named *_bytes are {"b64": ...}, other strings as they
    # are), JSON:FromJsonMultipleNamedTensors (row: an object per row; columnar: an object of
    # lists), JSON:FromJsonSingleZeroBatchTensor/FromJsonMultipleZeroBatchTensors (empty lists)
    body = {"signature_name": "start", "instances": [ROW, dict(ROW, prompt="cd")]}
    status, data = predict(server, body)
    rows = json.loads(data)["predictions"]
    assert status == 200 and len(rows) == 2 and set(rows[0]) == set(contract.START_OUTPUTS)
    assert all(set(r[contract.STATE]) == {"b64"} and isinstance(r["text"], str) for r in rows)
    status, data = predict(server, {"signature_name": "start", "inputs": gen_inputs()})
    columns = json.loads(data)["outputs"]
    assert status == 200 and set(columns) == set(contract.START_OUTPUTS) and len(columns["num_chars"]) == 1
    assert set(columns[contract.STATE][0]) == {"b64"}
    status, data = predict(server, {"signature_name": "score", "inputs": {"text": []}})
    assert status == 200 and json.loads(data) == {"outputs": {k: [] for k in contract.SCORE_OUTPUTS}}, data


# ---------------------------------------------------------------------------- gRPC


def score_request(*texts, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", "chargen")
    request.model_spec.signature_name = "score"
    tensor = request.inputs["text"]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add().size = len(texts or ["ab"])
    tensor.string_val.extend(t.encode() for t in texts or ["ab"])
    return request


def test_predict_outputs_are_typed_fields(stub):
    # tensorflow_model_server_test.py VerifyPredictRequest (reads outputs['y'].float_val);
    # predict_util.cc PostProcessPredictionResult: Tensor::AsProtoField by default
    reply = stub.Predict(score_request("ab", "cde"), timeout=30)
    lp, n = reply.outputs["log_prob"], reply.outputs["num_chars"]
    assert lp.dtype == types_pb2.DT_FLOAT and len(lp.float_val) == 2 and lp.tensor_content == b""
    assert n.dtype == types_pb2.DT_INT32 and list(n.int_val) == [2, 3] and n.tensor_content == b""
    assert [d.size for d in lp.tensor_shape.dim] == [2]
    assert (reply.model_spec.name, reply.model_spec.version.value, reply.model_spec.signature_name) == (
        "chargen", 1, "score")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "chargen"
    request.model_spec.signature_name = "generate"
    for key, (dtype, field, value) in {"prompt": (types_pb2.DT_STRING, "string_val", b"ab"),
                                       "max_length": (types_pb2.DT_INT32, "int_val", 4),
                                       "temperature": (types_pb2.DT_FLOAT, "float_val", 0.0),
                                       "top_k": (types_pb2.DT_INT32, "int_val", 0),
                                       "top_p": (types_pb2.DT_FLOAT, "float_val", 1.0),
                                       "seed": (types_pb2.DT_INT64, "int64_val", 3)}.items():
        request.inputs[key].dtype = dtype
        request.inputs[key].tensor_shape.dim.add().size = 1
        getattr(request.inputs[key], field).append(value)
    out = stub.Predict(request, timeout=30).outputs
    assert list(out["num_chars"].int_val) == [4] and len(out["ended_with_eos"].bool_val) == 1
    assert out["text"].string_val[0].startswith(b"ab") and len(out["log_prob"].float_val) == 1


def test_predict_missing_or_empty_model_spec(stub):
    # predict_impl_test.cc:MissingOrEmptyModelSpec, EmptyInputList, InputTensorsDontMatchModelSpecInputs
    request = score_request()
    request.ClearField("model_spec")
    assert rpc_error(stub.Predict, request) == ("INVALID_ARGUMENT", "Missing ModelSpec")
    assert rpc_error(stub.Predict, score_request(name="")) == ("INVALID_ARGUMENT", "ModelSpec has no name specified.")
    assert rpc_error(stub.Predict, score_request(name="test"))[0] == "NOT_FOUND"
    request = score_request()
    request.inputs.clear()
    assert rpc_error(stub.Predict, request)[0] == "INVALID_ARGUMENT"
    request.inputs["key"].CopyFrom(score_request().inputs["text"])
    assert rpc_error(stub.Predict, request)[0] == "INVALID_ARGUMENT"
    request = score_request()
    request.model_spec.signature_name = "nope"  # predict_util.cc RunPredict
    assert rpc_error(stub.Predict, request) == ("FAILED_PRECONDITION", 'Serving signature key "nope" not found.')


def test_predict_input_tensors_have_wrong_type(stub):
    # predict_impl_test.cc:InputTensorsHaveWrongType: a string tensor for a float input
    request = score_request()
    request.model_spec.signature_name = "serving_default"
    request.inputs["prompt"].CopyFrom(request.inputs.pop("text"))
    request.inputs["prompt"].dtype = types_pb2.DT_FLOAT
    request.inputs["prompt"].ClearField("string_val")
    request.inputs["prompt"].float_val.append(2.0)
    code, message = rpc_error(stub.Predict, request)
    assert code == "INVALID_ARGUMENT" and "Expects arg[prompt] to be string but float" in message


def test_predict_output_filter(stub):
    # predict_impl_test.cc:OutputFiltersDontMatchModelSpecOutputs (predict_util.cc PreProcessPrediction)
    request = score_request()
    request.output_filter.append("output_filter")
    assert rpc_error(stub.Predict, request) == ("INVALID_ARGUMENT", "output tensor alias not found in signature: "
                                                "output_filter Outputs expected to be in the set "
                                                "{log_prob,nats_per_char,num_chars}.")
    request.ClearField("output_filter")
    request.output_filter.append("log_prob")
    assert list(stub.Predict(request, timeout=30).outputs) == ["log_prob"]
    request.output_filter.append("log_prob")
    assert rpc_error(stub.Predict, request) == ("INVALID_ARGUMENT", "duplicate output tensor alias: log_prob")


def metadata_request(*fields, name="chargen"):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = name
    return request


def test_get_model_metadata(stub):
    # get_model_metadata_impl_test.cc:EmptyOrInvalidMetadataFieldList, MissingOrEmptyModelSpec,
    # ReturnsSignaturesForValidModel
    assert rpc_error(stub.GetModelMetadata, metadata_request()) == (
        "INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
    assert rpc_error(stub.GetModelMetadata, metadata_request("some_stuff")) == (
        "INVALID_ARGUMENT", "Metadata field some_stuff is not supported")
    assert rpc_error(stub.GetModelMetadata, metadata_request("signature_def", "some_stuff"))[0] == "INVALID_ARGUMENT"
    no_spec = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    assert rpc_error(stub.GetModelMetadata, no_spec) == ("INVALID_ARGUMENT", "Missing ModelSpec")
    assert rpc_error(stub.GetModelMetadata, metadata_request("signature_def", name="")) == (
        "INVALID_ARGUMENT", "ModelSpec has no name specified.")
    assert rpc_error(stub.GetModelMetadata, metadata_request("signature_def", name="test"))[0] == "NOT_FOUND"
    reply = stub.GetModelMetadata(metadata_request("signature_def"), timeout=30)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(sigs)
    assert reply.model_spec.version.value == 1 and set(contract.SIGNATURES) <= set(sigs.signature_def)


def test_get_model_status(model_stub):
    # get_model_status_impl_test.cc:MissingOrEmptyModelSpecFailure, InvalidModelNameFailure,
    # InvalidModelVersionFailure, AllVersionsSuccess, SingleVersionSuccess
    request = get_model_status_pb2.GetModelStatusRequest()
    assert rpc_error(model_stub.GetModelStatus, request) == ("INVALID_ARGUMENT", "Missing ModelSpec")
    request.model_spec.name = "nonexistent"
    assert rpc_error(model_stub.GetModelStatus, request) == (
        "NOT_FOUND", "Could not find any versions of model nonexistent")
    request.model_spec.name = "chargen"
    request.model_spec.version.value = 99
    assert rpc_error(model_stub.GetModelStatus, request) == ("NOT_FOUND", "Could not find version 99 of model chargen")
    for version in (None, 1):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "chargen"
        if version:
            request.model_spec.version.value = version
        reply = model_stub.GetModelStatus(request, timeout=30)
        (status,) = reply.model_version_status
        assert (status.version, status.state, status.status.error_code) == (1, status.AVAILABLE, 0)


def test_classify_and_regress_rpcs(stub):
    # classification_service.cc/regression_service.cc; classifier.cc/regressor.cc signature checks
    classify = classification_pb2.ClassificationRequest()
    assert rpc_error(stub.Classify, classify) == ("INVALID_ARGUMENT", "Missing ModelSpec")
    classify.model_spec.name = "chargen"
    assert rpc_error(stub.Classify, classify) == ("INVALID_ARGUMENT", "Expected one or two output Tensors, found 5")
    classify.model_spec.signature_name = "nope"
    assert rpc_error(stub.Classify, classify) == ("INVALID_ARGUMENT", "No signature was found with the name: nope")
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "chargen"
    regress.model_spec.signature_name = "score"
    assert rpc_error(stub.Regress, regress) == ("INVALID_ARGUMENT", "Expected one output Tensor.")
    regress.model_spec.name = "test"
    assert rpc_error(stub.Regress, regress)[0] == "NOT_FOUND"


# ---------------------------------------------------------------------------- the read deadline, log lines


def trickle(server, head: bytes, tail: bytes, gap_s: float) -> tuple[bytes, float]:
    """Sends ``head`` at once, then ``tail`` one byte every ``gap_s`` until the server answers
    or closes; returns (what the server sent, seconds from the first byte to its answer)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT_S * 10)
    t0 = time.monotonic()
    sock.sendall(head)
    sock.settimeout(gap_s)
    reply = b""
    try:
        for i in range(len(tail) + 1):
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if i < len(tail):
                    sock.sendall(tail[i:i + 1])
                continue
            reply += chunk
            if not chunk:
                break
        sock.settimeout(READ_TIMEOUT_S * 5)
        while chunk:
            chunk = sock.recv(65536)
            reply += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return reply, time.monotonic() - t0


def test_a_request_trickled_byte_by_byte_is_cut_at_the_read_timeout(server):
    # transport.py: LIMITS["read_timeout_s"] bounds the whole request (headers and body): 408 and close
    body = json.dumps({"instances": ["ab"]}).encode()
    request = (b"POST /v1/models/chargen:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    for head, tail in ((request[:10], request[10:]), (request[:-len(body)], body)):  # headers, then body
        reply, seconds = trickle(server, head, tail, 0.4)
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert b"Connection: close" in reply and READ_TIMEOUT_S <= seconds < READ_TIMEOUT_S + 2.5, seconds
    reply, _ = trickle(server, request[:-5], request[-5:], 0.2)  # slow, but whole within the limit
    assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]


def test_log_lines_stay_whole_under_concurrency(server, monkeypatch):
    # One line per request: 64 concurrent requests, each its own line that parses, on a stderr
    # like the server's own (a line-buffered, write-through pipe to whatever collects the log)
    read_end, write_end = os.pipe()
    stderr = io.TextIOWrapper(io.FileIO(write_end, "w"), line_buffering=True, write_through=True)
    collected = []
    reader = threading.Thread(target=lambda: collected.append(b"".join(iter(lambda: os.read(read_end, 65536), b""))))
    reader.start()
    paths = [f"/v1/models/chargen{'x' * i}" for i in range(32)] + ["/v1/models/chargen"] * 32
    monkeypatch.setattr(sys, "stderr", stderr)
    threads = [threading.Thread(target=rest, args=(server, "GET", p)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)  # a reply is sent before its line is written
    monkeypatch.undo()
    stderr.close()
    reader.join()
    os.close(read_end)
    lines = collected[0].decode().splitlines()
    pattern = re.compile(r"^GET /v1/models/chargen(x*) (200|404) rows=0 [\d.]+ms$")
    assert len(lines) == len(paths) and all(pattern.match(line) for line in lines), lines
    assert sorted(len(pattern.match(line).group(1)) for line in lines) == sorted(len(p) - 18 for p in paths)
