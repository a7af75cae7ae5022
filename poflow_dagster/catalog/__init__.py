"""Catalog matching (issue 10): which variant of the merchant's Shopify catalog each PO line already is.

``normalize`` (match keys), ``match`` (the pure matcher), ``store`` (catalog, learned SKUs and matches in the
app database), ``sync`` (incremental catalog sync through an injected page fetcher), ``config`` (thresholds).
"""
