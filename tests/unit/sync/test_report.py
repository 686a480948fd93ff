"""``sync status``'s live view of Triton: every server counts, not the first one."""

from __future__ import annotations

from exporter.sync.report import ready_everywhere


def test_loaded_means_ready_on_every_server_that_answers() -> None:
    servers = {
        "a:8000": {"up": True, "ready": {"churn": ["3", "10"]}},
        "b:8000": {"up": True, "ready": {"churn": ["10"]}},  # still loading 3
        "c:8000": {"up": False, "last_pass": {}},
    }
    assert ready_everywhere(servers, "churn") == {"triton_ready_versions": ["10"]}
    assert ready_everywhere(servers, "other") == {"triton_ready_versions": []}


def test_a_server_that_cannot_say_or_none_answering_is_an_error_naming_them() -> None:
    failing = {"a:8000": {"up": True, "error": "model index failed"}, "b:8000": {"up": True, "ready": {}}}
    assert ready_everywhere(failing, "churn") == {"triton_error": "a:8000: model index failed"}
    down = {"a:8000": {"up": False}, "b:8000": {"up": False}}
    assert ready_everywhere(down, "churn") == {"triton_error": "no Triton server answers (a:8000, b:8000)"}
