"""Output-filter configuration and metrics: validation of ``content:`` and bounded metric labels."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from portcullis.config.content import ContentConfig, ToolContent
from portcullis.content.output_filter import ContentReport
from portcullis.observability.metrics import GatewayMetrics


def test_defaults_redact_secrets_and_pii_above_public() -> None:
    config = ContentConfig()
    assert config.secrets.action == "redact" and config.hidden_characters == "strip" and config.injection == "wrap"
    assert config.pii.actions == {"Public": "allow", "Internal": "redact", "Confidential": "redact",
                                  "Restricted": "redact"}


@pytest.mark.parametrize("content", [
    {"secrets": {"action": "allow"}},  # a secret is never let through
    {"secrets": {"action": "mask"}},
    {"pii": {"kinds": ["passport"]}},
    {"links": {"allow_hosts": ["https://evil.example/"]}},
    {"links": {"allow_hosts": ["a@b.example"]}},
    {"budget": {"cpu_ms": 0}},
    {"injection": "ignore"},
    {"unknown": 1},
])
def test_bad_gateway_content_config_is_refused(content: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ContentConfig.model_validate(content)


@pytest.mark.parametrize("tool", [
    {"rules": [{"id": "a", "kinds": ["card"], "action": "mask"}, {"id": "a", "kinds": ["email"], "action": "hash"}]},
    {"rules": [{"id": "a", "kinds": ["Card Number"], "action": "mask"}]},
    {"rules": [{"id": "a", "kinds": [], "action": "mask"}]},
    {"rules": [{"id": "a", "kinds": ["card"], "action": "mask", "callers": ["nobody"]}]},
    {"rules": [{"id": "a", "kinds": ["secret"], "action": "mask"}]},
])
def test_bad_tool_content_rules_are_refused(tool: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ToolContent.model_validate(tool)


def test_metric_labels_stay_in_closed_sets() -> None:
    metrics = GatewayMetrics()
    report = ContentReport("tools/call", findings=Counter({("email", "redact"): 2, ("made_up_kind", "redact"): 1}),
                           links_neutralised=1, injection_rules={"injection.override"}, injection_action="wrap")
    metrics.content_findings(report)
    metrics.content_withheld("budget_exceeded")
    metrics.content_withheld("something else")
    text = metrics.render()[0].decode()
    assert 'portcullis_content_findings_total{action="redact",kind="email"} 2.0' in text
    assert 'kind="other"' in text and "made_up_kind" not in text
    assert 'portcullis_content_withheld_total{reason="other"} 1.0' in text
