"""Reconciliation: the ledger against a processor's own record of its balance, subject by subject.

Both sides are grouped into *subjects*, the things both of them are about:

=====================  ==========================================  ================================================
subject                processor balance transactions              ledger entries (by reference)
=====================  ==========================================  ================================================
``charge:<donation>``  the charge (amount, fee)                    ``don_…`` and ``fee:don_…``
``refund:<donation>``  every refund of that donation               the refunds (``re_…``, metadata donation)
``dispute:<id>``       withdrawal (with its fee), reinstatement    ``dispute:``, ``dispute-fee:``, ``dispute-won:``
``payout:<id>``        the payout                                  ``payout:<processor>:<id>``
=====================  ==========================================  ================================================

On the ledger side only postings on the processor's clearing and fee accounts count: an entry's *clearing* is the
signed sum of its clearing postings (money the processor holds for us), its *fee* the sum on the fee accounts. The
processor's gross for a subject is the sum of its transactions' amounts; the ledger's is clearing + fee. Worked
example, a $50.00 donation with a $1.75 fee whose fee entry was never posted::

    processor  txn_1  charge  amount 5000  fee 175              gross 5000, fee 175
    ledger     don_1  clearing +5000 (contributions -5000)      gross 5000 + 0 = 5000, fee 0
                                                                → fee_mismatch, processor 175, ledger 0

The proposed adjustment makes the ledger's clearing and fee for the subject equal to the processor's: clearing
moves by Δgross - Δfee, the fee account by Δfee and the subject's own account (contributions, refunds, disputes or
bank) by -Δgross — here clearing -175, fees +175. Adjustments carry the subject in their metadata
(``reconciliation_subject``) and take effect at the subject's time, so the next run counts them and finds the
subject matched. An amount mismatch corrects only the gross and a fee mismatch only the fee (a subject wrong in both
has one exception of each). Resolving works the correction out again against the ledger as it is then (the
proposal is what the run saw), and is refused when the exception was resolved, a later run cleared it, or the
ledger now agrees. Runs and resolutions of one processor are serialised by an advisory lock, from the ledger read
to the record, so a run never records a view older than the books a resolution or an earlier run left.

Windows: subjects belong to the run whose window holds their *anchor*, the earliest processor time (the ledger's
when the processor has nothing). Both sides are read over the window widened by a slack on each side, so that a
ledger entry posted moments after its charge is still paired with it at the window's edges.

Payouts of a processor that pays out its whole balance (the simulated one) are also checked against the clearing
account: the ledger's clearing balance just before the payout (ledger entries placed at their processor time) must
equal the amount paid out. A charge the ledger missed weeks ago, outside any window read since, still shows here.

The package, by job: ``model`` (windows, items, discrepancies, totals), ``subjects`` (what each side is about),
``matching`` (pairing both sides, pure), ``adjustments`` (proposing and posting the adjusting entry), ``ledger_side``
(reading the ledger's items), ``history`` (recording runs and exceptions, and reading them back).
"""
