"""A pure model of Surge's books over a donation's whole money lifecycle (no I/O), for the lifecycle state machine.

Two copies of the same books are kept by ``tests/integration/test_money_lifecycle.py``:

- ``truth``: every processor fact booked the moment it happens, in the order it happens (the charge, its fee,
  each refund, a dispute's withdrawal, fee and outcome, payouts). Once every event has been delivered and every
  refund call has returned, Surge's ledger must equal these "in-order books", whatever the delivery order was.
- ``expected``: what Surge should show *now*, given which processor events it has been told about and which of its
  own calls returned. An event that cannot apply yet (a refund or dispute of a donation not yet settled, a dispute
  closed before it was opened) is parked and applied exactly once when it can (issue 10, defect 3): at once when a
  webhook unblocks it (the charge's event, the dispute's opening — the same donation), by the next sweep
  (``sweep``) when the pipeline's settlement did.

Surge's own refunds (issue 10, defects 1 and 2) are reserved before the processor is called (``refunding``); the
call's answer or the refund's event — whichever comes first, matched by Surge's refund id — makes them succeeded
(booked), failed (the reservation released) or pending (still reserved, until an event says how it ended). An
event for a refund Surge made never books it a second time; a refund made outside Surge is booked once.

Accounts follow ``engine.chart_of_accounts`` (debits positive): a charge debits processor clearing and credits the
campaign's contributions; fees, refunds, disputes and payouts take money out of clearing; a won dispute puts the
withdrawal back. Fees are booked in the currency the processor reports them in (issue 10, defect 4).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from engine import chart_of_accounts

OPEN_STATUSES = frozenset({"charging", "pending"})


class ModelError(Exception):
    """The model itself reached a state the money rules forbid: a bug in the model or in a rule's generator."""


@dataclass
class Dispute:
    id: str
    amount: int
    fee: int
    fee_currency: str
    status: str = "open"  # at the processor: open, won, lost


@dataclass
class Refund:
    """A refund made through Surge, as Surge should show it."""

    id: str
    gift: str
    amount: int
    status: str = "refunding"  # refunding, pending, succeeded, failed

    @property
    def final(self) -> bool:
        return self.status in ("succeeded", "failed")


@dataclass
class Gift:
    """One donation, as the processor and as Surge see it."""

    id: str
    campaign: str
    donor_key: str
    amount: int
    currency: str
    reference: str  # the processor's charge (PaymentIntent) id
    processor_status: str  # succeeded, declined, pending — at the processor
    fee: int | None = None  # the processor's processing fee, once it charged
    fee_currency: str | None = None
    # Surge's side
    status: str = "charging"  # charging, pending, succeeded, declined
    fee_booked: bool = False
    fee_recorded: bool = False  # a late fee reported while the donation was still open: booked by its settlement
    refunded: int = 0
    reserved: int = 0
    disputed: int = 0
    dispute_state: str = "none"  # none, open, won, lost — as Surge booked it
    unnamed_open: int = 0  # booked from charge.refunded totals no known refund explained, not yet claimed
    # The processor's side
    processor_refunded: int = 0
    processor_pending: int = 0  # refunds the processor accepted for later (pending), not decided yet
    dispute: Dispute | None = None

    @property
    def refundable(self) -> int:
        """What Surge may still refund: the donations table's own rule."""
        return self.amount - self.refunded - self.reserved - self.disputed

    @property
    def processor_committed(self) -> int:
        """What the processor has refunded or is refunding (pending): no dispute can take it."""
        return self.processor_refunded + self.processor_pending

    @property
    def processor_refundable(self) -> int:
        """What the processor would still refund: nothing once disputed (Surge's generator keeps to that)."""
        if self.processor_status != "succeeded" or self.dispute is not None:
            return 0
        return self.amount - self.processor_refunded - self.processor_pending


