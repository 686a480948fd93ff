"""Admin endpoints keep ``grpc://`` (the sync loads over gRPC) and drop ``http://``."""

from __future__ import annotations

import pytest

from exporter.settings import SyncSettings
from treeserve.endpoints import parse_admin_endpoint, resolve_admin


def test_grpc_scheme_is_kept_http_and_none_mean_http() -> None:
    assert parse_admin_endpoint("grpc://triton:8001") == "grpc://triton:8001"
    assert parse_admin_endpoint("GRPC://triton:8001/") == "grpc://triton:8001"
    assert parse_admin_endpoint("http://triton:8000/") == "triton:8000"
    assert parse_admin_endpoint("triton:8000") == "triton:8000"
    with pytest.raises(ValueError, match="the scheme must be grpc:// or http://"):
        parse_admin_endpoint("tcp://triton:8001")
    with pytest.raises(ValueError, match="is not host:port"):
        parse_admin_endpoint("grpc://triton")


def test_sync_settings_accept_both_transports_per_server() -> None:
    s = SyncSettings(triton_urls=["grpc://a:8001", "b:8000", "grpc://a:8001"], triton_dns="grpc://t:8001")
    assert s.triton_urls == ["grpc://a:8001", "b:8000"]
    assert s.triton_dns == "grpc://t:8001"


def test_a_resolved_name_keeps_its_scheme() -> None:
    assert resolve_admin("grpc://127.0.0.1:8001") == ["grpc://127.0.0.1:8001"]
    assert resolve_admin("127.0.0.1:8000") == ["127.0.0.1:8000"]
    assert resolve_admin("grpc://no-such-host.invalid:8001") == []
