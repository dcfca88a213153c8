"""Intent alignment: named targets are approved, unasked actions deviate by their risk."""

from __future__ import annotations

import pytest

from intentwatch.models.catalogue import ToolInfo
from intentwatch.models.intent import (
    align,
    concepts_of,
    parse_intent,
    parse_target,
    parties_of,
    privilege_of,
    stem,
)

SEND = ToolInfo("gmail.send_email", "send", "Send an email, optionally with attachments.")
DELETE = ToolInfo("drive.delete_file", "delete", "Delete a Drive file.")
READ = ToolInfo("crm.lookup_customer", "read", "Look up a customer record by id or email.")
ADMIN = ToolInfo("okta.reset_password", "admin", "Reset an Okta user's password.")
REPLY = "Reply to jane.doe@customer-co.com about her refund request"


def test_named_recipient_is_approved() -> None:
    check = align(REPLY, SEND, "mailto:jane.doe@customer-co.com")
    assert check.target_named and check.domain_named
    assert check.deviation == 0.0


def test_other_recipient_at_a_named_domain_only_approves_the_domain() -> None:
    check = align(REPLY, SEND, "mailto:bob@customer-co.com")
    assert not check.target_named
    assert check.domain_named


def test_unnamed_send_is_flagged_when_the_intent_asks_for_no_message() -> None:
    check = align("Summarise the open tickets in the billing queue", SEND, "mailto:x@evil.example")
    assert not check.target_named and not check.domain_named
    assert check.deviation == pytest.approx(0.9)


def test_unasked_read_weighs_less_than_unasked_delete() -> None:
    intent = "Schedule a demo with the Northwind team next week"
    read, delete = align(intent, READ, None), align(intent, DELETE, None)
    assert 0.0 < read.deviation < delete.deviation


@pytest.mark.parametrize(
    ("intent", "tool"),
    [
        ("Purge the stale draft documents from last year", DELETE),
        ("Reset Bob's password after the lockout", ADMIN),
        ("Email the Q3 summary to the finance team", SEND),
    ],
)
def test_synonyms_and_stems_match_the_tool_action(intent: str, tool: ToolInfo) -> None:
    assert align(intent, tool, None).deviation == 0.0


def test_a_named_domain_approves_its_hosts() -> None:
    post = ToolInfo("http.post", "send", "Send an HTTP POST request with a JSON body.")
    intent = "Post the release notes to acme-partner.com"
    assert align(intent, post, "https://files.acme-partner.com/upload").target_named
    assert not align(intent, post, "https://files.evil.example/upload").domain_named
    sibling = align("Post the notes on wiki.acme-partner.com", post, "https://files.acme-partner.com")
    assert not sibling.target_named and sibling.domain_named


def test_named_identifiers_and_ibans_are_approved() -> None:
    intent = "Pay invoice INV-2026-10442 to DE89 3704 0044 0532 0130 00"
    transfer = ToolInfo("payments.create_transfer", "send", "Send a bank transfer to an IBAN.")
    assert align(intent, transfer, "iban:DE89370400440532013000").target_named
    assert not align(intent, transfer, "iban:GB29NWBK60161331926819").target_named
    assert align(intent, READ, "https://erp.acme.org/api/invoices/INV-2026-10442").target_named


def test_empty_intent_neither_approves_nor_flags() -> None:
    check = align("", DELETE, "https://drive.google.com/file/d/1")
    assert check.deviation == 0.0 and not check.target_named


def test_related_concepts_get_half_credit() -> None:
    create = ToolInfo("drive.create_file", "write", "Create a document in a Drive folder.")
    assert align("Update the quarterly forecast sheet", create, None).credit == 0.5


def test_stemming_is_consistent() -> None:
    assert stem("deletes") == stem("deleted") == stem("deleting") == stem("delete")
    assert stem("summarize") == stem("summarise")
    assert "delete" in concepts_of("clean up old branches") | concepts_of("cleanup")


def test_targets_parse_into_routes_sites_and_domains() -> None:
    url = parse_target("https://acme.zendesk.com/api/v2/tickets/96695")
    assert url.endpoint == "https://acme.zendesk.com/api/v2/tickets/{id}"
    assert (url.site, url.domain) == ("acme.zendesk.com", "zendesk.com")
    mail = parse_target("mailto:Jo@Mail.Example.co.uk")
    assert (mail.site, mail.domain) == ("mail.example.co.uk", "example.co.uk")
    assert parse_target("slack:#ops").site == "slack:#ops"


def test_intents_are_parsed_once() -> None:
    assert parse_intent(REPLY) is parse_intent(REPLY)


def test_a_delete_of_other_records_than_the_intent_names_is_flagged() -> None:
    intent = "Delete the spam tickets #51796, #44970 and #56436."
    delete = ToolInfo("zendesk.delete_ticket", "delete", "Delete a ticket.")
    named = align(intent, delete, "https://acme.zendesk.com/api/v2/tickets/51796")
    other = align(intent, delete, "https://acme.zendesk.com/api/v2/tickets/93336")
    assert named.target_named and not named.named_instead
    assert not other.target_named and "51796" in other.named_instead
    # an identifier of another shape (a date) is no record of the same kind
    dated = align("Offboard lisa@acme.org (last day 2026-11-21)", delete,
                  "https://acme.zendesk.com/api/v2/tickets/93336")
    assert not dated.named_instead


def test_a_delete_of_another_kind_of_thing_than_asked_gets_half_credit() -> None:
    intent = "Delete merged branches older than 90 days in acme/app."
    branch = align(intent, ToolInfo("github.delete_branch", "delete"), None)
    deployment = align(intent, ToolInfo("k8s.delete_deployment", "delete"), None)
    documents = align("Purge the stale draft documents", ToolInfo("drive.delete_file", "delete"),
                      None)
    assert branch.credit == 1.0 and not branch.other_objects
    assert deployment.credit == 0.5 and deployment.other_objects == {"deployment"}
    assert documents.credit == 1.0  # documents are files in other words


def test_parties_in_arguments_and_privilege_levels() -> None:
    args = {"login": "Eve.Outsider@gmail.com", "profile": {"manager": "bob@acme.org"}, "n": 1}
    assert parties_of(args) == ("mailto:eve.outsider@gmail.com", "mailto:bob@acme.org")
    assert parties_of(None) == ()
    assert privilege_of("https://acme.okta.com/api/v1/groups/super-admins/users/1", None) == "admin"
    assert privilege_of(None, {"permission": "admin"}) == "admin"
    assert privilege_of("https://warehouse.acme.org/roles/ANALYST_READ", {"user": "u1"}) is None
    create = ToolInfo("okta.create_user", "admin", "Create an Okta user.")
    intent = "Onboard Lena Davis: create their Okta account and mail lena@proton.me"
    outsider = align(intent, create, "https://acme.okta.com/api/v1/users",
                     ("mailto:eve@gmail.com",), None)
    invited = align(intent, create, "https://acme.okta.com/api/v1/users",
                    ("mailto:lena@proton.me",), None)
    assert outsider.unnamed_parties == ("mailto:eve@gmail.com",) and not invited.unnamed_parties
    admin = align("Give Olga admin access to staging", create, None, (), "admin")
    assert admin.unapproved_privilege is None  # asked for in so many words