@dataclass(frozen=True)
class Event:
    """A processor event as the model sees it (the machine also keeps the engine's ProcessorEvent for it)."""

    id: str
    kind: str  # charge_succeeded, charge_failed, refund, refund_echo, dispute_created, dispute_closed, payout
    gift: str | None = None
    amount: int = 0
    currency: str = ""
    fee: int | None = None
    fee_currency: str | None = None
    object_id: str | None = None
    surge_refund: str | None = None  # a refund Surge made itself (its id in the refund's metadata)
    status: str = "succeeded"  # a refund event's refund status: succeeded, pending, failed
    won: bool = False
    cumulative: int = 0  # refund_echo: the charge's refunded total at the processor when the event was sent


class Books:
    """Account code → signed balance for one processor and its campaigns."""

    def __init__(self, processor: str) -> None:
        self.processor = processor
        self.balances: Counter[str] = Counter()

    def move(self, debit: str, credit: str, amount: int) -> None:
        if amount <= 0:
            raise ModelError(f"a movement is positive, got {amount}")
        self.balances[debit] += amount
        self.balances[credit] -= amount

    def clearing(self, currency: str) -> str:
        return chart_of_accounts.clearing(self.processor, currency)

    def charge(self, gift: Gift) -> None:
        self.move(self.clearing(gift.currency), chart_of_accounts.contributions(gift.campaign), gift.amount)

    def fee(self, amount: int, currency: str) -> None:
        if amount:
            self.move(chart_of_accounts.fees(self.processor, currency), self.clearing(currency), amount)

    def refund(self, gift: Gift, amount: int) -> None:
        self.move(chart_of_accounts.refunds(gift.campaign), self.clearing(gift.currency), amount)

    def dispute_opened(self, gift: Gift, dispute: Dispute) -> None:
        self.move(chart_of_accounts.disputes(gift.campaign), self.clearing(gift.currency), dispute.amount)
        self.fee(dispute.fee, dispute.fee_currency)

    def dispute_won(self, gift: Gift, dispute: Dispute) -> None:
        self.move(self.clearing(gift.currency), chart_of_accounts.disputes(gift.campaign), dispute.amount)

    def payout(self, currency: str, amount: int) -> None:
        self.move(chart_of_accounts.bank(self.processor, currency), self.clearing(currency), amount)

    def nonzero(self) -> dict[str, int]:
        return {code: amount for code, amount in sorted(self.balances.items()) if amount}


@dataclass
class Aggregate:
    posted: int = 0
    held: int = 0


