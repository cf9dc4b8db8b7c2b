"""Pure business rules: ticket state machine, deal stages, SLA, ledger balance, tags, money."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsdesk.domains.canvas.service import check_data
from opsdesk.domains.crm.models import DealStage
from opsdesk.domains.crm.service import check_stage_move
from opsdesk.domains.finance.service import LineSpec, check_balanced, money
from opsdesk.domains.knowledge.service import normalize_tags
from opsdesk.domains.tasks.service import require_aware
from opsdesk.domains.tickets.models import TicketStatus
from opsdesk.domains.tickets.service import check_transition, sla_due
from opsdesk.errors import InvalidArgument, RuleViolation
from opsdesk.unit_of_work import require_email

TICKET_ALLOWED = {
    ("open", "pending"),
    ("pending", "resolved"),
    ("resolved", "closed"),
    ("resolved", "open"),  # reopen
    ("closed", "open"),  # reopen
}
DEAL_ALLOWED = {
    ("lead", "qualified"), ("qualified", "proposal"), ("proposal", "won"),
    ("lead", "lost"), ("qualified", "lost"), ("proposal", "lost"),
}  # fmt: skip


@pytest.mark.parametrize("current", [s.value for s in TicketStatus])
@pytest.mark.parametrize("target", [s.value for s in TicketStatus])
def test_ticket_state_machine(current: str, target: str) -> None:
    if (current, target) in TICKET_ALLOWED:
        check_transition(current, target)
    else:
        with pytest.raises(RuleViolation, match=f"cannot go from {current} to {target}"):
            check_transition(current, target)


def test_ticket_unknown_status_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="use one of open, pending, resolved, closed"):
        check_transition("open", "escalated")


@pytest.mark.parametrize(
    ("priority", "hours"), [("urgent", 4), ("high", 8), ("normal", 24), ("low", 72)]
)
def test_sla_due_follows_priority(priority: str, hours: int) -> None:
    start = datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert sla_due(priority, start) == start + timedelta(hours=hours)


def test_sla_unknown_priority_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        sla_due("asap", datetime.now(UTC))


@pytest.mark.parametrize("current", [s.value for s in DealStage])
@pytest.mark.parametrize("target", [s.value for s in DealStage])
def test_deal_stage_moves(current: str, target: str) -> None:
    if (current, target) in DEAL_ALLOWED:
        check_stage_move(current, target)
    else:
        with pytest.raises(RuleViolation, match=f"cannot move from {current} to {target}"):
            check_stage_move(current, target)


def test_balanced_transaction_passes() -> None:
    lines = check_balanced([LineSpec(1, Decimal("10.10")), LineSpec(2, Decimal("-10.10"))])
    assert [line.amount for line in lines] == [Decimal("10.10"), Decimal("-10.10")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "at least two lines"),
        ([LineSpec(1, Decimal("5"))], "at least two lines"),
        ([LineSpec(1, Decimal("5")), LineSpec(2, Decimal("-4.99"))], "sum to 0.01, not 0"),
        ([LineSpec(1, Decimal("0")), LineSpec(2, Decimal("0"))], "zero amount"),
        ([LineSpec(1, Decimal("5")), LineSpec(2, Decimal("5"))], "sum to 10.00"),
    ],
)
def test_unbalanced_transactions_are_refused(lines: list[LineSpec], message: str) -> None:
    with pytest.raises(RuleViolation, match=message):
        check_balanced(lines)


# Time is not what these properties test: a loaded CI machine (load 6-19 on 2 cores was seen)
# must not fail them by Hypothesis's 200 ms deadline or its too_slow health check.
UNTIMED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@UNTIMED
@given(
    st.lists(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000000"), places=2),
        min_size=1,
        max_size=8,
    )
)
def test_any_debits_balanced_by_one_credit_pass(debits: list[Decimal]) -> None:
    lines = [LineSpec(i + 1, d) for i, d in enumerate(debits)]
    lines.append(LineSpec(99, -sum(debits, Decimal("0"))))
    assert sum(x.amount for x in check_balanced(lines)) == 0


@UNTIMED  # the filter also rejects some draws, which alone can trip too_slow under load
@given(
    st.lists(
        st.decimals(min_value=Decimal("-1000"), max_value=Decimal("1000"), places=2),
        min_size=2,
        max_size=6,
    ).filter(lambda xs: sum(xs, Decimal("0")) != 0 and all(x != 0 for x in xs))
)
def test_any_nonzero_sum_is_refused(amounts: list[Decimal]) -> None:
    with pytest.raises(RuleViolation):
        check_balanced([LineSpec(i + 1, a) for i, a in enumerate(amounts)])


@pytest.mark.parametrize(
    ("value", "message"),
    [(0.1, "not a float"), ("1.005", "more than 2 decimal places"), ("abc", "not a number"),
     ("NaN", "finite"), (Decimal("1e20"), "exceeds")],
)  # fmt: skip
def test_money_refuses_inexact_values(value: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        money(value)  # type: ignore[arg-type]


def test_money_is_exact() -> None:
    assert money("0.10") + money("0.20") == Decimal("0.30")
    assert money(3) == Decimal("3.00")


def test_tags_are_normalized_and_validated() -> None:
    assert normalize_tags([" Auth ", "auth", "billing.v2"]) == ["auth", "billing.v2"]
    with pytest.raises(InvalidArgument, match="not valid"):
        normalize_tags(["two words"])
    with pytest.raises(InvalidArgument, match="limit is 20"):
        normalize_tags([f"t{i}" for i in range(21)])


def test_canvas_data_must_be_an_object() -> None:
    assert check_data({"a": 1}) == {"a": 1}
    with pytest.raises(InvalidArgument, match="JSON object"):
        check_data([1, 2])


def test_due_times_need_a_timezone() -> None:
    with pytest.raises(InvalidArgument, match="timezone"):
        require_aware(datetime(2030, 1, 1), field="due_at")
    assert require_aware(None, field="due_at") is None


@pytest.mark.parametrize("email", ["", "plain", "a@b", "a b@c.de", "@x.io"])
def test_malformed_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidArgument):
        require_email(email)
