"""The admin server's bearer token (server.auth_token): wanted on every path but the probes;
read from the value, env:NAME or file:PATH; never shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from service.config import ConfigError, parse_config
from service.daemon import Daemon

TOKEN = "0123456789abcdef-token"


async def test_the_token_guards_all_but_the_probes() -> None:
    config = parse_config({"server": {"listen": "127.0.0.1:0", "auth_token": TOKEN}})
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(handle_signals=False))
    try:
        async with asyncio.timeout(10):
            while daemon._runner is None or not daemon._runner.addresses:
                await asyncio.sleep(0.01)
        host, port = daemon.address
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:

            async def status(path: str, token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                async with http.get(base + path, headers=headers) as resp:
                    return resp.status

            for path in ("/metrics", "/mappings"):
                assert await status(path, None) == 401
                assert await status(path, TOKEN + "x") == 401
                assert await status(path, TOKEN) == 200
            assert await status("/healthz", None) == 200
            assert await status("/readyz", None) == 200
    finally:
        daemon.request_stop()
        await task


def test_token_sources_and_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESMD_TEST_TOKEN", TOKEN)
    assert parse_config({"server": {"auth_token": "env:ESMD_TEST_TOKEN"}}).server.token == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = parse_config({"server": {"auth_token": f"file:{tmp_path / 'token'}"}}).server
    assert (
        server.token == TOKEN
        and TOKEN not in repr(server)
        and TOKEN not in str(server.model_dump())
    )
    with pytest.raises(ConfigError, match="16 characters"):
        parse_config({"server": {"auth_token": "short"}})
    with pytest.raises(ConfigError, match="ESMD_TEST_UNSET is not set"):
        parse_config({"server": {"auth_token": "env:ESMD_TEST_UNSET"}})
