"""The tiny app's one service: a member joins a team, and the join is announced on Valkey pub/sub
(channel `<prefix>tinyapp.members`) only after the Session commits, as a real app would."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

from tinyapp.models import Member

PENDING_KEY = "tinyapp.pending"
ANNOUNCER_KEY = "tinyapp.announcer"
CHANNEL = "members"


class Publisher(Protocol):
    """What announcing needs from a Redis client (redis.Redis fits)."""

    def publish(self, channel: str, message: str) -> Any:
        """Publish message on channel."""
        ...


def bind(session: Session, client: Publisher, *, prefix: str = "") -> None:
    """Announce the session's joins on `<prefix>tinyapp.members` once it commits."""
    session.info[ANNOUNCER_KEY] = (client, f"{prefix}tinyapp.{CHANNEL}")


def join(session: Session, *, team_id: int, name: str, email: str) -> Member:
    """Add a member to a team and commit; the join is announced after the commit."""
    member = Member(team_id=team_id, name=name, email=email)
    session.add(member)
    session.flush()
    session.info.setdefault(PENDING_KEY, []).append({"id": member.id, "email": email})
    session.commit()
    return member


@event.listens_for(Session, "after_commit")
def _announce_after_commit(session: Session) -> None:
    joined = session.info.pop(PENDING_KEY, [])
    announcer = session.info.get(ANNOUNCER_KEY)
    if announcer is None:
        return
    client, channel = announcer
    for data in joined:
        client.publish(channel, json.dumps({"type": "member.joined", "data": data}))


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: object) -> None:
    session.info.pop(PENDING_KEY, None)  # a join that was rolled back never happened
