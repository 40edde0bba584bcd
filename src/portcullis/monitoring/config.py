"""The ``alerts:`` section of ``gateway.yaml`` (docs/alerts.md)."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from portcullis.monitoring.containment import ContainmentRule
from portcullis.monitoring.detectors import DEFAULT_FLOORS, Settings
from portcullis.monitoring.regions import UNKNOWN, RegionMap

AlertRule = Literal["call_rate_spike", "argument_size_spike", "output_size_spike", "error_rate_spike",
                    "denial_rate_spike", "cross_tenant_spike", "cross_region_spike", "new_identity_high_risk",
                    "new_egress_destination", "new_argument_shape"]
SwitchKind = Literal["tool", "service", "tenant", "agent", "client", "user", "source_app"]


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise ValueError("not a CIDR (address/prefix, no host bits set)") from None


Cidr = Annotated[str, Field(min_length=2, max_length=64), AfterValidator(_cidr)]
RegionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"), AfterValidator(
    lambda name: name if name != UNKNOWN else _reserved())]


def _reserved() -> str:
    raise ValueError(f"'{UNKNOWN}' is the region of an address in no CIDR")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertFloors(_Model):
    """Absolute floors: a spike alerts only when the window's value is also at least this (steady or tiny
    traffic never alerts, however small its variance)."""

    call_rate_spike: float = Field(DEFAULT_FLOORS["call_rate_spike"], ge=1, description="Calls per window.")
    argument_size_spike: float = Field(DEFAULT_FLOORS["argument_size_spike"], ge=1,
                                       description="Mean argument bytes per call in the window.")
    output_size_spike: float = Field(DEFAULT_FLOORS["output_size_spike"], ge=1,
                                     description="Mean result bytes per call in the window.")
    error_rate_spike: float = Field(DEFAULT_FLOORS["error_rate_spike"], gt=0, le=1,
                                    description="Share of calls that failed (errors and tool errors).")
    denial_rate_spike: float = Field(DEFAULT_FLOORS["denial_rate_spike"], gt=0, le=1,
                                     description="Share of calls the policy denied.")
    cross_tenant_spike: float = Field(DEFAULT_FLOORS["cross_tenant_spike"], ge=2,
                                      description="Distinct tenants one caller touched in the window.")
    cross_region_spike: float = Field(DEFAULT_FLOORS["cross_region_spike"], ge=2,
                                      description="Distinct regions one caller came from in the window.")


class ContainmentRuleConfig(_Model):
    """What to do about an alert: propose (a person approves) or apply a kill switch on its subject."""

    rule: AlertRule = Field(description="The alert rule this reacts to.")
    kind: SwitchKind = Field(description="The kill switch; its target is the alert key's value of this kind "
                             "(an alert whose key has none is left alone).")
    mode: Literal["proposed", "applied"] = Field(
        "proposed", description="proposed: an approval request, nothing changes until a person approves; "
        "applied: at once. High-impact switches should stay proposed.")


class AlertsConfig(_Model):
    """Runtime monitoring: per-tool-per-hour and per-caller baselines, and the alerts they raise."""

    enabled: bool = Field(True, description="Watch every call (O(1) on the request path) and raise alerts.")
    window_s: float = Field(60, ge=10, le=3600, description="Length of one statistics window.")
    alpha: float = Field(0.1, gt=0, le=0.5, description="Weight of the newest window in the moving baselines.")
    k: float = Field(4, ge=1, le=20, description="A spike is above mean + k standard deviations (and the floor).")
    min_history: int = Field(30, ge=2, le=100000, description="Windows a key needs before its spikes alert.")
    min_calls: int = Field(10, ge=1, description="Calls a window needs before its error or denial ratio is judged.")
    max_gap_windows: int = Field(10, ge=0, le=1440, description="A silence up to this many windows counts as "
                                 "zero-call windows; a longer one (an idle night) is not folded in.")
    floors: AlertFloors = Field(default_factory=AlertFloors)
    max_keys: int = Field(10000, ge=100, le=1000000, description="Keys each table tracks (least recently used "
                          "evicted): bounds memory whatever agent ids or tool names callers send.")
    max_pending: int = Field(10000, ge=100, le=1000000, description="Observations waiting for the background "
                             "task; past it they are dropped and counted.")
    learn_s: float = Field(3600, ge=0, description="After a start with a fresh state, first-seen identities and "
                           "destinations are learned silently for this long (a restored snapshot resumes what was "
                           "left of it).")
    cooldown_s: float = Field(900, ge=0, description="The same rule and key alert at most once in this time.")
    max_alerts_per_window: int = Field(100, ge=1, description="Alerts raised per window at most (the rest counted).")
    egress_arguments: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] = Field(
        ("url", "destination", "to", "host"), max_length=16, description="Top-level argument names read as the "
        "destination of an egress-capable tool (manifest egress, else openWorldHint): the first string one found.")
    notify: bool = Field(True, description="Also send each alert to the approvals.notify webhook, when one "
                         "is configured.")
    containment: tuple[ContainmentRuleConfig, ...] = Field(
        (), description="Kill switches alert rules propose or apply (wired by the kill-switch integration).")
    persist: bool = Field(True, description="Save baselines and first-seen sets to monitor_state.sqlite3 in the "
                          "state directory whenever a window closes, and restore them at start (no relearning "
                          "after a restart).")
    regions: dict[RegionName, tuple[Cidr, ...]] = Field(
        default_factory=dict, max_length=256, description="Region name -> CIDRs of the client source address "
        "(the TCP peer; the longest prefix wins), for cross_region_spike.")
    region_attribute: str | None = Field(
        None, min_length=1, max_length=64, description="A principal attribute (identity.issuers[].claims."
        "attributes maps it from a token claim) read as the region when the source address is in no CIDR "
        "(a gateway behind a proxy).")
    count_unknown_region: bool = Field(False, description="Count a call with no region as the region "
                                       "'unknown' (else it is not counted).")

    @field_validator("regions")
    @classmethod
    def _regions_map(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        RegionMap(value)  # the same network in two regions is an error
        return value

    @model_validator(mode="after")
    def _regions_for_the_rule(self) -> AlertsConfig:
        if any(item.rule == "cross_region_spike" for item in self.containment) and not self.region_map().configured:
            raise ValueError("containment on cross_region_spike needs alerts.regions or alerts.region_attribute")
        return self

    def region_map(self) -> RegionMap:
        return RegionMap(self.regions, attribute=self.region_attribute, count_unknown=self.count_unknown_region)

    def settings(self) -> Settings:
        return Settings(window_s=self.window_s, alpha=self.alpha, k=self.k, min_history=self.min_history,
                        min_calls=self.min_calls, max_gap_windows=self.max_gap_windows,
                        floors=self.floors.model_dump(), max_keys=self.max_keys, learn_s=self.learn_s,
                        cooldown_s=self.cooldown_s, max_alerts_per_window=self.max_alerts_per_window)

    def containment_rules(self) -> dict[str, tuple[ContainmentRule, ...]]:
        out: dict[str, tuple[ContainmentRule, ...]] = {}
        for item in self.containment:
            out[item.rule] = (*out.get(item.rule, ()), ContainmentRule(item.rule, item.kind, item.mode))
        return out
