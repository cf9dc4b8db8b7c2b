"""E2E suite: the testbed plugin (entry point) does the work; this file only binds factories."""

from __future__ import annotations

from fixtures.test_data_factory import (
    AccountFactory,
    CanvasDataFactory,
    CompanyFactory,
    CRMContactFactory,
    DealFactory,
    FinanceDataFactory,
    InvoiceLineFactory,
    KnowledgeDocFactory,
    LedgerTransactionFactory,
    SupportTicketFactory,
    TaskCommentFactory,
    TaskFactory,
)

from testbed.fixtures import factory_fixture

collect_ignore = ["fixtures"]

# One fixture per factory, bound to e2e_session (rolled back, or committed when marked).
company_factory = factory_fixture(CompanyFactory)
crm_contact_factory = factory_fixture(CRMContactFactory)
deal_factory = factory_fixture(DealFactory)
task_factory = factory_fixture(TaskFactory)
task_comment_factory = factory_fixture(TaskCommentFactory)
support_ticket_factory = factory_fixture(SupportTicketFactory)
knowledge_doc_factory = factory_fixture(KnowledgeDocFactory)
canvas_data_factory = factory_fixture(CanvasDataFactory)
account_factory = factory_fixture(AccountFactory)
ledger_transaction_factory = factory_fixture(LedgerTransactionFactory)
finance_data_factory = factory_fixture(FinanceDataFactory)
invoice_line_factory = factory_fixture(InvoiceLineFactory)