@dataclass
class SurgeModel:
    """What Surge's books, donations and donor aggregates should be now."""

    processor: str
    limit: int
    books: Books = field(init=False)
    truth: Books = field(init=False)
    gifts: dict[str, Gift] = field(default_factory=dict)
    aggregates: dict[tuple[str, str], Aggregate] = field(default_factory=dict)
    parked: list[Event] = field(default_factory=list)
    disputes: dict[str, Dispute] = field(default_factory=dict)  # processor dispute id → dispute
    refunds: dict[str, Refund] = field(default_factory=dict)  # Surge's refund id → refund

    def __post_init__(self) -> None:
        self.books = Books(self.processor)
        self.truth = Books(self.processor)

    # --- the donor's aggregate ----------------------------------------------------------------------------------

    def aggregate(self, gift: Gift) -> Aggregate:
        return self.aggregates.setdefault((gift.campaign, gift.donor_key), Aggregate())

    def room(self, campaign: str, donor_key: str) -> int:
        aggregate = self.aggregates.get((campaign, donor_key), Aggregate())
        return self.limit - aggregate.posted - aggregate.held

    def accept(self, gift: Gift) -> None:
        self.gifts[gift.id] = gift
        self.aggregate(gift).held += gift.amount

    def _remove_contribution(self, gift: Gift, amount: int) -> None:
        aggregate = self.aggregate(gift)
        if aggregate.posted < amount:
            raise ModelError(f"{gift.id}: removing {amount} from a posted aggregate of {aggregate.posted}")
        aggregate.posted -= amount

    # --- Surge's side ---------------------------------------------------------------------------------------------

    def settle(self, gift: Gift, succeeded: bool, fee: int | None, fee_currency: str | None) -> bool:
        """A final charge outcome reaches Surge (the charge call's answer or the charge event)."""
        if gift.status not in OPEN_STATUSES:
            return False
        aggregate = self.aggregate(gift)
        aggregate.held -= gift.amount
        if succeeded:
            gift.status = "succeeded"
            aggregate.posted += gift.amount
            self.books.charge(gift)
            if fee is None and gift.fee_recorded:
                fee, fee_currency = gift.fee, gift.fee_currency
            if fee:
                self.books.fee(fee, fee_currency or gift.currency)
                gift.fee_booked = True
        else:
            gift.status = "declined"
        return True

    def mark_pending(self, gift: Gift) -> None:
        if gift.status == "charging":
            gift.status = "pending"

    def reserve(self, gift: Gift, refund_id: str, amount: int) -> Refund:
        """A refund through Surge is recorded (``refunding``) with its amount reserved, before the processor call."""
        if not 0 < amount <= gift.refundable or gift.status != "succeeded":
            raise ModelError(f"{gift.id}: cannot reserve {amount}")
        gift.reserved += amount
        refund = self.refunds[refund_id] = Refund(refund_id, gift.id, amount)
        return refund

    def refund_state(self, refund: Refund, status: str) -> None:
        """What the processor said about Surge's refund (its call's answer or its event): a final refund stays as
        it is; pending keeps the reservation; succeeded books it; failed releases the reservation."""
        if refund.final:
            return
        if status == "pending":
            refund.status = "pending"
            return
        gift = self.gifts[refund.gift]
        gift.reserved -= refund.amount
        refund.status = status
        if status == "succeeded":
            gift.refunded += refund.amount
            self.books.refund(gift, refund.amount)
            self._remove_contribution(gift, refund.amount)
        elif status != "failed":
            raise ModelError(f"refund {refund.id}: unknown status {status}")

    # --- processor events, in whatever order they come --------------------------------------------------------------

    def applicable(self, event: Event) -> bool:
        """Whether ``event`` can apply now; the rest waits, parked."""
        if event.gift is None:
            return True
        gift = self.gifts[event.gift]
        if event.kind in ("charge_succeeded", "charge_failed", "fee"):
            return True  # charge events settle an open donation or bring a fee; nothing waits for them
        if gift.status in OPEN_STATUSES:
            return False  # everything else changes a charge that happened: it waits for the charge's outcome
        if event.kind == "refund":
            return (
                event.surge_refund is not None or gift.refundable + min(gift.unnamed_open, event.amount) >= event.amount
            )
        if event.kind == "refund_echo":
            return True
        if event.kind == "dispute_created":
            return gift.status == "succeeded"
        if event.kind == "dispute_closed":
            # A lost dispute takes the contribution out of the donor's aggregate: only once it was put in.
            return gift.dispute_state == "open" and (event.won or gift.status == "succeeded")
        return True  # charge events settle an open donation or bring a fee; nothing waits for them

    def receive(self, event: Event) -> None:
        """A webhook: applied now, or parked. One that changed its donation (settled it, moved money) applies at once
        the parked events of that donation whose wait it ended; the others wait for the next sweep."""
        if not self.applicable(event):
            self.parked.append(event)
            return
        if self.apply(event) and event.gift is not None:
            self.unpark(event.gift)

    def sweep(self) -> None:
        """The sweeper: every parked event whose wait is over is applied."""
        self.unpark(None)

    def unpark(self, gift: str | None) -> None:
        progress = True
        while progress:
            progress = False
            for event in list(self.parked):
                if (gift is None or event.gift == gift) and self.applicable(event):
                    self.parked.remove(event)
                    self.apply(event)
                    progress = True

    def apply(self, event: Event) -> bool:
        """Apply ``event``; whether it changed its donation (a charge event for a settled donation does not)."""
        if event.kind == "payout":
            self.books.payout(event.currency, event.amount)
            return True
        if event.gift is None:
            raise ModelError(f"event {event.id} names no donation")
        gift = self.gifts[event.gift]
        if event.kind in ("charge_succeeded", "charge_failed"):
            succeeded = event.kind == "charge_succeeded"
            settled = self.settle(gift, succeeded, event.fee, event.fee_currency)
            if not settled and succeeded and event.fee and not gift.fee_booked and gift.status == "succeeded":
                # A fee unknown when the charge answered, arriving late: booked now.
                self.books.fee(event.fee, event.fee_currency or gift.currency)
                gift.fee_booked = True
            return settled
        if event.kind == "refund":
            if event.surge_refund is None:  # made outside Surge (the processor's dashboard)
                if event.status == "succeeded":
                    # What a charge.refunded total booked for it already is claimed, only the rest is booked.
                    claimed = min(event.amount, gift.unnamed_open)
                    gift.unnamed_open -= claimed
                    self._book_elsewhere(gift, event.amount - claimed)
            else:  # Surge's own refund: the event settles it unless its call did already
                self.refund_state(self.refunds[event.surge_refund], event.status)
        elif event.kind == "fee":  # the processor reports a fee it did not know at charge time
            if gift.fee_booked or gift.fee_recorded or gift.status not in ("succeeded", *OPEN_STATUSES):
                return False
            if gift.status == "succeeded":
                self.books.fee(event.fee or 0, event.fee_currency or gift.currency)
                gift.fee_booked = True
            else:
                gift.fee_recorded = True
        elif event.kind == "refund_echo":
            # Stripe's charge.refunded names no refund: the processor's refunded total is the truth, so what no
            # refund Surge knows explains (an outside refund whose own event has not come yet) is booked at once.
            if gift.status == "succeeded":
                unexplained = min(event.cumulative - gift.refunded - gift.reserved, event.amount)
                if unexplained > 0 and self._book_elsewhere(gift, unexplained):
                    gift.unnamed_open += unexplained
        elif event.kind == "dispute_created":
            self.open_dispute(gift, event)
        elif event.kind == "dispute_closed":
            dispute = self.disputes[event.object_id or ""]
            if event.won:
                gift.disputed -= dispute.amount
                self.books.dispute_won(gift, dispute)
                gift.dispute_state = "won"
            else:
                self._remove_contribution(gift, dispute.amount)
                gift.dispute_state = "lost"
        return True

    def _book_elsewhere(self, gift: Gift, amount: int) -> bool:
        """A refund made outside Surge, refunded at once; one that exceeds what is left is not booked (logged)."""
        if amount <= 0 or amount > gift.refundable:
            return False
        gift.refunded += amount
        self.books.refund(gift, amount)
        self._remove_contribution(gift, amount)
        return True

    def open_dispute(self, gift: Gift, event: Event) -> None:
        dispute = self.disputes[event.object_id or ""]
        gift.disputed += dispute.amount
        self.books.dispute_opened(gift, dispute)
        gift.dispute_state = "open"

    # --- invariants of the model itself ---------------------------------------------------------------------------

    def check(self) -> None:
        for gift in self.gifts.values():
            if gift.refunded + gift.reserved + gift.disputed > gift.amount or min(gift.refunded, gift.reserved) < 0:
                raise ModelError(f"{gift.id}: refunded {gift.refunded} reserved {gift.reserved} of {gift.amount}")
            unfinished = sum(r.amount for r in self.refunds.values() if r.gift == gift.id and not r.final)
            if gift.reserved != unfinished:
                raise ModelError(f"{gift.id}: reserved {gift.reserved}, refunds not final {unfinished}")
        for key, aggregate in self.aggregates.items():
            if aggregate.posted < 0 or aggregate.held < 0 or aggregate.posted + aggregate.held > self.limit:
                raise ModelError(f"{key}: aggregate {aggregate}")
