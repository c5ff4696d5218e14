"""Finance reports: queries in, rows out — the same rows rendered as JSON (minor units) or CSV (decimal amounts).

- trial balance: every account's posted balance on its debit or credit side, now or as of a time;
- campaign days: per campaign and day (UTC), gross contributions, refunds, disputes, fees and net, from the ledger;
- donor aggregates: per campaign, election and donor, what counts toward the contribution limit;
- Schedule A: itemized receipts in the shape of FEC Form 3 Schedule A (line 11(a)(i), individuals) — every receipt
  of a donor whose election aggregate exceeds the itemization threshold, each with the aggregate through it.

Aggregates are net of refunds and disputed amounts, as the engine's limit aggregates are: a refunded contribution
is no longer a contribution. Fees are booked per processor; a fee belongs to a campaign through the donation its
entry names (metadata ``donation``).

The package: ``report`` (the Report value and its JSON and CSV renderings), then one module per report —
``trial_balance``, ``campaign_days``, ``donor_aggregates``, ``schedule_a`` — and ``donation_series`` (the
dashboard's per-minute chart).
"""
