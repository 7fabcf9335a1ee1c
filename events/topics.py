"""Topic names: the one place they are spelled.

All names hang off one prefix (GOVSTREAM_TOPIC_PREFIX) so several pipelines,
or several test runs, can share a broker without touching each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from events.models import DERIVED_EVENTS, SessionEvent, TenantProfileUpdated

DERIVED_SUFFIX = ".derived"


def is_derived_topic(topic: str) -> bool:
    """Is `topic` the derived topic of some prefix (records the processors wrote)?"""
    return topic.endswith(DERIVED_SUFFIX)


@dataclass(frozen=True)
class Topics:
    prefix: str = "govstream"

    @property
    def sessions(self) -> str:
        """The tenant log: session events keyed by tenant_id, so all of a tenant's
        sessions are totally ordered on one partition; the workers append their
        admission requests and the relayed tenant profiles to it."""
        return f"{self.prefix}.sessions"

    @property
    def tenants(self) -> str:
        """TenantProfileUpdated, keyed by tenant_id, compacted."""
        return f"{self.prefix}.tenants"

    @property
    def derived(self) -> str:
        """Facts the governor derives (decisions, budget events), keyed by tenant_id,
        partition p holding what partition p of the tenant log derived."""
        return f"{self.prefix}{DERIVED_SUFFIX}"

    @property
    def review(self) -> str:
        """Denied policy decisions, for human review, keyed by tenant_id."""
        return f"{self.prefix}.review"

    @staticmethod
    def governor_changelog(group: str) -> str:
        """The governor's state, one record per changed key (compacted)."""
        return f"{group}-changelog"

    @property
    def deadletter(self) -> str:
        """Records that could not be decoded or validated, with the reason."""
        return f"{self.prefix}.deadletter"

    def all(self) -> tuple[str, ...]:
        return (self.sessions, self.tenants, self.derived, self.review, self.deadletter)

    def sink_inputs(self) -> tuple[str, ...]:
        """What the ClickHouse sink reads: producer events and the processors' facts.

        Not review: it repeats the denials the derived topic already holds.
        """
        return (self.sessions, self.tenants, self.derived)

    def compacted(self) -> tuple[str, ...]:
        return (self.tenants,)

    def internal(self) -> tuple[str, ...]:
        """Topics only workers write (their records carry the worker's signature)."""
        return (self.derived, self.review)

    @staticmethod
    def key_of(event: BaseModel) -> str:
        """The record key of a producer event: its tenant. A tenant is the unit of
        order (DESIGN "The governor")."""
        if isinstance(event, TenantProfileUpdated | SessionEvent):
            return event.tenant_id
        raise ValueError(f"{type(event).__name__} is not a producer event")

    def route(self, event: BaseModel) -> tuple[str, str]:
        """(topic, key) a producer sends this event to; derived events are refused."""
        if isinstance(event, DERIVED_EVENTS):
            raise ValueError(
                f"{type(event).__name__} is derived by the processors; producers cannot emit it"
            )
        key = self.key_of(event)
        return (self.tenants if isinstance(event, TenantProfileUpdated) else self.sessions), key
