"""The embeddable donation page (``GET /donate/{campaign}``): server-rendered HTML (Jinja2, autoescaped), a small
script of its own (no framework, no build step), its stylesheet and the embedding script, all served by Surge itself
so the Content-Security-Policy can say ``script-src 'self'``.

Modules: ``render`` (the page's values from the campaign and the URL, the HTML, the CSP), ``page_keys`` (the form
key each campaign's page posts with), ``assets`` (the static files). The HTTP routes are ``engine.api.donor_page``.

The card never reaches Surge's donations API: the page tokenizes it in the browser — Stripe.js's Payment Element with
the campaign's publishable key, or the simulated processor's Stripe-shaped tokenizer — and posts only the ``pm_…``
to ``POST /v1/donations``, with an idempotency key made when the page was rendered.
"""
