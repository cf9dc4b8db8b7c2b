"""factory_boy 3.3.3 equivalents of the harness's factories, over the same columns.

Content comes from factory.Faker providers (factory_boy's idiom); unique columns use
factory.Sequence, as factory_boy's docs recommend.
"""

from __future__ import annotations

from typing import Any

import factory
from factory.alchemy import SQLAlchemyModelFactory

PERSISTENCE = "flush"  # objects come back with their ids, transaction open: same as ours


def _meta(model: Any, session: Any) -> type:
    return type(
        "Meta",
        (),
        {
            "model": model,
            "sqlalchemy_session": session,
            "sqlalchemy_session_persistence": PERSISTENCE,
        },
    )


def fb_company_factory(session: Any) -> Any:
    """Companies: name and domain from Faker."""
    from opsdesk.domains.crm.models import Company

    return type(
        "FBCompany",
        (SQLAlchemyModelFactory,),
        {
            "Meta": _meta(Company, session),
            "name": factory.Faker("company"),
            "domain": factory.Faker("domain_name"),
        },
    )


# factory_boy declarations for every contact column the harness's factory may fill.
def _contact_declarations(session: Any) -> dict[str, Any]:
    return {
        "name": factory.Faker("name"),
        "email": factory.LazyAttributeSequence(
            lambda o, n: f"{o.name.lower().replace(' ', '.')}.{n}@example.test"
        ),
        "phone": factory.Faker("phone_number"),
        "company": factory.SubFactory(fb_company_factory(session)),
    }


def fb_contact_factory(session: Any, fields: list[str]) -> Any:
    """Contacts over exactly `fields` (the harness factory's field names)."""
    from opsdesk.domains.crm.models import Contact

    known = _contact_declarations(session)
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise RuntimeError(
            f"no factory_boy declaration for contact field(s) {unknown}: add them "
            "to bench/fb_factories.py so both sides fill the same columns"
        )
    # name first: the email's LazyAttributeSequence reads it.
    body = {k: known[k] for k in ["name", *sorted(set(fields) - {"name"})] if k in fields}
    return type("FBContact", (SQLAlchemyModelFactory,), {"Meta": _meta(Contact, session), **body})


def fb_ledger_transaction_factory(session: Any) -> Any:
    """Balanced journal entries like LedgerTransactionFactory: memo, unique reference, and two
    lines (+amount on a debit account, -amount on a credit account; one account pair per batch)."""
    from opsdesk.domains.finance.models import Account, LedgerLine, LedgerTransaction

    account = type(
        "FBAccount",
        (SQLAlchemyModelFactory,),
        {
            "Meta": _meta(Account, session),
            "code": factory.Sequence(lambda n: f"A-{n:012d}"),
            "name": factory.Faker("job"),
            "type": factory.Iterator(["asset", "income"]),
        },
    )
    line = type(
        "FBLedgerLine",
        (SQLAlchemyModelFactory,),
        {
            "Meta": _meta(LedgerLine, session),
            "transaction": None,
            "account_id": None,
            "amount": None,
        },
    )
    account_factory: Any = account  # factory_boy adds create() at class creation
    line_factory: Any = line
    accounts: dict[str, Any] = {}
    fake = factory.Faker._get_faker()  # factory_boy's shared Faker, as factory.Faker uses

    def lines(obj: Any, create: bool, extracted: Any, **kwargs: Any) -> None:
        if not create:
            return
        if not accounts:  # one debit/credit pair per batch, as ours
            accounts["debit"] = account_factory.create()
            accounts["credit"] = account_factory.create()
        value = fake.pydecimal(
            left_digits=4, right_digits=2, positive=True, min_value=1, max_value=5000
        )
        line_factory.create(transaction=obj, account_id=accounts["debit"].id, amount=value)
        line_factory.create(transaction=obj, account_id=accounts["credit"].id, amount=-value)

    return type(
        "FBLedgerTransaction",
        (SQLAlchemyModelFactory,),
        {
            "Meta": _meta(LedgerTransaction, session),
            "memo": factory.Faker("sentence"),
            "reference": factory.Sequence(lambda n: f"TX-{n:020d}"),
            "lines": factory.PostGeneration(lines),
        },
    )
