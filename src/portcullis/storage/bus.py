"""Notices between replicas: "something changed in a shared store, refresh now".

A notice carries no state, only a hint: each receiver re-reads its own store (kill switches,
revocations, the active policy version) when one arrives, so a lost, duplicated, reordered or forged
notice costs at most one extra refresh and never changes what a replica enforces. Every receiver
keeps polling its store as the backstop, so a notice lost while a subscriber was disconnected is
applied by the next poll (kill switches: 0.5 s; revocations: 1 s).

- :class:`NoticeBus` — the protocol: ``publish(topic, payload)`` (never raises: a change that was made
  must not look failed because its notice could not be sent), ``subscribe(topic, callback)`` and
  ``run()`` (delivers until cancelled).
- :class:`LocalNoticeBus` — the embedded default: in-process delivery (one process is the whole cluster).
- :class:`RedisNoticeBus` — Redis pub/sub, one channel per topic under ``key_prefix``
  (``<prefix>notice:<topic>``); reconnects with capped exponential backoff and jitter, and after each
  reconnect calls every callback once with :data:`RESYNC` (notices may have been missed meanwhile).

Bounds: topics are a closed set (:data:`TOPICS`); a payload is at most :data:`MAX_PAYLOAD_CHARS`
characters (longer ones are not sent, and received ones are dropped); a callback that raises is logged
and the bus carries on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger("portcullis.storage.bus")

TOPICS = frozenset({"kill_switches", "revocations", "policy"})
MAX_PAYLOAD_CHARS = 1024
RESYNC = ""  # the payload a callback gets after a reconnect: refresh, whatever may have changed
Callback = Callable[[str], Awaitable[None] | None]


class NoticeBus(Protocol):
    async def publish(self, topic: str, payload: str) -> bool:
        """Send a notice to every replica (this one included); False if it could not be sent. Never raises."""
        ...

    def subscribe(self, topic: str, callback: Callback) -> None:
        """Call ``callback(payload)`` for every notice on ``topic`` (from :meth:`run`'s task)."""
        ...

    async def run(self) -> None:
        """Deliver notices until cancelled."""
        ...


def _check_topic(topic: str) -> None:
    if topic not in TOPICS:
        raise ValueError(f"topic must be one of {', '.join(sorted(TOPICS))}")


class _Subscribers:
    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}

    def subscribe(self, topic: str, callback: Callback) -> None:
        _check_topic(topic)
        self.callbacks.setdefault(topic, []).append(callback)

    async def deliver(self, topic: str, payload: str) -> None:
        for callback in list(self.callbacks.get(topic, ())):
            try:
                result = callback(payload)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # one broken receiver must not stop the others or the bus
                log.warning("notice callback failed", extra={"fields": {"topic": topic,
                                                                         "error": type(exc).__name__}})


class LocalNoticeBus(_Subscribers):
    """In-process delivery (the embedded default): ``publish`` delivers before it returns."""

    async def publish(self, topic: str, payload: str) -> bool:
        if topic not in TOPICS or not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_CHARS:
            log.warning("notice not sent: unknown topic or payload too long")
            return False
        await self.deliver(topic, payload)
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()  # nothing to pump: publish delivers


class RedisNoticeBus(_Subscribers):
    """Redis pub/sub under ``key_prefix`` (module docstring). ``client_name`` names its connections."""

    def __init__(self, url: str, *, key_prefix: str, connect_timeout_s: float = 2.0, op_timeout_s: float = 0.5,
                 backoff_s: tuple[float, float] = (0.05, 5.0)) -> None:
        super().__init__()
        self._prefix: str = key_prefix
        self._timeout = op_timeout_s + connect_timeout_s
        self._backoff = backoff_s
        self.client_name = f"portcullis-bus-{secrets.token_hex(6)}"
        self.connected = asyncio.Event()  # set while subscribed (tests and /readyz may look)
        self.reconnects = 0
        # Publishing connections time out like state-store commands; the subscriber's socket waits forever
        # (pub/sub is idle most of the time) and is watched by a ping instead.
        self._client = aioredis.Redis.from_url(url, socket_timeout=op_timeout_s,
                                               socket_connect_timeout=connect_timeout_s,
                                               retry=Retry(NoBackoff(), 0), client_name=self.client_name)

    def channel(self, topic: str) -> str:
        return f"{self._prefix}notice:{topic}"

    async def publish(self, topic: str, payload: str) -> bool:
        if topic not in TOPICS or not isinstance(payload, str) or len(payload) > MAX_PAYLOAD_CHARS:
            log.warning("notice not sent: unknown topic or payload too long")
            return False
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(self.channel(topic), payload)
        except Exception as exc:  # never into the caller: the change is made; polling carries it
            log.warning("notice not sent; other replicas apply it at their next poll",
                        extra={"fields": {"topic": topic, "error": type(exc).__name__}})
            return False
        return True

    async def run(self) -> None:
        delay = self._backoff[0]
        first = True
        while True:
            try:
                await self._listen(resync=not first)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notice bus disconnected; reconnecting", extra={"fields": {"error": type(exc).__name__}})
            if self.connected.is_set():  # it had been up: start the backoff again from its base
                delay = self._backoff[0]
            self.connected.clear()
            first = False
            self.reconnects += 1
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 -- jitter, not a secret
            delay = min(delay * 2, self._backoff[1])

    async def _listen(self, *, resync: bool) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.subscribe(*(self.channel(t) for t in sorted(TOPICS)))
            self.connected.set()
            if resync:
                for topic in sorted(self.callbacks):
                    await self.deliver(topic, RESYNC)
            by_channel = {self.channel(t).encode(): t for t in TOPICS}
            idle = 0.0
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    idle += 1.0
                    if idle >= 5.0:  # a silent dead connection shows up within ~5 s
                        async with asyncio.timeout(self._timeout):
                            await pubsub.ping()
                        idle = 0.0
                    continue
                idle = 0.0
                if message.get("type") != "message":
                    continue
                name = by_channel.get(message.get("channel", b""))
                data = message.get("data", b"")
                if name is None or not isinstance(data, bytes) or len(data) > MAX_PAYLOAD_CHARS * 4:
                    continue
                payload = data.decode("utf-8", "replace")
                if len(payload) <= MAX_PAYLOAD_CHARS:
                    await self.deliver(name, payload)
        finally:
            await pubsub.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
