"""Pure decisions of the election loop: when a leader may still act, when to renew, whether
to campaign. No I/O, no clock of its own: times are monotonic seconds passed in."""

from __future__ import annotations

from dataclasses import dataclass

from runnerhub.ha.dcs import Handoff, LeaderRecord

# An epoch is the leader key's create revision in etcd, under the era of the etcd cluster
# that holds the key: a region promoted after a disaster starts a new era in its own etcd
# (`runnerhub dr promote`), so that each of its epochs is above every epoch the old
# region's etcd could ever have issued (its revisions stay below 2**40: a trillion writes).
ERA_BITS = 40


def era_epoch(era: int, revision: int) -> int:
    """The fencing epoch of a leadership won at etcd `revision` in `era`."""
    if era < 0 or not 0 <= revision < 1 << ERA_BITS:
        raise ValueError(f"no epoch for era {era}, revision {revision}")
    return era << ERA_BITS | revision


def era_of(epoch: int) -> int:
    return epoch >> ERA_BITS


def next_era(recorded_epoch: int | None, current_era: int) -> int:
    """The era a promoted region starts: above the era of the newest epoch its database
    holds (replicated from the old region) and above its own etcd's era so far."""
    recorded = era_of(recorded_epoch) if recorded_epoch is not None else 0
    return 1 + max(recorded, current_era)


@dataclass(frozen=True)
class LeasePolicy:
    ttl_s: float = 2.0
    renewals_per_ttl: int = 4
    safety_margin_s: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.safety_margin_s < self.ttl_s:
            raise ValueError("the safety margin must be between 0 and the lease TTL")

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / self.renewals_per_ttl

    def act_until(self, last_renewal_sent: float) -> float:
        """The lease lasts at least `ttl_s` from when its last renewal was *sent* (etcd can
        only have restarted the countdown later); stop `safety_margin_s` before that, so
        this node stops acting before the lease can expire anywhere else."""
        return last_renewal_sent + self.ttl_s - self.safety_margin_s

    def may_act(self, now: float, last_renewal_sent: float) -> bool:
        return now < self.act_until(last_renewal_sent)


@dataclass(frozen=True)
class CampaignDecision:
    campaign: bool
    delay_s: float = 0.0
    reason: str = ""


def decide_campaign(
    me: str,
    leader: LeaderRecord | None,
    draining: bool,
    handoff: Handoff | None,
    ttl_s: float,
    waited_for: int | None = None,
) -> CampaignDecision:
    """Should this node try for the leader key now? `waited_for` is the epoch of the
    handoff this node has already given way to once."""
    if draining:
        return CampaignDecision(False, reason="draining: not taking leadership")
    if leader is not None:
        return CampaignDecision(False, reason=f"{leader.node} leads (epoch {leader.epoch})")
    if (
        handoff is not None
        and handoff.target not in (None, me)
        and handoff.from_epoch != waited_for
    ):
        # A handoff to another node: give the target a head start, once per handoff (it
        # may be gone): after half a lease, look again and campaign if the key is free.
        return CampaignDecision(True, delay_s=ttl_s / 2, reason=f"handoff to {handoff.target}")
    return CampaignDecision(True, reason="no leader")


def should_step_down(me: str, epoch: int, handoff: Handoff | None) -> bool:
    """A handoff addressed to this leadership (its epoch) asks it to go, unless it names
    this node as the successor; a new leader is never asked by an old request."""
    return handoff is not None and handoff.from_epoch == epoch and handoff.target != me
