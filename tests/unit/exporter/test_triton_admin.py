"""The admin client maps tritonclient's errors where they enter and reads the input name from the config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from exporter.errors import ModelLoadError, TritonControlError, TritonNotRunningError
from exporter.triton_admin import TritonAdminClient, TritonAdminGroup


class FakeHttpClient:
    """The tritonclient.http calls the admin client makes, answered from memory."""

    def __init__(self, *, input_name: str = "features", fail: BaseException | None = None) -> None:
        self.input_name = input_name
        self.fail = fail
        self.sent: list[str] = []

    def _maybe_fail(self) -> None:
        if self.fail is not None:
            raise self.fail

    def is_server_live(self) -> bool:
        self._maybe_fail()
        return True

    def load_model(self, model: str) -> None:
        self._maybe_fail()

    def get_model_repository_index(self) -> list[dict[str, Any]]:
        self._maybe_fail()
        return [{"name": "m", "version": "1", "state": "READY"}]

    def get_model_config(self, model: str) -> dict[str, Any]:
        self._maybe_fail()
        return {"name": model, "input": [{"name": self.input_name, "data_type": "TYPE_FP32", "dims": [2]}]}

    def infer(self, model: str, inputs: list[Any], **kw: Any) -> Any:
        self._maybe_fail()
        self.sent = [i.name() for i in inputs]
        n = inputs[0].shape()[0]

        class Result:
            def as_numpy(self, name: str) -> np.ndarray:
                return np.full((n, 1), 0.5, np.float32)

        return Result()

    def close(self) -> None:
        pass


def test_the_input_tensor_name_comes_from_the_served_config() -> None:
    fake = FakeHttpClient(input_name="input__0")
    admin = TritonAdminClient("http://127.0.0.1:1", client=fake)
    out = admin.infer("m", 1, np.zeros((3, 2), np.float32), ["prediction"])
    assert fake.sent == ["input__0"] and out["prediction"].shape == (3, 1)


def test_a_refused_load_is_a_model_load_error_naming_the_model() -> None:
    fake = FakeHttpClient(fail=InferenceServerException("failed to load 'm': bad config"))
    with pytest.raises(ModelLoadError, match=r"load of 'm'.*bad config"):
        TritonAdminClient("127.0.0.1:1", client=fake).load("m")


def test_nothing_listening_says_how_to_start_triton() -> None:
    fake = FakeHttpClient(fail=ConnectionRefusedError(111, "Connection refused"))
    admin = TritonAdminClient("127.0.0.1:1", client=fake)
    with pytest.raises(TritonNotRunningError, match="treeserve triton start"):
        admin.repository_index()
    assert admin.live() is False


def test_other_refusals_are_triton_control_errors() -> None:
    fake = FakeHttpClient(fail=InferenceServerException("unknown model"))
    with pytest.raises(TritonControlError, match="inference on 'm' v1 failed: unknown model"):
        TritonAdminClient("127.0.0.1:1", client=fake).infer(
            "m", 1, np.zeros((1, 2)), ["prediction"], input_name="x"
        )


class FakeAdmin:
    """An admin client of one server: its READY versions, or unreachable."""

    def __init__(self, ready: set[str]) -> None:
        self.ready = ready
        self.up = True
        self.closed = False

    def ready_versions(self, model: str) -> set[str]:
        if not self.up:
            raise TritonNotRunningError("Triton at fake is unreachable (test)")
        return set(self.ready)

    def close(self) -> None:
        self.closed = True


def test_a_group_reports_what_every_answering_server_has_ready() -> None:
    """What the pipeline waits on: READY on each server, a down one left out, none up is an error."""
    servers = {"a:8000": FakeAdmin({"1", "2"}), "b:8000": FakeAdmin({"1"})}
    listed = ["a:8000", "b:8000"]
    group = TritonAdminGroup(lambda: listed, client_factory=servers.__getitem__)
    assert group.ready_versions("m") == {"1"}, "version 2 is not loaded on b yet"
    servers["b:8000"].ready = {"1", "2"}
    assert group.ready_versions("m") == {"1", "2"}
    servers["a:8000"].up = False
    assert group.ready_versions("m") == {"1", "2"}
    servers["b:8000"].up = False
    with pytest.raises(TritonNotRunningError, match=r"a:8000.*b:8000"):
        group.ready_versions("m")
    listed.remove("a:8000")  # the DNS name no longer lists it: its client is released
    servers["b:8000"].up = True
    assert group.ready_versions("m") == {"1", "2"} and servers["a:8000"].closed
    listed.clear()
    with pytest.raises(TritonNotRunningError, match="no Triton server is configured"):
        group.ready_versions("m")


class FakeGrpcClient:
    """The tritonclient.grpc calls the admin client makes: JSON answers in protobuf's shapes."""

    def __init__(self, *, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, Any]] = []

    def _answer(self, call: str, value: Any, **kw: Any) -> Any:
        self.calls.append((call, kw.get("client_timeout")))
        if self.fail is not None:
            raise self.fail
        return value

    def is_server_live(self, **kw: Any) -> bool:
        return bool(self._answer("live", True, **kw))

    def get_model_repository_index(self, **kw: Any) -> dict[str, Any]:
        models = [
            {"name": "m", "version": "1", "state": "READY"},
            {"name": "m", "version": "2", "state": "UNAVAILABLE"},
        ]
        return self._answer("index", {"models": models}, **kw)

    def get_model_config(self, model: str, **kw: Any) -> dict[str, Any]:
        return self._answer(
            "config", {"config": {"name": model, "input": [{"name": "input__0", "dims": ["2"]}]}}, **kw
        )

    def load_model(self, model: str, config: str | None = None, **kw: Any) -> None:
        return self._answer(f"load {model} {config}", None, **kw)

    def close(self) -> None:
        pass


def test_a_grpc_url_administers_over_grpc_in_the_http_shapes() -> None:
    """``grpc://`` picks tritonclient.grpc; the index and config read as over HTTP, every call bounded."""
    fake = FakeGrpcClient()
    admin = TritonAdminClient("grpc://127.0.0.1:8001", timeout_s=7.0, client=fake)
    assert (admin.transport, admin.url) == ("grpc", "grpc://127.0.0.1:8001")
    assert admin.ready_versions("m") == {"1"}
    assert admin.input_name("m") == "input__0"
    admin.load_override("m", '{"version_policy": {"specific": {"versions": [1]}}}')
    assert fake.calls[-1][0].startswith("load m {")
    assert {timeout for _call, timeout in fake.calls} == {7.0}, "a gRPC call without a deadline can hang"
    assert TritonAdminClient("http://h:8000", client=FakeHttpClient()).transport == "http"
    assert TritonAdminClient("h:8000", client=FakeHttpClient()).url == "h:8000"


def test_grpc_unavailable_is_not_running_and_a_refused_load_names_the_model() -> None:
    down = FakeGrpcClient(fail=InferenceServerException("connect failed", status="StatusCode.UNAVAILABLE"))
    admin = TritonAdminClient("grpc://127.0.0.1:1", client=down)
    with pytest.raises(
        TritonNotRunningError, match=r"grpc://127.0.0.1:1 is unreachable.*treeserve triton start"
    ):
        admin.repository_index()
    assert admin.live() is False
    refused = FakeGrpcClient(fail=InferenceServerException("bad config", status="StatusCode.INTERNAL"))
    with pytest.raises(ModelLoadError, match=r"load of 'm'.*bad config"):
        TritonAdminClient("grpc://127.0.0.1:1", client=refused).load("m")
