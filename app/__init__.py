"""Rapport: a storefront for one expert's courses and e-books."""
