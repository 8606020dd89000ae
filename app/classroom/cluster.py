"""The processes of one deployment sharing their live class parts through Redis.

Used only when ``SOCKETIO_MESSAGE_QUEUE`` is a ``redis://`` (or ``rediss://``)
URL, i.e. when several processes serve one site. Per running class session:

- ``moodlens:class:<session id>``: a hash, one field per process (its id),
  whose value is the process's latest part as JSON (:meth:`ClassAggregate.snapshot`).
  Each process rewrites its field on every push tick. A part older than
  ``part_ttl`` (a few push intervals) belongs to a dead process: readers ignore
  and delete it; the whole hash expires when no process writes it any more.
- ``moodlens:class:<session id>:leader``: the id of the one process that
  pushes the merged summary to the teacher room. Taken with ``SET NX`` and
  renewed by its holder on every push tick (one small Lua script, so that the
  check and the renewal are one step); when the holder stops renewing (it
  died, or lost Redis), another process takes it over after ``leader_ttl``.
- ``moodlens:class:<session id>:ended``: set by the process that ended (or
  deleted) the session, so that the others end their part of it too.
- ``moodlens:class:<session id>:left``: a set of the ids of the students who
  left the session through a process ("Leave this class" posted without the
  page's script), so that the others stop their streams too.

One pipelined round trip per push tick carries all of it, for every session
of the process. Nothing here runs on the frame path. Redis unreachable: the
calls fail fast (short timeouts, no retries), :meth:`ClusterLink.exchange`
returns None, the caller falls back to this process's own summary; the
outage is logged when it starts, once a minute while it lasts and when it ends
(:class:`RedisOutage`), and the link tries again every few seconds.

The Socket.IO message queue on the same Redis (:class:`MessageQueue`, built
for ``socketio.init_app`` by :func:`queue_options`) is bounded the same way:
python-socketio's own Redis manager waits on a hung Redis up to redis-py's
default socket timeout (5 s) twice per emit, on the emitting thread.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from socketio import RedisManager

log = logging.getLogger("moodlens.classroom.cluster")
queue_log = logging.getLogger("moodlens.socketio.queue")

SCHEMES = ("redis://", "rediss://")
PREFIX = "moodlens:class:"
ENDED_TTL_S = 86400
REDIS_TIMEOUT_S = 0.5       # every wait on Redis (connecting, each reply): it answers in a millisecond when up
REDIS_RETRY_AFTER_S = 3.0   # Redis found unreachable: not tried again for this long (the callers go on without it)
OUTAGE_REMINDER_S = 60.0    # an outage is logged when it starts, then once a minute at most, and when it ends
QUEUE_CHANNEL = "flask-socketio"  # Flask-SocketIO's default channel: processes of other versions still interoperate
# Keep the leadership if we hold it, take it if nobody does; 1: we lead (the key's TTL is (re)set), 0: not.
LEADER_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


def part_key(session_id: int) -> str:
    return f"{PREFIX}{session_id}"


def leader_key(session_id: int) -> str:
    return f"{PREFIX}{session_id}:leader"


def ended_key(session_id: int) -> str:
    return f"{PREFIX}{session_id}:ended"


def left_key(session_id: int) -> str:
    return f"{PREFIX}{session_id}:left"


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redis_options(timeout: float = REDIS_TIMEOUT_S) -> dict:
    """redis-py client options under which a Redis that hangs (accepts, never answers) costs ``timeout`` s
    per call at most: connect and reply timeouts, no retries, no health-check round trips."""
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout, "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0}


class RedisOutage:
    """The outage bookkeeping of one Redis user (:class:`ClusterLink`, :class:`MessageQueue`), thread-safe.

    A failed call starts an outage: then calls are skipped (and counted as
    ``missed``) until a retry is due, ``retry_after`` s later; the call that
    retries is let through alone, the others keep skipping until it is over. It
    is logged when it starts, once a minute at most while it lasts (how long,
    how many calls went without Redis) and when it ends, never call by call.
    ``who`` names the user in the log lines, ``meanwhile`` what happens without
    Redis, ``missed`` what the count counts.
    """

    def __init__(self, logger: logging.Logger, who: str, url: str, retry_after: float, meanwhile: str,
                 missed: str):
        self.log, self.who, self.url = logger, who, redacted(url)
        self.retry_after, self.meanwhile, self.missed_what = retry_after, meanwhile, missed
        self.down_since: float | None = None  # time.monotonic() of the first failure of the current outage
        self.missed = 0                       # calls that went without Redis during it
        self._next_try = self._next_reminder = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """False while Redis is known to be away (until the next retry is due)."""
        return self.down_since is None or time.monotonic() >= self._next_try

    def skip(self) -> bool:
        """True: go without Redis (it is away, no retry due; counted). False: call it (this call may be the retry)."""
        if self.down_since is None:  # the usual case: no lock taken
            return False
        now = time.monotonic()
        with self._lock:
            if self.down_since is None:
                return False
            if now >= self._next_try:
                self._next_try = now + self.retry_after  # this call retries; the others skip meanwhile
                return False
            self.missed += 1
            reminder = self._reminder(now)
        self._log_still_down(reminder)
        return True

    def failed(self, exc: Exception) -> None:
        """A call failed (it counts as missed): the outage starts, or goes on; next retry ``retry_after`` s on."""
        now = time.monotonic()
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since, self.missed = now, 0
                self._next_reminder = now + OUTAGE_REMINDER_S
            self.missed += 1
            self._next_try = now + self.retry_after
            reminder = None if first else self._reminder(now)
        if first:
            self.log.warning("%s: Redis at %s unreachable (%s): %s until it is back (tried again every %.0f s)",
                             self.who, self.url, exc, self.meanwhile, self.retry_after)
        self._log_still_down(reminder)

    def ok(self) -> None:
        """A call succeeded: an outage, if any, is over."""
        if self.down_since is None:
            return
        with self._lock:
            since, missed = self.down_since, self.missed
            self.down_since, self.missed = None, 0
        if since is not None:
            self.log.warning("%s: Redis at %s reachable again after %.0f s (%d %s)", self.who, self.url,
                             time.monotonic() - since, missed, self.missed_what)

    def run(self, client: redis.Redis, build, transaction: bool = False) -> list | None:
        """``build(pipeline)`` sent through ``client`` in one round trip (a MULTI transaction if ``transaction``):
        its replies, or None when Redis is away or failed (counted and logged as this outage)."""
        if self.skip():
            return None
        try:
            pipe = client.pipeline(transaction=transaction)
            build(pipe)
            replies = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.failed(exc)
            return None
        self.ok()
        return replies

    def _reminder(self, now: float) -> tuple[float, int] | None:
        """(seconds down, calls missed) when the outage is due to be logged again; call with the lock held."""
        if self.down_since is None or now < self._next_reminder:
            return None
        self._next_reminder = now + OUTAGE_REMINDER_S
        return now - self.down_since, self.missed

    def _log_still_down(self, reminder: tuple[float, int] | None) -> None:
        if reminder is not None:
            self.log.warning("%s: Redis at %s still unreachable after %.0f s (%d %s)", self.who, self.url,
                             reminder[0], reminder[1], self.missed_what)


@dataclass
class Exchange:
    """What one round trip brought back for one session."""

    leader: bool                                          # this process pushes the session's summary
    others: dict[str, dict] = field(default_factory=dict)  # process id -> its latest live part
    ended: str | None = None                              # the session was ended elsewhere (the reason)
    left: frozenset[int] = frozenset()                    # students who left it through any process


class ClusterLink:
    """This process's side of the shared parts, leadership and end markers."""

    def __init__(self, url: str, push_every: float, timeout: float = REDIS_TIMEOUT_S,
                 retry_after: float = REDIS_RETRY_AFTER_S, process_id: str | None = None):
        self.url = url
        self.process_id = process_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.part_ttl = max(4.0 * push_every, 5.0)     # a part older than this: its process is gone
        self.leader_ttl = max(3.0 * push_every, 3.0)   # a leader that stops renewing is replaced after this
        self.client = redis.Redis.from_url(url, **redis_options(timeout))
        self.outage = RedisOutage(log, "classroom", url, retry_after,
                                  "each process pushes the live summary of its own students only",
                                  "exchanges of live class parts without it")
        self.exchanges = 0

    @classmethod
    def from_config(cls, config) -> "ClusterLink | None":
        """A link when ``SOCKETIO_MESSAGE_QUEUE`` is a Redis URL, else None (one process: nothing to merge)."""
        url = config.get("SOCKETIO_MESSAGE_QUEUE")
        if not url:
            return None
        if not str(url).startswith(SCHEMES):
            log.warning("classroom: SOCKETIO_MESSAGE_QUEUE is not a redis:// URL; live class summaries are not "
                        "merged across processes (each process reports its own students)")
            return None
        return cls(str(url), float(config["CLASSROOM_PUSH_SECONDS"]))

    # -- health -----------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False while Redis is known to be away (until the next retry is due)."""
        return self.outage.available

    @property
    def down_since(self) -> float | None:
        """time.monotonic() of the first failure of the current outage; None: Redis answers."""
        return self.outage.down_since

    # -- parts ------------------------------------------------------------------------------------
    def exchange(self, parts: dict[int, dict], now: float) -> dict[int, Exchange] | None:
        """Publish ``parts`` (session id -> this process's part), claim or renew each session's leadership,
        and read the other processes' parts and the end markers: one round trip. None: Redis unreachable."""
        if not parts:
            return None
        ttl_ms = int(self.leader_ttl * 1000)

        def build(pipe) -> None:
            for session_id, part in parts.items():
                key = part_key(session_id)
                pipe.hset(key, self.process_id, json.dumps(part, separators=(",", ":")))
                pipe.pexpire(key, int(2 * self.part_ttl * 1000))
                pipe.eval(LEADER_SCRIPT, 1, leader_key(session_id), self.process_id, ttl_ms)
                pipe.hgetall(key)
                pipe.get(ended_key(session_id))
                pipe.smembers(left_key(session_id))

        replies = self.outage.run(self.client, build)
        if replies is None:
            return None
        self.exchanges += 1
        out: dict[int, Exchange] = {}
        expired: list[tuple[int, bytes]] = []
        for i, session_id in enumerate(parts):
            _, _, leader, fields, ended, left = replies[6 * i:6 * i + 6]
            out[session_id] = Exchange(bool(leader), self._others(session_id, fields, now, expired),
                                       ended.decode() if ended else None, _student_ids(left))
        self._drop(expired)
        return out

    def read(self, session_id: int, now: float) -> Exchange | None:
        """The other processes' parts of one session (no publishing, no leadership); None: Redis unreachable."""
        replies = self.outage.run(self.client, lambda pipe: (pipe.hgetall(part_key(session_id)),
                                                             pipe.get(ended_key(session_id))))
        if replies is None:
            return None
        fields, ended = replies
        expired: list[tuple[int, bytes]] = []
        got = Exchange(False, self._others(session_id, fields, now, expired), ended.decode() if ended else None)
        self._drop(expired)
        return got

    def _others(self, session_id: int, fields: dict, now: float, expired: list) -> dict[str, dict]:
        others: dict[str, dict] = {}
        for name, value in (fields or {}).items():
            process = name.decode() if isinstance(name, bytes) else str(name)
            if process == self.process_id:
                continue
            try:
                part = json.loads(value)
                fresh = now - float(part["ts"]) <= self.part_ttl and part.get("session") == session_id
            except (ValueError, TypeError, KeyError):
                part, fresh = None, False
            if not fresh:
                expired.append((session_id, name))
                continue
            part["process"] = process
            others[process] = part
        return others

    def _drop(self, expired: list[tuple[int, bytes]]) -> None:
        """Delete the parts of processes that stopped publishing (best effort: the readers ignore them anyway)."""
        if not expired:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for session_id, name in expired:
                pipe.hdel(part_key(session_id), name)
            pipe.execute()
        except (redis.RedisError, OSError):
            pass

    def mark_left(self, session_id: int, student_id: int) -> bool:
        """Tell the other processes that a student left the session: they stop that student's streams."""
        key = left_key(session_id)
        replies = self.outage.run(self.client, lambda pipe: (pipe.sadd(key, student_id),
                                                             pipe.expire(key, ENDED_TTL_S)))
        if replies is None:
            log.warning("classroom: Redis away: the other processes are not told that a student left session %s",
                        session_id)
            return False
        return True

    def mark_ended(self, session_id: int, reason: str) -> bool:
        """Tell the other processes that the session ended (``reason``: "ended" or "deleted"); drop its parts."""
        replies = self.outage.run(self.client, lambda pipe: (pipe.set(ended_key(session_id), reason, ex=ENDED_TTL_S),
                                                             pipe.delete(part_key(session_id), leader_key(session_id),
                                                                         left_key(session_id))))
        if replies is None:
            log.warning("classroom: Redis away: the other processes are not told that session %s ended", session_id)
            return False
        return True

    def close(self) -> None:
        self.client.close()


