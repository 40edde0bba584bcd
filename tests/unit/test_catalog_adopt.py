"""Catalog.adopt: a policy version's manifests replace the running ones without serving anything unchecked."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from portcullis.catalog import Catalog
from portcullis.config.loader import Deployment
from portcullis.pinning import definition_hash
from tests.unit.test_catalog_and_supervisor import ECHO, deployment

PIN = definition_hash(ECHO)


def _changed(base: Deployment, **update: Any) -> Deployment:
    (loaded,) = base.manifests
    manifest = loaded.manifest.model_copy(update=update)
    return dataclasses.replace(base, manifests=(dataclasses.replace(loaded, manifest=manifest),))


def _serving() -> Catalog:
    catalog = Catalog(deployment(PIN))
    catalog.update_service("svc", [ECHO])
    assert catalog.lookup("svc.echo") is not None
    return catalog


def test_a_policy_only_change_keeps_serving_with_the_new_policy() -> None:
    catalog = _serving()
    from portcullis.policy.model import ToolPolicy

    policy = ToolPolicy.model_validate({"allowed_callers": ["user:alice"]})
    assert catalog.adopt(_changed(deployment(PIN), policy=policy)) == frozenset()
    route = catalog.lookup("svc.echo")
    assert route is not None and route.manifest.manifest.policy == policy  # the approve stage reads it here


# every change but the policy: the tool waits for a checked listing (a changed pin, schema, description
# or acceptance must never ride on the old check)
CHANGES = [{"pin": "sha256:" + "0" * 64}, {"description": "Echo, differently."},
           {"input_schema": {"type": "object"}}, {"findings_accepted": PIN}, {"risk": "high"}]


@pytest.mark.parametrize("update", CHANGES)
def test_any_other_change_waits_for_a_checked_listing(update: dict[str, Any]) -> None:
    catalog = _serving()
    assert catalog.adopt(_changed(deployment(PIN), **update)) == frozenset({"svc"})
    assert catalog.lookup("svc.echo") is None and catalog.listing() == ()
    assert catalog.statuses()[0].state == "pending"


def test_a_removed_manifest_is_gone_and_one_added_back_waits() -> None:
    catalog = _serving()
    empty = dataclasses.replace(deployment(PIN), manifests=())
    assert catalog.adopt(empty) == frozenset()
    assert catalog.lookup("svc.echo") is None and catalog.statuses() == []
    assert catalog.adopt(deployment(PIN)) == frozenset({"svc"})
    assert catalog.lookup("svc.echo") is None
    catalog.update_service("svc", [ECHO])  # the service's fresh listing, checked
    assert catalog.lookup("svc.echo") is not None


def test_a_quarantined_tool_stays_quarantined_across_a_policy_change() -> None:
    catalog = Catalog(deployment(PIN))
    catalog.update_service("svc", [{**ECHO, "description": "rug pulled"}])
    assert catalog.statuses()[0].state == "quarantined"
    from portcullis.policy.model import ToolPolicy

    catalog.adopt(_changed(deployment(PIN), policy=ToolPolicy.model_validate({"allowed_callers": ["user:a"]})))
    assert catalog.statuses()[0].state == "quarantined" and catalog.lookup("svc.echo") is None
