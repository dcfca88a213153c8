import pytest

from intentwatch.models.conformance import labels_outside, target_allowed, target_host, tool_allowed


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("https://API.acme.org:8443/x?y=1", "api.acme.org"),
        ("mailto:Bob@Acme.org", "acme.org"),
        ("db.internal.acme.org", "db.internal.acme.org"),
        ("iban:DE89370400440532013000", None),
        ("s3://bucket/key", "bucket"),
    ],
)
def test_target_host(target, host):
    assert target_host(target) == host


@pytest.mark.parametrize(
    ("patterns", "target", "allowed"),
    [
        (["*"], "https://evil.example/x", True),
        (["*.acme.org"], "https://api.acme.org/v1", True),
        (["*.acme.org"], "https://acme.org.evil.example/v1", False),
        (["*.acme.org"], "api.acme.org", True),
        (["mailto:*@acme.org"], "mailto:bob@acme.org", True),
        (["mailto:*@acme.org"], "mailto:bob@acme.org.evil.example", False),
        (["iban:DE89*"], "iban:DE89370400440532013000", True),
        (["iban:DE89*"], "iban:GB29NWBK60161331926819", False),
        (["https://api.acme.org/*"], "https://api.acme.org/v1", True),
        (["https://api.acme.org/*"], "https://api.acme.org.evil.example/v1", False),
        ([], "https://api.acme.org", False),
    ],
)
def test_target_patterns(patterns, target, allowed):
    assert target_allowed(patterns, target) is allowed


def test_tool_globs_are_case_sensitive_and_anchored():
    assert tool_allowed(["gmail.*"], "gmail.send_email")
    assert not tool_allowed(["gmail.*"], "xgmail.send_email")
    assert not tool_allowed(["gmail.read_*"], "gmail.send_email")


@pytest.mark.parametrize(
    ("allowed", "labels", "outside"),
    [
        (["confidential"], ["public", "internal", "confidential"], []),
        (["internal"], ["confidential"], ["confidential"]),
        (["internal"], ["pii"], ["pii"]),
        (["internal", "pii"], ["pii", "internal"], []),
        ([], ["public"], ["public"]),
        (["*"], ["pii"], []),
    ],
)
def test_label_levels_cover_lower_levels_but_tags_must_be_named(allowed, labels, outside):
    assert labels_outside(allowed, labels) == outside
