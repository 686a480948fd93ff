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
