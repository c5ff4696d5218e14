"""The chaos rehearsal (`surge loadtest --chaos`): faults injected on a seeded schedule while the load runs.

- ``schedule``: which fault happens when, drawn from the seed alone (the same seed gives the same schedule);
- ``workers``: engine worker processes sharing one port, each killed with SIGKILL and started again;
- ``postgres``: the embedded PostgreSQL stopped in ``immediate`` mode (a crash) and started again;
- ``processor``: outage and slowdown windows through the simulated processor's live control file;
- ``webhooks``: the simulated processor's events delivered to the engine duplicated, delayed and reordered;
- ``money``: refunds (full, partial, concurrent with one key) and disputes against donations made during the run;
- ``runner``: executes the schedule and keeps the fault log that the report draws and the tests read.
"""
