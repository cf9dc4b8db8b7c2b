"""Rule smoke check against real PostgreSQL + Valkey: every business rule once, in a scratch schema.

Run: ``python -m opsdesk.smoke`` with DATABASE_URL and REDIS_URL set. It creates the schema
``opsdesk_smoke_<pid>``, exercises each rule (one positive and one negative case), checks that
events go out after commit and never after rollback, and drops the schema again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from opsdesk import db, events
from opsdesk.db import utcnow
from opsdesk.domains.canvas import service as canvas
from opsdesk.domains.crm import service as crm
from opsdesk.domains.crm.models import Company
from opsdesk.domains.finance import service as finance
from opsdesk.domains.knowledge import service as knowledge
from opsdesk.domains.tasks import service as tasks
from opsdesk.domains.tickets import service as tickets
from opsdesk.errors import Conflict, OpsdeskError, RuleViolation
from opsdesk.events import EventBus


@contextmanager
def raises(kind: type[OpsdeskError], what: str) -> Iterator[None]:
    """Fail unless the block raises ``kind``."""
    try:
        yield
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}: {what}")


def _check(condition: object, detail: object) -> None:
    # Not `assert`: the smoke check must still check under python -O.
    if not condition:
        raise AssertionError(str(detail))


def run(database_url: str, redis_url: str, *, report: Callable[[str], None] = print) -> None:
    """Exercise every opsdesk rule against the given services; raise AssertionError on a break."""
    schema = f"opsdesk_smoke_{os.getpid()}"
    prefix = f"smoke{os.getpid()}:"
    engine = db.make_engine(database_url, schema=schema)
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    db.create_schema(engine, schema)
    report(f"create_schema: {(time.perf_counter() - started) * 1000:.1f} ms")
    started = time.perf_counter()
    db.create_schema(engine, schema)
    report(f"create_schema again (idempotent): {(time.perf_counter() - started) * 1000:.1f} ms")
    bus = EventBus(client, prefix=prefix)
    factory = db.make_session_factory(engine)
    bus.bind(factory)
    pubsub = client.pubsub()
    pubsub.subscribe(*bus.channels())
    for _ in bus.channels():
        pubsub.get_message(timeout=1)  # subscribe confirmations
    try:
        with factory() as s:
            _check_rules(s, engine, report)
            # Rolled-back work publishes nothing; committed work publishes after commit.
            while pubsub.get_message(timeout=0.2):
                pass
            s.add(Company(name="never committed"))
            events.record(s, "crm", "company.created", 0, name="ghost")
            s.rollback()
            _check(pubsub.get_message(timeout=0.3) is None, "an event was published after rollback")
            company = crm.create_company(s, name="Evented Inc")
            msg = pubsub.get_message(timeout=2)
            if msg is None:
                raise AssertionError("no event after commit")
            evt = json.loads(msg["data"])
            _check(msg["channel"].decode() == f"{prefix}opsdesk.crm", msg)
            _check(evt["type"] == "crm.company.created" and evt["id"] == company.id, evt)
            report(
                f"event after commit on {msg['channel'].decode()}: {evt['type']};"
                " none after rollback"
            )
    finally:
        pubsub.close()
        db.drop_schema(engine, schema)
        engine.dispose()
        client.close()


def _check_rules(s: Any, engine: Any, report: Callable[[str], None]) -> None:
    # crm
    crm.create_contact(s, email="Ada@Example.com", name="Ada")
    crm.create_contact(s, email="bob@example.com", name="Bob")  # distinct emails coexist
    with raises(Conflict, "duplicate email in another case"):
        crm.create_contact(s, email="ada@EXAMPLE.com", name="Ada again")
    deal = crm.create_deal(s, title="Big", amount=Decimal("1000.50"))
    crm.create_deal(s, title="Small", amount=Decimal("99.50"))
    with raises(RuleViolation, "lead → won"):
        crm.move_deal(s, deal_id=deal.id, stage="won")
    for stage in ("qualified", "proposal", "won"):
        crm.move_deal(s, deal_id=deal.id, stage=stage)
    with raises(RuleViolation, "won → lost"):
        crm.move_deal(s, deal_id=deal.id, stage="lost")
    totals = {t.stage: t for t in crm.pipeline_totals(s)}
    _check(totals["won"].total == Decimal("1000.50") and totals["lead"].count == 1, totals)
    report("crm: case-insensitive unique email, stage moves, pipeline totals")
    # tasks
    past = utcnow() - timedelta(hours=1)
    late = tasks.create_task(s, title="late", due_at=past)
    done = tasks.create_task(s, title="done", due_at=past)
    tasks.create_task(s, title="future", due_at=utcnow() + timedelta(days=1))
    tasks.set_status(s, task_id=done.id, status="done")
    _check([t.id for t in tasks.overdue_tasks(s)] == [late.id], "check failed")
    tasks.add_comment(s, task_id=late.id, author="bob", body="on it")
    report("tasks: overdue query excludes done and future tasks; comments")
    # tickets
    t = tickets.open_ticket(s, subject="down", requester_email="c@example.com", priority="urgent")
    _check(t.sla_due_at - t.created_at == timedelta(hours=4), "check failed")
    with raises(RuleViolation, "open → closed"):
        tickets.transition_ticket(s, ticket_id=t.id, status="closed")
    for status in ("pending", "resolved", "closed", "open"):
        tickets.transition_ticket(s, ticket_id=t.id, status=status, actor="agent")
    _check(len(tickets.ticket_history(s, ticket_id=t.id)) == 5, "check failed")
    report("tickets: state machine, SLA from priority, audit trail")
    # knowledge
    knowledge.create_doc(s, title="Reset your password", body="Use the reset link.", tags=["auth"])
    knowledge.create_doc(s, title="Billing", body="Invoices mention password once.", tags=["bill"])
    hits = knowledge.search_docs(s, query="password")
    _check(
        hits[0].doc.title == "Reset your password" and hits[0].rank > hits[1].rank, "check failed"
    )
    _check(
        knowledge.search_docs(s, query="password", tags=["bill"])[0].doc.title == "Billing",
        "check failed",
    )
    report("knowledge: generated tsvector, GIN, ts_rank ordering, tag filter")
    # canvas
    c = canvas.create_canvas(s, name="board", data={"shapes": [{"kind": "box", "w": 3}]})
    canvas.save_canvas(
        s, canvas_id=c.id, data={"shapes": [{"kind": "box", "w": 5}]}, expected_version=1
    )
    with raises(Conflict, "stale canvas version"):
        canvas.save_canvas(s, canvas_id=c.id, data={}, expected_version=1)
    _check(
        [d.id for d in canvas.query_canvases(s, path="$.shapes[*] ? (@.w > 4)")] == [c.id],
        "check failed",
    )
    _check(canvas.path_values(s, canvas_id=c.id, path="$.shapes[*].w") == [5], "check failed")
    _canvas_race(engine, c.id)
    _canvas_service_race(engine, c.id)
    report("canvas: optimistic version, racing writers (one wins), JSON path")
    # finance
    cash = finance.create_account(s, code="1000", name="Cash", type="asset")
    sales = finance.create_account(s, code="4000", name="Sales", type="income")
    line = finance.LineSpec
    finance.post_transaction(
        s, memo="sale", lines=[line(cash.id, Decimal("10.10")), line(sales.id, Decimal("-10.10"))]
    )
    with raises(RuleViolation, "unbalanced"):
        finance.post_transaction(
            s, memo="bad", lines=[line(cash.id, Decimal("1")), line(sales.id, Decimal("-2"))]
        )
    with raises(RuleViolation, "single line"):
        finance.post_transaction(s, memo="bad", lines=[line(cash.id, Decimal("1"))])
    _check(finance.account_balance(s, account_id=cash.id) == Decimal("10.10"), "check failed")
    _ledger_trigger(engine, cash.id)
    spec = finance.InvoiceLineSpec
    inv = finance.create_invoice(
        s,
        number="INV-1",
        customer_name="Ada",
        lines=[
            spec("a", Decimal("3"), Decimal("0.10")),
            spec("b", Decimal("1.5"), Decimal("2.25")),
        ],
    )
    _check(inv.total == Decimal("3.68"), inv.total)
    with raises(Conflict, "duplicate invoice number"):
        finance.create_invoice(s, number="INV-1", customer_name="x", lines=[spec("a", 1, 1)])  # type: ignore[arg-type]
    report("finance: balanced ledger (service + deferred trigger), invoice totals in SQL")


def _canvas_race(engine: Any, canvas_id: int) -> None:
    # Two connections save with the same expected version; the second blocks on the row lock,
    # then re-checks version = 2 after the first commits and matches nothing.
    update = text(
        "UPDATE canvas_docs SET version = version + 1"
        " WHERE id = :i AND version = 2 RETURNING version"
    )
    with engine.connect() as a, engine.connect() as b:
        first = a.execute(update, {"i": canvas_id}).scalar_one_or_none()
        b.execute(text("SET lock_timeout = '5s'"))
        import threading

        result: list[Any] = []
        worker = threading.Thread(
            target=lambda: result.append(b.execute(update, {"i": canvas_id}).scalar_one_or_none())
        )
        worker.start()
        time.sleep(0.2)
        a.commit()
        worker.join()
        b.commit()
    _check(first == 3 and result == [None], (first, result))


def _canvas_service_race(engine: Any, canvas_id: int) -> None:
    # Two Sessions on two connections save the same expected version at once: one wins.
    import threading

    from sqlalchemy.orm import Session

    current = canvas.get_canvas(Session(engine), canvas_id=canvas_id).version
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(n: int) -> None:
        with Session(engine) as s:
            barrier.wait()
            try:
                canvas.save_canvas(s, canvas_id=canvas_id, data={"w": n}, expected_version=current)
                outcomes.append("saved")
            except Conflict:
                outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check(sorted(outcomes) == ["conflict", "saved"], outcomes)


def _ledger_trigger(engine: Any, account_id: int) -> None:
    # Raw SQL bypasses the service; the deferred constraint trigger still refuses at COMMIT.
    try:
        with engine.begin() as conn:
            tid = conn.execute(
                text("INSERT INTO ledger_transactions (memo) VALUES ('raw') RETURNING id")
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO ledger_lines (transaction_id, account_id, amount)"
                    " VALUES (:t, :a, 5)"
                ),
                {"t": tid, "a": account_id},
            )
    except IntegrityError as exc:
        _check("unbalanced" in str(exc), exc)
        return
    raise AssertionError("an unbalanced raw-SQL ledger transaction was committed")


def main() -> int:
    """Entry point: ``python -m opsdesk.smoke``."""
    database_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not database_url or not redis_url:
        print('set DATABASE_URL and REDIS_URL (e.g. eval "$(make -s env)")', file=sys.stderr)
        return 2
    run(database_url, redis_url)
    print("all opsdesk rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
