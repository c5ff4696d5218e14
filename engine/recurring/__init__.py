"""Recurring gifts, saved payment methods and Quick Donate: plans, the scheduler, dunning, signed links."""