def _student_ids(members) -> frozenset[int]:
    """The student ids of a ``left`` set's members (anything else in it is ignored)."""
    ids = set()
    for member in members or ():
        try:
            ids.add(int(member))
        except (TypeError, ValueError):
            continue
    return frozenset(ids)


class MessageQueue(RedisManager):
    """python-socketio's Redis message queue with every publish bounded, for ``SOCKETIO_MESSAGE_QUEUE``.

    An emit is delivered to this process's clients first, then published for
    the other processes. python-socketio publishes on the emitting thread, with
    redis-py's default 5 s socket timeout and one retry: a Redis that hangs held
    every emit (a dashboard push, a session's end) for about 10 s. Here a
    publish waits ``timeout`` s at most, once: when it fails, Redis counts as
    away and publishes are skipped (this process's clients still get their
    events) until one tries again ``retry_after`` s later. The outage is logged
    when it starts, once a minute while it lasts and when it ends, not per event.
    """

    def __init__(self, url: str, channel: str = QUEUE_CHANNEL, timeout: float = REDIS_TIMEOUT_S,
                 retry_after: float = REDIS_RETRY_AFTER_S):
        super().__init__(url, channel=channel, redis_options=redis_options(timeout))
        self.outage = RedisOutage(queue_log, "Socket.IO message queue", url, retry_after,
                                  "events reach the clients of this process only",
                                  "events not sent to the other processes")

    def _publish(self, data):
        """Publish ``data`` for the other processes: one attempt, ``timeout`` s at most; None when not sent."""
        message = self.json.dumps(data)
        if self.outage.skip():
            return None
        try:
            if not self.connected:
                self._redis_connect()
            result = self.redis.publish(self.channel, message)
        except (redis.RedisError, OSError) as exc:
            self.outage.failed(exc)
            return None
        self.outage.ok()
        return result


def queue_options(url: str | None) -> dict:
    """The message queue options of Flask-SocketIO's ``init_app`` for ``SOCKETIO_MESSAGE_QUEUE`` ``url``.

    A Redis URL gets a :class:`MessageQueue` (every publish bounded); other
    brokers the manager Flask-SocketIO picks. None: the in-process manager,
    named explicitly, since the one ``SocketIO`` object keeps the options of
    earlier ``init_app`` calls (another app's queue, in tests).
    """
    if not url:
        return {"message_queue": None, "client_manager": None}
    if str(url).startswith(SCHEMES):
        return {"message_queue": url, "client_manager": MessageQueue(str(url))}
    return {"message_queue": url}
